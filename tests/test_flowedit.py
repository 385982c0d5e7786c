"""FlowEdit (Kulikov et al., ICCV 2025) on the core, against the analytic Gaussian mixture.

The reference is a direct transcription of the paper's Algorithm 1 on the rectified-flow path: flow
times from diffusers' ``FlowMatchEulerDiscreteScheduler``, the velocity V = ε - x0 the model predicts
(recovered from the guidance's ε as x_t = (1 - t) x0 + t ε gives it), Euler steps (t_{i-1} - t_i) V.
On the VP path the same loop runs with the DDIM (eta = 0) step of ``DDIMScheduler``'s ᾱ in place of
the Euler step.
"""

from __future__ import annotations

import pytest
import torch
from analytic import CONFIGS, FLOW_CONFIG, SCHEDULER_CONFIG, GaussianMixtureModel

from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.flowedit_edit import flowedit_latents
from image_core.guidance import ClassifierFreeGuidance
from image_core.methods.flowedit import flowedit
from image_core.methods.sdedit import sdedit
from image_core.schedule import Schedule

REGION = slice(8, 24)  # of 48 coordinates: where classes A and B differ
STEPS = 20
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module", params=["flow", "vp"])
def world(request):
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path=request.param)
    return model, model.sample(0, len(SEEDS), seed=11)  # class A


def guidances(model, source="A", target="B", cfg_src=1.0, cfg_tar=1.0, rows=len(SEEDS)):
    prompts = LatentEditor(model, progress=False).prompts
    return prompts.guidance([source], "", [cfg_src], rows), prompts.guidance([target], "", [cfg_tar], rows)


def class_b_probability(model, x: torch.Tensor) -> torch.Tensor:
    """p(B | x) under the mixture with equal weights."""
    loglik = torch.stack([-0.5 * ((x - model.means[c]) ** 2 / model.var).sum(-1) for c in (0, 1)], 1)
    return torch.softmax(loglik, 1)[:, 1]


# ------------------------------------------------------------------------------ the paper's algorithm


def draws(seeds):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return lambda shape: torch.stack([torch.randn(shape, generator=g) for g in gens]).double()


def paper_flowedit(v_src, v_tar, times, x_src, n_max, n_min, n_avg, seeds):
    """Algorithm 1: t_N > ... > t_0 = 0 (``times`` descending), steps i = n_max ... n_min + 1 from t_i to
    t_{i-1}; then plain Euler sampling of the target from n_min."""
    N = len(times) - 1
    t = {i: float(times[N - i]) for i in range(N + 1)}  # the paper's t_i
    noise = draws(seeds)
    z_fe = x_src.clone()
    for i in range(n_max, n_min, -1):
        v_delta = torch.zeros_like(x_src)
        for _ in range(n_avg):
            n = noise(x_src.shape[1:])
            z_src = (1 - t[i]) * x_src + t[i] * n
            z_tar = z_fe + z_src - x_src
            v_delta += (v_tar(z_tar, t[i]) - v_src(z_src, t[i])) / n_avg
        z_fe = z_fe + (t[i - 1] - t[i]) * v_delta
    if n_min == 0:
        return z_fe
    n = noise(x_src.shape[1:])
    z_src = (1 - t[n_min]) * x_src + t[n_min] * n
    z = z_fe + z_src - x_src
    for i in range(n_min, 0, -1):
        z = z + (t[i - 1] - t[i]) * v_tar(z, t[i])
    return z


def velocity(guidance):
    """The flow velocity V = ε - x0 at (z, t): from x_t = (1 - t) x0 + t ε, V = (ε - z) / (1 - t)."""

    def v(z, t):
        eps = guidance(z, torch.full((z.shape[0],), t, dtype=torch.float64))
        return (eps - z) / (1 - t)

    return v


def ddim_flowedit(g_src, g_tar, timesteps, abar, abar_final, x_src, n_max, n_min, n_avg, seeds):
    """The same loop on the VP path, the Euler step replaced by the DDIM (eta = 0) step's displacement
    sqrt(ᾱ_s) x0 + sqrt(1 - ᾱ_s) ε - z."""
    N = len(timesteps)
    noise = draws(seeds)

    def at(k):
        return float(abar[timesteps[k]]), (float(abar[timesteps[k + 1]]) if k + 1 < N else float(abar_final))

    def displacement(g, z, k):
        a_t, a_s = at(k)
        eps = g(z, timesteps[k].repeat(z.shape[0]))
        x0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        return a_s**0.5 * x0 + (1 - a_s) ** 0.5 * eps - z

    z_fe = x_src.clone()
    for k in range(N - n_max, N - n_min):
        a_t = at(k)[0]
        delta = torch.zeros_like(x_src)
        for _ in range(n_avg):
            z_src = a_t**0.5 * x_src + (1 - a_t) ** 0.5 * noise(x_src.shape[1:])
            z_tar = z_fe + z_src - x_src
            delta += (displacement(g_tar, z_tar, k) - displacement(g_src, z_src, k)) / n_avg
        z_fe = z_fe + delta
    if n_min == 0:
        return z_fe
    a_t = at(N - n_min)[0]
    z = z_fe + a_t**0.5 * x_src + (1 - a_t) ** 0.5 * noise(x_src.shape[1:]) - x_src
    for k in range(N - n_min, N):
        z = z + displacement(g_tar, z, k)
    return z


@pytest.mark.parametrize("n_max, n_min, n_avg, cfgs", [(14, 0, 1, (1.0, 1.0)), (14, 4, 3, (2.0, 5.0)), (19, 0, 2, (1.0, 4.0)), (6, 6, 1, (1.0, 3.0))])
def test_flow_path_is_the_papers_algorithm(n_max, n_min, n_avg, cfgs):
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="flow")
    x_src = model.sample(0, len(SEEDS), seed=11)
    g_src, g_tar = guidances(model, cfg_src=cfgs[0], cfg_tar=cfgs[1])
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_CONFIG)
    scheduler.set_timesteps(STEPS)
    expected = paper_flowedit(velocity(g_src), velocity(g_tar), scheduler.sigmas.double(), x_src, n_max, n_min, n_avg, SEEDS)
    schedule = Schedule.from_config(FLOW_CONFIG, STEPS)
    got = flowedit(g_src, g_tar, schedule, x_src, n_max, n_min, n_avg, SEEDS, progress=False)
    assert torch.allclose(got, expected, rtol=0, atol=1e-10 * expected.abs().max().item())
    assert not torch.allclose(got, x_src, atol=1e-3)


@pytest.mark.parametrize("n_max, n_min, n_avg, cfgs", [(14, 0, 2, (1.0, 3.0)), (12, 5, 1, (2.0, 5.0))])
def test_vp_path_is_the_ddim_ode_analogue(n_max, n_min, n_avg, cfgs):
    from diffusers import DDIMScheduler

    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="vp")
    x_src = model.sample(0, len(SEEDS), seed=11)
    g_src, g_tar = guidances(model, cfg_src=cfgs[0], cfg_tar=cfgs[1])
    scheduler = DDIMScheduler.from_config(SCHEDULER_CONFIG)
    scheduler.set_timesteps(STEPS)
    abar = scheduler.alphas_cumprod.double()
    expected = ddim_flowedit(g_src, g_tar, scheduler.timesteps, abar, scheduler.final_alpha_cumprod, x_src, n_max, n_min, n_avg, SEEDS)
    got = flowedit(g_src, g_tar, Schedule.from_config(SCHEDULER_CONFIG, STEPS), x_src, n_max, n_min, n_avg, SEEDS, progress=False)
    assert torch.allclose(got, expected, rtol=0, atol=1e-10 * expected.abs().max().item())


# ------------------------------------------------------------------------------ what it does


def test_moves_to_the_target_and_keeps_the_rest(world):
    """A -> B: the class-B posterior goes from ~0 to ~1; coordinates where the classes agree stay
    (closer to the input than SDEdit's at the same strength, which redraws them)."""
    model, x0 = world
    schedule = Schedule.from_config(CONFIGS[model.path], STEPS)
    g_src, g_tar = guidances(model, cfg_src=1.0, cfg_tar=2.0)
    edited = flowedit(g_src, g_tar, schedule, x0, 14, 0, 1, SEEDS, progress=False)
    noised = sdedit(g_tar, schedule, x0, 14, 1.0, SEEDS, None, False)
    assert class_b_probability(model, x0).max() < 1e-6
    assert class_b_probability(model, edited).min() > 0.99
    outside = torch.ones(48, dtype=torch.bool)
    outside[REGION] = False
    kept, redrawn = (edited - x0)[:, outside].norm(dim=1), (noised - x0)[:, outside].norm(dim=1)
    assert (kept < 0.1 * redrawn).all()
    assert ((edited - x0).norm(dim=1) < (noised - x0).norm(dim=1)).all()


@pytest.mark.parametrize("path", ["flow", "vp", "edm"])
def test_the_source_as_target_returns_the_input_exactly(path):
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path=path)
    x0 = model.sample(0, 2, seed=3)
    g_src, g_tar = guidances(model, "A", "A", 3.5, 3.5, rows=2)
    out = flowedit(g_src, g_tar, Schedule.from_config(CONFIGS[path], STEPS), x0, 15, 0, 2, [4, 5], progress=False)
    assert torch.equal(out, x0)


def test_one_denoiser_call_per_step(world):
    """Source and target rows, both guidance branches and all draws: one call per FlowEdit step; one
    per sampling step."""
    model, x0 = world
    schedule = Schedule.from_config(CONFIGS[model.path], STEPS)
    B = len(SEEDS)
    for cfgs, branches in (((3.0, 5.0), 4), ((1.0, 5.0), 3), ((1.0, 1.0), 2)):
        g_src, g_tar = guidances(model, cfg_src=cfgs[0], cfg_tar=cfgs[1])
        model.calls = model.rows = 0
        flowedit(g_src, g_tar, schedule, x0, 12, 0, 3, SEEDS, progress=False)
        assert (model.calls, model.rows) == (12, 12 * branches * 3 * B)
        model.calls = 0
        flowedit(g_src, g_tar, schedule, x0, 12, 5, 3, SEEDS, progress=False)
        assert model.calls == 12


def test_any_guidance_gives_the_same_edit(world):
    """A guidance that is not classifier-free guidance is called per side and per draw: same result."""
    model, x0 = world
    schedule = Schedule.from_config(CONFIGS[model.path], STEPS)
    g_src, g_tar = guidances(model, cfg_src=2.0, cfg_tar=4.0)
    joint = flowedit(g_src, g_tar, schedule, x0, 12, 3, 2, SEEDS, progress=False)
    model.calls = 0
    apart = flowedit(lambda x, t, j=0: g_src(x, t, j), lambda x, t, j=0: g_tar(x, t, j), schedule, x0, 12, 3, 2, SEEDS, progress=False)
    assert model.calls == 9 * 2 * 2 + 3
    assert torch.allclose(joint, apart, rtol=0, atol=1e-12)


def test_seeds_give_independent_rows(world):
    model, x0 = world
    schedule = Schedule.from_config(CONFIGS[model.path], STEPS)
    g_src, g_tar = guidances(model, cfg_tar=3.0)
    out = flowedit(g_src, g_tar, schedule, x0, 12, 3, 2, SEEDS, progress=False)
    g1, t1 = guidances(model, cfg_tar=3.0, rows=1)
    alone = flowedit(g1, t1, schedule, x0[1:2], 12, 3, 2, SEEDS[1:2], progress=False)
    assert torch.allclose(out[1:2], alone, rtol=0, atol=1e-12)
    again = flowedit(g_src, g_tar, schedule, x0, 12, 3, 2, SEEDS, progress=False)
    assert torch.equal(out, again)
    other = flowedit(g_src, g_tar, schedule, x0, 12, 3, 2, [7, 8, 9], progress=False)
    assert not torch.allclose(out, other)


@pytest.mark.parametrize(
    "n_max, n_min, n_avg, match",
    [(21, 0, 1, "n_max must be"), (0, 0, 1, "n_max must be"), (5, 6, 1, "n_min must be"), (5, -1, 1, "n_min must be"),
     (5, 0, 0, "n_avg must be"), (5, 0, 101, "n_avg must be"), (5.0, 0, 1, "n_max must be"), (5, 0, True, "n_avg must be")],
)  # fmt: skip
def test_bad_settings_are_refused_in_one_line(n_max, n_min, n_avg, match):
    model = GaussianMixtureModel(dim=8, path="vp")
    x0 = model.sample(0, 1, seed=0)
    g_src, g_tar = guidances(model, rows=1)
    with pytest.raises(InputError, match=match) as error:
        flowedit(g_src, g_tar, Schedule.from_config(SCHEDULER_CONFIG, STEPS), x0, n_max, n_min, n_avg, [0], progress=False)
    assert "\n" not in str(error.value)


def test_the_pure_noise_step_is_refused_on_the_flow_path():
    model = GaussianMixtureModel(dim=8, path="flow")
    with pytest.raises(InputError, match="pure noise") as error:
        flowedit_latents(LatentEditor(model, progress=False), model.sample(0, 1, seed=0), "A", "B", STEPS, n_max=STEPS)
    assert "\n" not in str(error.value)


def test_the_loop_reads_nothing_from_the_device():
    """On the "meta" device any read of a value raises (see test_fast_path)."""
    meta = torch.device("meta")

    def model(x_t, t, cond):
        return 0.1 * x_t + cond["e"].to(x_t.dtype)

    def g(scale):
        return ClassifierFreeGuidance(model, {"e": torch.empty(2, 8, device=meta)}, {"e": torch.empty(2, 8, device=meta)}, scale)

    x0 = torch.empty(2, 8, device=meta, dtype=torch.float64)
    schedule = Schedule.from_config(SCHEDULER_CONFIG, STEPS)
    assert flowedit(g(3.0), g(torch.tensor([5.0, 7.0], dtype=torch.float64)), schedule, x0, 12, 4, 2, [0, 1], progress=False).device == meta


# ------------------------------------------------------------------------------ the editor level


def test_editor_level_rows_are_targets_times_seeds():
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="flow")
    editor = LatentEditor(model, progress=False)
    x0 = model.sample(0, 1, seed=11)
    out = flowedit_latents(editor, x0, "A", ["B", "A"], STEPS, n_max=14, n_min=2, n_avg=1, cfg_src=2.0, cfg_tar=[4.0, 2.0], seed=[0, 1])
    assert out.shape == (4, 48)
    g_src, g_tar = guidances(model, "A", "B", 2.0, 4.0, rows=2)
    direct = flowedit(g_src, g_tar, Schedule.from_config(FLOW_CONFIG, STEPS), x0.expand(2, 48), 14, 2, 1, [0, 1], progress=False)
    assert torch.allclose(out[:2], direct, rtol=0, atol=1e-12)
    assert (class_b_probability(model, out[:2]) > 0.99).all() and (class_b_probability(model, out[2:]) < 1e-3).all()
    same = flowedit_latents(editor, x0, "A", "A", STEPS, n_max=14, n_min=0, cfg_src=2.0, cfg_tar=2.0, seed=[0, 1])
    assert torch.equal(same, x0.expand(2, 48))
    with pytest.raises(InputError, match="guidance scales"):
        flowedit_latents(editor, x0, "A", "B", STEPS, cfg_tar=-1.0)
    with pytest.raises(InputError, match="steps"):
        flowedit_latents(editor, x0, "A", "B", 0)


@pytest.fixture(scope="module")
def tiny():
    import numpy as np
    from PIL import Image

    from image_core import ImageEditor

    editor = ImageEditor.from_pretrained("tiny", device="cpu", progress=False)
    x = np.linspace(0, 1, 64)
    picture = Image.fromarray((np.stack([np.outer(x, x)] * 3, -1) * 255).astype(np.uint8))
    return editor, editor.codec.encode(editor.codec.read(picture))


def test_tiny_stable_diffusion(tiny):
    """Shapes, determinism by seed, and one UNet call per step for all rows."""
    editor, x0 = tiny
    calls = []
    handle = editor.model.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        out = flowedit_latents(editor, x0, "a photo", ["a dog", "a cat"], num_steps=8, n_max=5, n_min=1, n_avg=2, seed=[3, 4])
        assert len(calls) == 5
        calls.clear()
        flowedit_latents(editor, x0, "a photo", "a dog", num_steps=8, n_max=5, cfg_src=1.0, seed=3)
        assert len(calls) == 5
    finally:
        handle.remove()
    assert out.shape == (4, *x0.shape[1:]) and torch.isfinite(out).all()
    again = flowedit_latents(editor, x0, "a photo", ["a dog", "a cat"], num_steps=8, n_max=5, n_min=1, n_avg=2, seed=[3, 4])
    assert torch.equal(out, again)
    other = flowedit_latents(editor, x0, "a photo", "a dog", num_steps=8, n_max=5, n_min=1, n_avg=2, seed=5)
    assert not torch.allclose(out[:1], other)
    same = flowedit_latents(editor, x0, "a photo", "a photo", num_steps=8, n_max=5, cfg_src=3.5, cfg_tar=3.5, seed=3)
    assert torch.allclose(same, x0.to(same.dtype), rtol=0, atol=1e-6)  # exact where the UNet is batch-invariant


def test_targets_share_their_source_rows():
    """Target row r edits source row r mod B': the same edit as one source row per target, with the
    source evaluated once per source row."""
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="flow")
    x0 = model.sample(0, 2, seed=11)
    schedule = Schedule.from_config(FLOW_CONFIG, STEPS)
    prompts = LatentEditor(model, progress=False).prompts
    source = prompts.guidance(["A"], "", [2.0], 2)
    targets = prompts.guidance(["B", "A"], "", [4.0, 1.0], 2)  # rows B, B, A, A
    model.rows = 0
    shared = flowedit(source, targets, schedule, x0, 12, 3, 2, [0, 1], progress=False)
    assert model.rows == 9 * 2 * (2 * 2 + 4 * 2) + 3 * 4 * 2  # per draw: 2 source rows and 4 target rows, 2 branches each
    for i, (prompt, cfg) in enumerate((("B", 4.0), ("A", 1.0))):
        alone = flowedit(source, prompts.guidance([prompt], "", [cfg], 2), schedule, x0, 12, 3, 2, [0, 1], progress=False)
        assert torch.allclose(shared[2 * i : 2 * i + 2], alone, rtol=0, atol=1e-12)


def test_both_editors_offer_flowedit(tmp_path):
    """The editors' entry point: outputs of the input's kind, size and length, targets x seeds."""
    import numpy as np
    from PIL import Image

    from audio_edit import Audio, AudioEditor
    from image_core import ImageEditor

    images = ImageEditor.from_pretrained("tiny", device="cpu", progress=False)
    picture = Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8))
    out = images.flowedit(picture, ["a dog", "a fox"], "a cat", num_steps=8, n_max=5, seed=[0, 1])
    assert len(out) == 4 and all(image.size == (56, 40) for image in out)
    sounds = AudioEditor.from_pretrained("tiny", device="cpu", progress=False)
    clip = Audio((0.3 * np.sin(np.arange(16000) / 10.0))[None].astype(np.float32), 16000)
    waves = sounds.flowedit(clip, "a flute", "a piano", num_steps=8, n_max=5)
    assert len(waves) == 1 and waves[0].shape[-1] == 16000


def test_command_line_flowedit(tmp_path, capsys):
    """--method flowedit: --tstart is n_max; nothing inverted; refusals in one line, nothing written."""
    import json
    import re

    import numpy as np
    from PIL import Image

    from commands import run
    from image_core.stable_diffusion.cli import main

    picture = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)).save(picture)
    out = tmp_path / "edit.png"
    base = [str(picture), "--model", "tiny", "--source", "a cat", "--target", "a dog", "--steps", "8", "--tstart", "5", "--method", "flowedit"]
    code, _, err = run(main, [*base, "--n-min", "1", "--n-avg", "2", "--num-outputs", "2", "--out", str(out)], capsys)
    assert code == 0, err
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["edit_a-dog_s0.png", "edit_a-dog_s0.png.json", "edit_a-dog_s1.png", "in.png"]
    record = json.loads((tmp_path / "edit_a-dog_s0.png.json").read_text())["settings"]
    assert record["method"] == "flowedit" and record["flowedit"] == {"n_max": 5, "n_min": 1, "n_avg": 2}
    assert record["source_prompt"] == "a cat" and record["inversion_batch"] is None
    for extra, message in (
        (["--mask", "auto"], "inverts nothing.*--mask"), (["--add", "rain"], "inverts nothing"), (["--eta", "0.5"], "--eta"),
        (["--n-min", "9"], "--n-min must be between 0 and --tstart"), (["--n-avg", "0"], "--n-avg"),
    ):
        code, _, err = run(main, [*base, "--out", str(tmp_path / "x.png"), *extra], capsys)
        assert code == 2 and re.search(message, err) and len(err.strip().splitlines()) == 1, err
    code, _, err = run(main, [str(picture), "--model", "tiny", "--target", "a dog", "--n-avg", "3", "--out", str(tmp_path / "x.png")], capsys)
    assert code == 2 and "--n-avg goes with --method flowedit" in err
    assert not (tmp_path / "x.png").exists()

"""The inversion core against an analytic Gaussian-mixture denoiser (float64, exact answers)."""

import pytest
import torch
from analytic import GaussianMixtureModel
from diffusers import DDIMScheduler

from image_core.editing import LatentEditor
from image_core.errors import EditError, InputError, InversionMismatchError
from image_core.guidance import ClassifierFreeGuidance
from image_core.inversion import Inversion
from image_core.methods.ddpm import ddpm_edit, ddpm_invert, noised
from image_core.methods.sdedit import sdedit
from image_core.sampling import GaussianNoise, generators, posterior_mean, sample, sigma
from image_core.schedule import Schedule

SEEDS = list(range(8))


@pytest.fixture(scope="module")
def model():
    return GaussianMixtureModel()


@pytest.fixture(scope="module")
def x0(model):
    return model.sample(0, len(SEEDS), seed=123)  # (8, D) from class A


def editor(model):
    return LatentEditor(model, progress=False)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [1, 50, 100, 200, 999])
def test_schedule_matches_ddim(model, spacing, num_steps):
    config = {**model.scheduler_config, "timestep_spacing": spacing}
    schedule = Schedule.from_config(config, num_steps)
    ddim = DDIMScheduler.from_config(config)
    ddim.set_timesteps(num_steps)
    assert torch.equal(schedule.timesteps, ddim.timesteps)
    assert torch.allclose(schedule.alphas, ddim.alphas_cumprod[ddim.timesteps].double())
    assert schedule.alphas_prev[-1] == pytest.approx(float(ddim.final_alpha_cumprod))


def test_step_matches_ddim_scheduler_step(model):
    """Our reverse step with noise z equals DDIMScheduler.step(eta, variance_noise=z)."""
    schedule = Schedule.from_config(model.scheduler_config, 50)
    ddim = DDIMScheduler.from_config(model.scheduler_config)
    ddim.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(2, 16, generator=g, dtype=torch.float64) for _ in range(3))
    for k in (0, 20, 49):
        mu = posterior_mean(schedule, torch.full((2,), k), x, eps, 0.7)
        ours = mu + float(sigma(schedule, 0.7)[k]) * z
        ref = ddim.step(eps, int(schedule.timesteps[k]), x, eta=0.7, variance_noise=z).prev_sample
        assert torch.allclose(ours, ref.double(), atol=1e-6)  # the scheduler keeps ᾱ in float32


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("t_start", [1, 36, 64, 100])
@pytest.mark.parametrize("cfg_src", [1.0, 3.5])
def test_reconstruction_is_exact(model, x0, eta, t_start, cfg_src):
    inv = editor(model).invert_latent(x0, "A", 100, t_start, cfg_src, eta, SEEDS)
    rec = editor(model).reconstruct_latent(inv)
    assert ((rec - x0).norm() / x0.norm()).item() <= 1e-6
    assert inv.xts.shape == inv.zs.shape == (len(SEEDS), t_start, x0.shape[1])


def test_reconstruction_is_exact_when_final_alpha_is_one(model, x0):
    """σ is zero at the last step then: the residual x0 - μ is a term of its own, the last map zero."""
    config = {**model.scheduler_config, "set_alpha_to_one": True}
    schedule = Schedule.from_config(config, 50)
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["A"] * len(SEEDS)))
    xts, zs, residual = ddpm_invert(cfg, schedule, x0, 50, 1.0, SEEDS, progress=False)
    assert residual is not None and torch.equal(zs[:, -1], torch.zeros_like(x0))
    rec = ddpm_edit(cfg, schedule, xts[:, 0], zs, 1.0, residual, progress=False)
    assert ((rec - x0).norm() / x0.norm()).item() <= 1e-6
    assert ((ddpm_edit(cfg, schedule, xts[:, 0], zs, 1.0, None, progress=False) - x0).norm() / x0.norm()) > 1e-3


def test_no_residual_where_sigma_is_positive(model, x0):
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["A"] * 2))
    schedule = Schedule.from_config(model.scheduler_config, 50)  # final alpha = alphas_cumprod[0] < 1
    assert ddpm_invert(cfg, schedule, x0[:2], 20, 1.0, [0, 1], progress=False).residual is None


def test_fresh_gaussian_noise_adds_nothing_where_sigma_is_zero(model, x0):
    """With a final alpha of one the last step is deterministic: fresh noise must not enter it."""
    schedule = Schedule.from_config({**model.scheduler_config, "set_alpha_to_one": True}, 50)
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["A"] * 2))
    last = range(49, 50)
    noisy = sample(cfg, schedule, x0[:2], last, 1.0, GaussianNoise(generators([0, 1])), progress=False)
    assert torch.equal(noisy, sample(cfg, schedule, x0[:2], last, 1.0, None, progress=False))


def test_inversion_batches_bound_the_calls(model, x0):
    """64 steps of 8 seeds in batches of 128 rows: 4 calls; one evaluation per sample at cfg 1."""
    model.calls = model.rows = 0
    LatentEditor(model, inversion_batch_size=128, progress=False).invert_latent(x0, "A", 100, 64, 1.0, 1.0, SEEDS)
    assert (model.calls, model.rows) == (4, 512)
    model.calls = model.rows = 0
    LatentEditor(model, inversion_batch_size=128, progress=False).invert_latent(x0, "A", 100, 64, 3.5, 1.0, SEEDS)
    assert (model.calls, model.rows) == (4, 1024)  # conditional + unconditional halves in the same calls
    model.calls = model.rows = 0
    LatentEditor(model, inversion_batch_size=128, progress=False).invert_latent(x0, "", 100, 64, 3.5, 1.0, SEEDS)
    assert (model.calls, model.rows) == (4, 512)  # empty source prompt: guidance is a no-op


def test_noise_of_shorter_inversion_is_prefix(model, x0):
    short = editor(model).invert_latent(x0, "A", 100, 30, 1.0, 1.0, SEEDS)
    long = editor(model).invert_latent(x0, "A", 100, 60, 1.0, 1.0, SEEDS)
    assert torch.equal(short.xts, long.xts[:, 30:])
    assert torch.allclose(short.zs, long.zs[:, 30:])


def _distances(model, y):
    """Mean distance of rows of y to class B's and class A's mean."""
    return (y - model.means[1]).norm(dim=1).mean().item(), (y - model.means[0]).norm(dim=1).mean().item()


def _keep_error(model, x0, y):
    """How much of x0's within-class deviation from A's mean is lost in y's deviation from B's mean."""
    deviation = x0 - model.means[0]
    return (((y - model.means[1]) - deviation).norm(dim=1).mean() / deviation.norm(dim=1).mean()).item()


@pytest.mark.parametrize(
    "sign", [1.0, pytest.param(-1.0, marks=pytest.mark.xfail(strict=True, reason="guidance sign flipped"))]
)
@pytest.mark.parametrize("t_start", [36, 64, 80])
def test_edit_moves_to_target_and_keeps_structure(model, x0, sign, t_start):
    cfg_src, cfg_tar = 3.5, 15.0
    schedule = Schedule.from_config(model.scheduler_config, 100)
    enc = model.encode_prompts(["A", "B", ""])
    rows = torch.zeros(len(SEEDS), dtype=torch.long)
    source = ClassifierFreeGuidance(model.predict_eps, {"weights": enc["weights"][rows]}, {"weights": enc["weights"][rows + 2]}, cfg_src)
    target = ClassifierFreeGuidance(model.predict_eps, {"weights": enc["weights"][rows + 1]}, {"weights": enc["weights"][rows + 2]}, sign * cfg_tar)
    xts, zs, _ = ddpm_invert(source, schedule, x0, t_start, 1.0, SEEDS, progress=False)
    edited = ddpm_edit(target, schedule, xts[:, 0], zs, 1.0, progress=False)
    baseline = sdedit(target, schedule, x0, t_start, 1.0, SEEDS, progress=False)

    to_b, to_a = _distances(model, edited)
    assert to_b < to_a and to_b < _distances(model, x0)[0] / 2
    assert _keep_error(model, x0, edited) < 0.8 * _keep_error(model, x0, baseline)


def test_batch_of_targets_equals_single_runs(model, x0):
    ed = editor(model)
    inv = ed.invert_latent(x0[:2], "A", 100, 64, 3.5, 1.0, [3, 4])
    batch = ed.edit_latent(inv, ["B", "", "A"], [15.0, 7.5, 3.0])
    for i, (prompt, cfg) in enumerate([("B", 15.0), ("", 7.5), ("A", 3.0)]):
        single = ed.edit_latent(inv, prompt, cfg)
        assert torch.allclose(batch[2 * i : 2 * i + 2], single, rtol=1e-12, atol=1e-12)


def test_inversion_does_not_depend_on_batch(model, x0):
    ed = editor(model)
    together = ed.invert_latent(x0[:3], "A", 50, 40, 3.5, 1.0, [7, 8, 9])
    alone = ed.invert_latent(x0[1:2], "A", 50, 40, 3.5, 1.0, [8])
    assert torch.allclose(together.zs[1:2], alone.zs, atol=1e-12)


def test_seeds_give_different_noise_maps(model, x0):
    inv = editor(model).invert_latent(x0[:1], "A", 50, 40, 3.5, 1.0, [0, 1])
    assert inv.num_latents == 2 and not torch.allclose(inv.zs[0], inv.zs[1])
    edits = editor(model).edit_latent(inv, "B", 15.0)
    assert not torch.allclose(edits[0], edits[1])


def test_inversion_save_load_round_trip(model, x0, tmp_path):
    ed = editor(model)
    inv = ed.invert_latent(x0[:2], "A", 50, 20, 3.5, 0.5, [0, 1], meta={"size": [3, 4]})
    inv.save(tmp_path / "x.inv")
    back = Inversion.load(tmp_path / "x.inv")
    assert back.settings == inv.settings and back.meta == inv.meta
    for name in ("x0", "xts", "zs", "timesteps"):
        assert torch.equal(getattr(back, name), getattr(inv, name))
    assert torch.equal(ed.edit_latent(back, "B"), ed.edit_latent(inv, "B"))


def test_inversion_refuses_other_model_or_schedule(model, x0, tmp_path):
    inv = editor(model).invert_latent(x0[:1], "A", 50, 20)
    other = GaussianMixtureModel()
    other.fingerprint = lambda: "another model"
    with pytest.raises(InversionMismatchError, match="another model"):
        editor(other).edit_latent(inv, "B")
    other = GaussianMixtureModel()
    other.scheduler_config = {**model.scheduler_config, "steps_offset": 0}
    with pytest.raises(InversionMismatchError, match="timesteps"):
        editor(other).edit_latent(inv, "B")
    (tmp_path / "bad.inv").write_text("not an inversion")
    with pytest.raises(InputError, match="cannot read"):
        Inversion.load(tmp_path / "bad.inv")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_steps": 0}, "steps"),
        ({"t_start": 101}, "tstart"),
        ({"t_start": 0}, "tstart"),
        ({"cfg_src": -1.0}, "guidance"),
        ({"cfg_src": float("nan")}, "guidance"),
        ({"cfg_src": 101.0}, "guidance"),
        ({"eta": 0.0}, "eta"),
        ({"num_steps": 5000, "t_start": 10}, "steps"),
        ({"num_steps": 1000, "t_start": 10}, "between 1 and 999"),  # "leading" + offset 1: t would reach T
        ({"seed": -1}, "seeds"),
        ({"seed": [0, 2**63]}, "seeds"),
        ({"seed": [0.5]}, "seeds"),
        ({"seed": 1.5}, "seeds"),
    ],
)
def test_bad_settings_are_refused(model, x0, kwargs, message):
    args = {"source_prompt": "A", "num_steps": 100, "t_start": 64, "cfg_src": 3.5, "eta": 1.0, **kwargs}
    with pytest.raises(InputError, match=message):
        editor(model).invert_latent(x0[:1], **args)


def test_bad_edit_settings_are_refused(model, x0):
    inv = editor(model).invert_latent(x0[:1], "A", 20, 10)
    with pytest.raises(InputError, match="target"):
        editor(model).edit_latent(inv, [])
    with pytest.raises(InputError, match="guidance"):
        editor(model).edit_latent(inv, "B", -2.0)


def test_inversion_that_cannot_fit_in_memory_is_refused(model, x0, monkeypatch):
    from image_core import adapters

    maps = 2 * 8 * 64 * x0.shape[1] * 8  # x_t and z_t of 8 seeds, 64 steps, float64
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": maps - 1)
    with pytest.raises(InputError, match="lower tstart"):
        editor(model).invert_latent(x0, "A", 100, 64, 3.5, 1.0, SEEDS)
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": maps)
    assert editor(model).invert_latent(x0, "A", 100, 64, 3.5, 1.0, SEEDS).num_latents == 8


def test_available_memory_is_read_on_this_machine():
    from image_core.adapters import available_memory

    free = available_memory("cpu")
    assert free is None or free > 2**20


def test_diverged_edit_is_an_error_not_a_result(model, x0, monkeypatch):
    inv = editor(model).invert_latent(x0[:1], "A", 20, 10)
    monkeypatch.setattr(model, "predict_eps", lambda x_t, t, cond: torch.full_like(x_t, float("inf")))
    with pytest.raises(EditError, match="lower guidance scale than 12.0"):
        editor(model).edit_latent(inv, "B", 12.0)


def test_guidance_scales_follow_the_model_output_to_its_device():
    """Conditions (and their scales) are built on the CPU; the model may answer on a GPU. The meta
    device stands in for one: a CPU tensor in the arithmetic would raise."""
    model = lambda x_t, t, cond: torch.empty(x_t.shape, device="meta")  # noqa: E731
    cfg = ClassifierFreeGuidance(model, torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([3.0, 7.5]))
    assert cfg(torch.zeros(2, 4), torch.tensor([10, 10])).device.type == "meta"


def test_sdedit_without_noise_is_deterministic_ddim(model, x0):
    """At eta = 0 every σ is zero: SDEdit must add no noise after noising x0, i.e. run plain DDIM."""
    schedule = Schedule.from_config(model.scheduler_config, 50)
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["B"] * 2))
    edited = sdedit(cfg, schedule, x0[:2], 30, 0.0, [0, 1], progress=False)
    start = schedule.last(30).start
    x_t = noised(schedule, x0[:2], range(start, start + 1), [0, 1])[:, 0]
    ddim = sample(cfg, schedule, x_t, schedule.last(30), 0.0, None, progress=False)
    assert torch.allclose(edited, ddim, atol=1e-12)


def test_tampered_inversion_files_are_input_errors(model, x0, tmp_path):
    import json
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    inv = editor(model).invert_latent(x0[:1], "A", 20, 10)
    inv.save(tmp_path / "good.inv")
    tensors = load_file(tmp_path / "good.inv")
    settings = json.loads(json.dumps(asdict(inv.settings)))
    base = {"format": "ddpm-inversion/1", "meta": "{}"}
    cases = {
        "no seeds": ({**base, "settings": json.dumps({k: v for k, v in settings.items() if k != "seeds"})}, tensors),
        "unknown setting": ({**base, "settings": json.dumps({**settings, "colour": "red"})}, tensors),
        "settings not a mapping": ({**base, "settings": "[1, 2]"}, tensors),
        "x0 of another shape": ({**base, "settings": json.dumps(settings)}, {**tensors, "x0": torch.zeros(1, 7)}),
    }
    for name, (metadata, content) in cases.items():
        save_file(content, tmp_path / "bad.inv", metadata)
        with pytest.raises(InputError, match="inversion file"):
            Inversion.load(tmp_path / "bad.inv")


def test_sdedit_rows_with_consecutive_seeds_are_independent():
    """All of a row's noise comes from its own generator: the first z of the row with seed s is not
    the x_t noise of the row with seed s + 1 (it was, when z came from seed + 1), and a row equals
    itself edited alone."""
    model = GaussianMixtureModel(dim=4096)
    x0 = model.sample(0, 3, seed=5)
    schedule = Schedule.from_config(model.scheduler_config, 50)
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["B"] * 3))
    a = float(schedule.alphas[schedule.last(20).start])
    seen = {}

    def record(step):
        if step.j == 0:
            seen["x_noise"] = (step.x_t - a**0.5 * x0[: step.x_t.shape[0]]) / (1 - a) ** 0.5
            seen["z"] = step.noise / step.sigma
        return step.x_s

    together = sdedit(cfg, schedule, x0, 20, 1.0, [0, 1, 2], record, False)
    x_noise, z = seen["x_noise"], seen["z"]
    for r in range(2):
        corr = torch.nn.functional.cosine_similarity(z[r], x_noise[r + 1], dim=0).abs().item()
        assert corr < 0.1
    alone = sdedit(cfg.take(torch.tensor([1])), schedule, x0[1:2], 20, 1.0, [1], progress=False)
    assert torch.allclose(together[1:2], alone, atol=1e-12)


def test_step_callback_sees_the_step_and_can_replace_it(model, x0):
    """A callback returning x_s changes nothing; ``x_s_for`` re-derives ε, so moving x0_hat by d moves
    x_s by (sqrt(ᾱ_s) - sqrt(1 - ᾱ_s - σ²) sqrt(ᾱ_t / (1 - ᾱ_t))) d, and the run continues from it."""
    ed = editor(model)
    inv = ed.invert_latent(x0[:2], "A", 50, 20, 3.5, 1.0, [0, 1])
    plain = ed.edit_latent(inv, "B")
    steps = []
    same = ed.edit_latent(inv, "B", callback=lambda step: steps.append(step) or step.x_s)
    assert torch.equal(same, plain) and [s.j for s in steps] == list(range(20))
    d = torch.randn(x0[:2].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def gain(step):
        return step.a_s**0.5 - (1 - step.a_s - step.sigma**2) ** 0.5 * (step.a_t / (1 - step.a_t)) ** 0.5

    for step in (steps[5], steps[19]):
        assert torch.allclose(step.x_s_for(step.x0_hat), step.x_s, atol=1e-12)
        assert torch.allclose(step.x_s_for(step.x0_hat + d) - step.x_s, gain(step) * d, atol=1e-10)
    drifted = ed.edit_latent(inv, "B", callback=lambda s: s.x_s_for(s.x0_hat + d) if s.j == 19 else s.x_s)
    assert torch.allclose(drifted - plain, gain(steps[19]) * d, atol=1e-10)  # what the run returns


def test_per_step_conditions(model, x0):
    """Guidance sees the run's step: the same guidance every step equals the plain one, and a
    guidance that switches its condition at a step changes the edit."""
    schedule = Schedule.from_config(model.scheduler_config, 50)
    cfg = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["B"] * 2), model.encode_prompts([""] * 2), 7.5)
    xts, zs, _ = ddpm_invert(cfg, schedule, x0[:2], 20, 1.0, [0, 1], progress=False)
    plain = ddpm_edit(cfg, schedule, xts[:, 0], zs, progress=False)
    per_step = ddpm_edit(lambda x, t, j: cfg(x, t, j), schedule, xts[:, 0], zs, progress=False)
    assert torch.equal(plain, per_step)
    other = ClassifierFreeGuidance(model.predict_eps, model.encode_prompts(["A"] * 2))
    switched = ddpm_edit(lambda x, t, j: (cfg if j < 10 else other)(x, t, j), schedule, xts[:, 0], zs, progress=False)
    assert not torch.allclose(switched, plain)


@pytest.mark.parametrize("alpha_to_one", [False, True])
def test_format_1_files_still_load_and_reconstruct(x0, tmp_path, alpha_to_one):
    """Files of the first format kept a residual (where σ is zero) in the last noise map."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    model = GaussianMixtureModel()
    model.scheduler_config = {**model.scheduler_config, "set_alpha_to_one": alpha_to_one}
    inv = editor(model).invert_latent(x0[:2], "A", 50, 20, 3.5, 1.0, [0, 1], meta={"k": 1})
    assert (inv.residual is not None) == alpha_to_one
    zs = inv.zs.clone()
    if alpha_to_one:
        zs[:, -1] = inv.residual
    tensors = {"x0": inv.x0, "xts": inv.xts, "zs": zs, "timesteps": inv.timesteps}
    metadata = {"format": "ddpm-inversion/1", "settings": json.dumps(asdict(inv.settings)), "meta": '{"k": 1}'}
    save_file(tensors, tmp_path / "old.inv", metadata)
    old = Inversion.load(tmp_path / "old.inv")
    rec = editor(model).reconstruct_latent(old)
    assert ((rec - x0[:2]).norm() / x0[:2].norm()).item() <= 1e-6
    assert torch.equal(editor(model).edit_latent(old, "B"), editor(model).edit_latent(inv, "B"))
    old.save(tmp_path / "again.inv")  # an unconverted format-1 value keeps its format
    assert torch.equal(editor(model).reconstruct_latent(Inversion.load(tmp_path / "again.inv")), rec)


def test_residual_round_trips_through_files(x0, tmp_path):
    model = GaussianMixtureModel()
    model.scheduler_config = {**model.scheduler_config, "set_alpha_to_one": True}
    inv = editor(model).invert_latent(x0[:2], "A", 50, 20, 3.5, 1.0, [0, 1])
    inv.save(tmp_path / "x.inv")
    back = Inversion.load(tmp_path / "x.inv")
    assert torch.equal(back.residual, inv.residual)

"""ACE-Step 1.5 as a frontend: the tiny random-weight model, its denoiser against diffusers'
pipeline pieces, exact DDPM inversion on the rectified-flow path, edits at the input's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sounds import noisy_tone, relative

from audio_edit.ace_step import ACE_STEP_ID, AceStepModel, is_ace_step
from audio_edit.ace_step_editor import AceStepEditor
from audio_edit.audio_io import Audio
from audio_edit.editor import AudioEditor
from image_core.schedule import Schedule

RATE = 48000


@pytest.fixture(scope="module")
def model() -> AceStepModel:
    return AceStepModel.from_pretrained("tiny-acestep")


@pytest.fixture(scope="module")
def editor(model) -> AceStepEditor:
    return AceStepEditor(model, progress=False)


def clip(seconds: float = 0.3, rate: int = RATE, channels: int = 2, seed: int = 0) -> Audio:
    return noisy_tone(seconds, rate, channels, seed)


rel = relative


def test_tiny_model_round_trips_through_from_pretrained(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert is_ace_step(str(tmp_path)) and is_ace_step(ACE_STEP_ID) and is_ace_step("tiny-acestep")
    assert not is_ace_step("tiny-sao") and not is_ace_step("stabilityai/stable-audio-open-1.0")
    assert is_ace_step("ACE-Step/acestep-v15-xl-base-diffusers") and not is_ace_step("ACE-Step/ACE-Step-v1-3.5B")
    from audio_edit.ace_step_editor import defaults_for_name

    assert defaults_for_name("ACE-Step/acestep-v15-xl-base-diffusers").cfg_tar == 7.0  # base: guided
    assert defaults_for_name("ACE-Step/acestep-v15-xl-turbo-diffusers").cfg_tar == 1.0  # turbo: guidance distilled
    loaded = AceStepModel.from_pretrained(str(tmp_path))
    assert loaded.fingerprint() == model.fingerprint()
    assert Schedule.from_config(loaded.scheduler_config, 8).path == "flow"
    assert (loaded.sample_rate, loaded.audio_channels, loaded.hop_length) == (48000, 2, 1920)
    x = torch.randn(2, model.latent_channels, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.9, 0.2], dtype=torch.float64)
    cond = model.encode_prompts(["warm analog synth", ""])
    assert torch.equal(loaded.encode_prompts(["warm analog synth", ""])["text"], cond["text"])
    assert rel(loaded.predict_eps(x, t, cond), model.predict_eps(x, t, cond)) < 1e-6  # same weights, float32 rounding
    editor = AudioEditor.from_pretrained(str(tmp_path), device="cpu", dtype="float32", progress=False)
    assert isinstance(editor, AceStepEditor)


def test_the_adapter_is_the_pipelines_denoiser(model):
    """ε from the diffusers pipeline's own pieces (prompt encoding, silence timbre and context,
    chunk mask, learned null condition broadcast over the sequence) and the DiT's velocity u at the
    flow time t: ε = x_t + (1 - t) u."""
    pipe = model.pipeline()
    frames, seconds = 7, 7 * model.hop_length / RATE
    model.duration = seconds
    text, text_mask, lyric, lyric_mask = pipe.encode_prompt(["warm analog synth"], [""], "cpu", audio_duration=seconds)
    timbre = pipe.condition_encoder.silence_latent[:, : int(np.ceil(30 * pipe.latents_per_second))]
    states, _ = pipe.condition_encoder(text, text_mask, lyric, lyric_mask, timbre, torch.arange(1))
    src, length = pipe.prepare_src_latents("cpu", torch.float32, 1, latent_length=frames)
    chunk = pipe._build_chunk_mask("text2music", length, 1, "cpu", torch.float32, model.latent_channels)
    context = torch.cat([src, chunk], dim=-1)
    null = pipe.condition_encoder.null_condition_emb.expand_as(states)
    cond = model.encode_prompts(["warm analog synth", ""])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, model.latent_channels, frames, generator=g, dtype=torch.float64)
    for t in (0.95, 0.5, 0.1):
        for row, reference_states in ((0, states), (1, null)):
            with torch.no_grad():
                u = pipe.transformer(x.float().transpose(1, 2), torch.tensor([t]), torch.tensor([t]), reference_states, context, return_dict=False)[0]
            reference = x + (1 - t) * u.transpose(1, 2).double()
            ours = model.predict_eps(x, torch.tensor([t], dtype=torch.float64), {k: v[row : row + 1] for k, v in cond.items()})
            assert rel(ours, reference) < 1e-5, (t, row)


def test_prompts_in_a_batch_are_their_own_rows(model):
    x = torch.randn(3, model.latent_channels, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.full((3,), 0.6, dtype=torch.float64)
    together = model.predict_eps(x, t, model.encode_prompts(["jazz piano", "", "a very long description of rain"]))
    for row, prompt in enumerate(["jazz piano", "", "a very long description of rain"]):
        alone = model.predict_eps(x[row : row + 1], t[:1], model.encode_prompts([prompt]))
        assert rel(together[row : row + 1], alone) < 1e-5


def test_ddpm_inversion_reconstructs_exactly(model, editor):
    audio = clip(channels=2)
    inv = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=1.0, seed=[0, 1])
    assert inv.zs is not None and torch.isfinite(inv.zs).all()
    assert rel(editor.reconstruct_latent(inv), inv.x0) <= 1e-4
    one_call = AceStepEditor(model, progress=False, inversion_batch_size=1)
    inv3 = one_call.invert(audio, "a tone", num_steps=8, t_start=7, cfg_src=3.0)
    assert rel(one_call.reconstruct_latent(inv3), inv3.x0) <= 1e-10


def test_edits_come_back_in_the_input_format(model, editor):
    audio = clip(seconds=0.25, rate=22050, channels=1, seed=3)
    inv = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=1.0)
    waves = editor.edit(inv, ["jazz piano", "rain"], 3.0)
    assert [w.shape for w in waves] == [(2, audio.num_frames)] * 2 and all(np.isfinite(w).all() for w in waves)
    native = editor.reconstruct(inv, "native")
    assert native[0].shape == (2, int(np.ceil(audio.num_frames * RATE / 22050)))
    flowed = editor.flowedit(audio, "jazz piano", "a tone", num_steps=6, n_max=4, cfg_src=1.0, cfg_tar=2.0)
    assert len(flowed) == 1 and flowed[0].shape == (2, audio.num_frames) and np.isfinite(flowed[0]).all()


def test_sdedit_and_ddim_run(editor):
    audio = clip(channels=2, seed=4)
    waves = editor.sdedit(audio, "jazz piano", num_steps=8, t_start=5, cfg_tar=1.0, seed=[0, 1])
    assert len(waves) == 2 and waves[0].shape == (2, audio.num_frames) and np.isfinite(waves[0]).all()
    inv = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=1.0, method="ddim")
    assert inv.zs is None and torch.isfinite(editor.reconstruct_latent(inv)).all()


def test_defaults_follow_the_pipeline(editor):
    d = editor.codec.defaults
    assert (d.num_steps, d.cfg_tar) == (8, 1.0) and editor.model.is_turbo  # the turbo checkpoint: no guidance


def test_the_command_line_edits_with_tiny_acestep(tmp_path, capsys):
    import soundfile as sf
    from commands import run

    from audio_edit.cli import main

    audio = clip(seconds=0.2, rate=44100, channels=1)
    sf.write(tmp_path / "in.wav", audio.samples.T, audio.sample_rate)
    code, _, err = run(main, [str(tmp_path / "in.wav"), "--model", "tiny-acestep", "--target", "jazz piano", "--steps", "6",
                              "--tstart", "3", "--out", str(tmp_path / "out.wav")], capsys)  # fmt: skip
    assert code == 0, err
    wave, rate = sf.read(tmp_path / "out.wav")
    assert rate == 44100 and wave.shape == (audio.num_frames, 2)


def test_the_command_line_uses_the_models_defaults_unless_given(tmp_path, capsys):
    """Without --steps, --tstart, --cfg-src and --cfg-tar the record shows the editor's defaults (turbo:
    8 steps, the last 6 edited, guidance 1 and 1); options given win."""
    import json

    import soundfile as sf
    from commands import run

    from audio_edit.cli import main

    audio = clip(seconds=0.1, rate=44100, channels=1)
    sf.write(tmp_path / "in.wav", audio.samples.T, audio.sample_rate)
    given = ["--steps", "6", "--tstart", "4", "--cfg-src", "2", "--cfg-tar", "3"]
    for name, extra, expected in (("plain", [], (8, 6, 1.0, 1.0)), ("given", given, (6, 4, 2.0, 3.0))):
        out = tmp_path / f"{name}.wav"
        code, _, err = run(main, [str(tmp_path / "in.wav"), "--model", "tiny-acestep", "--target", "jazz piano", "--out", str(out), *extra], capsys)
        assert code == 0, err
        settings = json.loads(out.with_name(out.name + ".json").read_text())["settings"]
        assert (settings["num_steps"], settings["t_start"], settings["cfg_src"], settings["cfg_tar"]) == expected


def test_defaults_are_known_from_the_name_before_loading(model, tmp_path):
    import json

    from audio_edit.ace_step_editor import defaults_for, defaults_for_name

    assert defaults_for_name(ACE_STEP_ID) == defaults_for_name("tiny-acestep") == defaults_for(model)
    model.save_pretrained(tmp_path)
    assert defaults_for_name(str(tmp_path)).cfg_tar == 1.0  # the tiny model's config says turbo
    config_path = tmp_path / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["is_turbo"], config["model_version"] = False, "base"
    config_path.write_text(json.dumps(config))
    d = defaults_for_name(str(tmp_path))
    assert (d.num_steps, d.t_start, d.cfg_src, d.cfg_tar) == (8, 6, 1.0, 7.0)


def test_concepts_masks_and_components_run_on_ace_step(editor):
    """LEDITS concepts, DiffEdit's mask and time-range masks (the edit equals the input's latents
    outside them), and posterior principal components on ACE-Step's latents (time on the last axis)."""
    from audio_edit import Concept

    audio = clip(seconds=0.3, channels=2, seed=5)
    inv = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=1.0)
    guided = editor.edit_latent(inv, None, 1.0, concepts=[Concept("drums", scale=5)])
    assert torch.isfinite(guided).all() and rel(guided, inv.x0) > 1e-4
    waves = editor.edit(inv, "jazz piano", 2.0, concepts=[Concept("drums", scale=5)])
    assert waves[0].shape == (2, audio.num_frames) and np.isfinite(waves[0]).all()
    frames = inv.x0.shape[-1]
    region = editor.region_mask(inv, seconds=(0.0, 0.1))
    auto = editor.mask(inv, "jazz piano", draws=2)
    for mask in (region, auto):
        assert mask.shape == (1, 1, frames) and set(mask.unique().tolist()) <= {0.0, 1.0}
    outside = region[0, 0] == 0
    assert outside.any() and not outside.all()
    masked = editor.edit_latent(inv, "jazz piano", 3.0, mask=region)
    assert torch.equal(masked[..., outside], inv.x0[..., outside]) and rel(masked, inv.x0) > 1e-4
    pcs = editor.principal_components(inv, n=2, step=2, max_iterations=3)
    moved = editor.edit_pc_latent(inv, pcs, 1, [0.0, 2.0])
    assert rel(moved[0], editor.reconstruct_latent(inv)[0]) < 1e-5 and rel(moved[1], inv.x0) > 1e-4  # amount 0: the reconstruction
    pc_waves = editor.edit_pc(inv, pcs, pc=1, amount=2)
    assert pc_waves[0].shape == (2, audio.num_frames) and np.isfinite(pc_waves[0]).all()


def test_null_text_inversion_runs_and_prompt_to_prompt_edits_it(editor):
    """Null-text inversion optimises the learned null condition (the unconditional branch); a P2P
    edit of it runs the conditional rows and the one-key unconditional rows in one DiT call."""
    audio = clip(seconds=0.2, channels=2, seed=6)
    pivot = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=5.0, method="null-text", inner_steps=0)
    null = editor.invert(audio, "a tone", num_steps=8, t_start=6, cfg_src=5.0, method="null-text", inner_steps=5)
    assert null.uncond is not None and set(null.uncond) == {"text", "mask"}
    assert null.uncond["text"].shape[:2] == (1, 6)  # one optimised null condition per edited step
    # the optimisation moves the guided reconstruction toward the input (the DDIM pivot's alone is further)
    assert rel(editor.reconstruct_latent(null), null.x0) < rel(editor.reconstruct_latent(pivot), pivot.x0)
    waves = editor.edit(null, "jazz piano", 5.0)
    assert waves[0].shape == (2, audio.num_frames) and np.isfinite(waves[0]).all()
    calls = []
    hook = editor.model.transformer.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        same = editor.edit_p2p(null, "a tone", cfg_tar=5.0, output_type="latent")  # the identity edit
    finally:
        hook.remove()
    assert calls == [4] * 6  # per edited step one call: source and target rows, each with its one-key null row
    assert rel(same, editor.reconstruct_latent(null)) < 1e-5
    swapped = editor.edit_p2p(null, "a bell", cfg_tar=5.0)
    assert swapped[0].shape == (2, audio.num_frames) and np.isfinite(swapped[0]).all()


def test_fewer_steps_alone_are_checked_against_the_models_tstart(tmp_path, capsys):
    """--steps 7 without --tstart: the model's tstart (6) applies before the arguments are checked."""
    import json

    import soundfile as sf

    from audio_edit.cli import main
    from commands import run

    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros((4800, 2), np.float32) + 0.1 * np.sin(np.arange(4800) / 7.0)[:, None], 48000)
    out = tmp_path / "e.wav"
    code, _, err = run(main, [str(clip), "--model", "tiny-acestep", "--target", "a flute", "--steps", "7", "--out", str(out)], capsys)
    assert code == 0, err
    settings = json.loads(out.with_name("e.wav.json").read_text())["settings"]
    assert (settings["num_steps"], settings["t_start"]) == (7, 6)


def test_an_inversion_is_edited_under_the_duration_and_lyrics_it_was_made_with():
    """The caption holds the clip's duration and the condition its lyrics: reading another clip or
    changing the lyrics before editing does not change how the inversion's source prompt encodes."""
    exact = AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=torch.float64), progress=False)
    exact.model.lyrics = "la la la"
    inv = exact.invert(clip(seconds=2.0, seed=7), "a tone", num_steps=8, t_start=6, cfg_src=3.0)
    assert inv.meta["lyrics"] == "la la la" and inv.meta["duration"] == pytest.approx(2.0)
    sung = exact.model.encode_prompts(["a tone"])["text"]
    exact.model.lyrics = ""
    assert exact.model.encode_prompts(["a tone"])["text"].shape != sung.shape  # the lyrics are part of the condition
    exact.codec.read(clip(seconds=1.0))  # another clip: another duration in the caption
    same = exact.edit(inv, "a tone", cfg_tar=3.0, output_type="latent")
    assert (exact.model.lyrics, exact.model.duration) == ("la la la", pytest.approx(2.0))
    assert rel(same, inv.x0) < 1e-10


def test_lyrics_on_the_command_line(tmp_path, capsys):
    """--lyrics TEXT or @FILE conditions ACE-Step (and is recorded); refused in one line for other
    models, with an inversion file (it has its own) and for an unreadable file."""
    import json

    import soundfile as sf
    from commands import run

    from audio_edit.cli import main

    audio = clip(seconds=0.2, channels=2)
    source = tmp_path / "in.wav"
    sf.write(source, audio.samples.T, audio.sample_rate)
    (tmp_path / "words.txt").write_text("la la la\nsing along\n", encoding="utf-8")
    base = [str(source), "--target", "a choir", "--source", "a tone", "--steps", "6", "--tstart", "3"]
    out = tmp_path / "sung.wav"
    code, _, err = run(main, [*base, "--model", "tiny-acestep", "--lyrics", f"@{tmp_path / 'words.txt'}", "--out", str(out),
                              "--save-inversion", str(tmp_path / "inv.safetensors")], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out.with_name(out.name + ".json").read_text())["settings"]["lyrics"] == "la la la\nsing along"
    refusals = {
        "conditions ACE-Step models, not tiny": [*base, "--model", "tiny", "--lyrics", "la"],
        "--lyrics": [*base, "--model", "tiny-acestep", "--lyrics", "la", "--inversion", str(tmp_path / "inv.safetensors")],
        "is not UTF-8 text": [*base, "--model", "tiny-acestep", "--lyrics", f"@{source}"],
        "lyrics condition the source description, and there is none": [*base[:2], *base[4:], "--model", "tiny-acestep", "--lyrics", "la"],
    }
    for message, argv in refusals.items():
        code, _, err = run(main, [*argv, "--out", str(tmp_path / "never.wav")], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "never.wav").exists()


def test_clips_longer_than_one_dit_call_run_on_windows():
    """A clip longer than ``max_frames`` (here a tiny model whose silence latent, and so its longest
    call, is 40 frames = 1.6 s) runs on overlapping windows, no DiT call longer than that: DDPM
    inversion still reconstructs exactly, and edits (a text edit, P2P) come back at the input's length."""
    from audio_edit.tiny_ace_step import build_tiny_ace_step

    components = build_tiny_ace_step()
    encoder = components["condition_encoder"]
    encoder.silence_latent = encoder.silence_latent[:, :40].clone()
    model = AceStepModel(components, dtype=torch.float64)
    editor = AceStepEditor(model, window_batch=1, progress=False)
    assert (model.max_frames, editor.window, editor.overlap) == (40, 35, 10)
    lengths = []
    model.transformer.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    audio = clip(seconds=4.0, seed=3)
    inv = editor.invert(audio, "a tone", num_steps=8, t_start=6)
    assert inv.x0.shape[-1] == 100 and max(lengths) <= 40
    assert rel(editor.reconstruct_latent(inv), inv.x0) < 1e-10
    wave = editor.edit(inv, "a bell")[0]
    swapped = editor.edit_p2p(inv, "a bell")[0]  # source and target rows of a window together
    assert wave.shape == swapped.shape == (2, audio.num_frames) and np.isfinite(swapped).all()


def test_targets_sung_with_new_lyrics_edit_the_words():
    """``Sung(caption, lyrics)``: a target with its own lyrics is encoded as the model encodes the
    caption with those lyrics; with the inversion's lyrics it is the reconstruction, with others an edit."""
    from audio_edit.ace_step import Sung

    exact = AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=torch.float64), progress=False)
    exact.model.lyrics = "la la la"
    inv = exact.invert(clip(seconds=2.0, seed=8), "pop song", num_steps=8, t_start=6)
    assert rel(exact.edit(inv, Sung("pop song", "la la la"), output_type="latent"), inv.x0) < 1e-12
    sung = exact.model.encode_prompts([Sung("pop song", "na na na")])["text"]
    exact.model.lyrics = "na na na"
    assert torch.equal(sung, exact.model.encode_prompts(["pop song"])["text"])
    new = exact.edit(inv, Sung("pop song", "na na na"), output_type="latent")
    assert exact.model.lyrics == "la la la"  # the edit runs under the inversion's lyrics; the target sings its own
    assert rel(new, inv.x0) > 1e-3
    assert Sung("a", "x") == Sung("a", "x") and Sung("a", "x") != Sung("a", "y") and Sung("a", "x") != "a"
    assert len({Sung("a", "x"), Sung("a", "y"), "a"}) == 3


def test_prompt_to_prompt_refines_a_lyrics_edit(monkeypatch):
    """A changed lyric token keeps its own attention, the unchanged ones read the source's."""
    from test_p2p import Recorder, conditional

    from audio_edit.ace_step import Sung

    exact = AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=torch.float64), progress=False)
    exact.model.lyrics = "la la la"
    inv = exact.invert(clip(seconds=2.0, seed=9), "pop song", num_steps=8, t_start=6)
    words = exact.model.attention_control().words
    source, target = words.ids("pop song"), words.ids(Sung("pop song", "la na la"))
    changed = [k for k, (a, b) in enumerate(zip(source, target)) if a != b]
    assert len(source) == len(target) and len(changed) == 1 and source[changed[0]] < -1  # one lyric token
    recorder = Recorder(monkeypatch)
    exact.edit_p2p(inv, Sung("pop song", "la na la"), mode="refine", cross_steps=1.0, self_steps=0.0, output_type="latent")
    others = [k for k in range(len(source)) if k not in changed]
    for layer, _, before, after, plan in recorder.seen:
        if layer.stream == "words":
            rows, own = conditional(after, plan), conditional(before, plan)
            assert torch.equal(rows[1][..., changed], own[1][..., changed])
            assert torch.equal(rows[1][..., others], rows[0][..., others])


def test_target_lyrics_on_the_command_line(tmp_path, capsys):
    import json

    import soundfile as sf
    from commands import run

    from audio_edit.cli import main

    audio = clip(seconds=0.2, channels=2)
    sf.write(tmp_path / "in.wav", audio.samples.T, audio.sample_rate)
    base = [str(tmp_path / "in.wav"), "--steps", "6", "--tstart", "3", "--lyrics", "la la la", "--source", "pop song"]
    waves = {}
    for words in ("la la la", "na na na"):  # the source's lyrics again, then new ones
        out = tmp_path / f"{words[:2]}.wav"
        code, _, err = run(main, [*base, "--model", "tiny-acestep", "--target", "pop song", "--target-lyrics", words, "--out", str(out)], capsys)
        assert code == 0, err
        settings = json.loads(out.with_name(out.name + ".json").read_text())["settings"]
        assert (settings["lyrics"], settings["target_lyrics"]) == ("la la la", words)
        waves[words] = sf.read(out)[0]
    assert not np.array_equal(waves["la la la"], waves["na na na"])  # the targets sing what they are given (runs are deterministic)
    for message, argv in {
        "give --target too": [*base, "--model", "tiny-acestep", "--target-lyrics", "na", "--add", "drums"],
        "--target-lyrics conditions ACE-Step models": [str(tmp_path / "in.wav"), "--model", "tiny", "--target", "x", "--target-lyrics", "na"],
    }.items():
        code, _, err = run(main, [*argv, "--out", str(tmp_path / "never.wav")], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "never.wav").exists()


def test_an_inversion_given_to_a_run_sets_its_lyrics_before_the_prompts_are_checked():
    """``run_request`` with an inversion: the P2P token check counts the source with the inversion's
    lyrics (not the model's leftovers), so a replace of lyrics of equal length runs; lyrics for a
    model that takes none are refused in one line."""
    from audio_edit.ace_step import Sung
    from image_core.errors import InputError
    from image_core.p2p import P2POptions
    from image_core.request import EditRequest
    from image_core.runner import run_request

    exact = AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=torch.float64), progress=False)
    exact.model.lyrics = "la la la"
    inv = exact.invert(clip(seconds=1.0, seed=10), "pop song", num_steps=8, t_start=6)
    exact.model.lyrics = ""  # left over from another run
    request = EditRequest(source="pop song", targets=(Sung("pop song", "na na na"),), steps=8, tstart=6, cfg_src=1.0,
                          cfg_tar=1.0, p2p=P2POptions("replace"), inversion_loaded=True)  # fmt: skip
    edited = run_request(exact, request, None, inv)
    assert edited.outputs[0].shape == (2, 48000) and exact.model.lyrics == "la la la"
    other = AudioEditor.from_pretrained("tiny", device="cpu", progress=False)
    with pytest.raises(InputError, match="only ACE-Step models are conditioned on lyrics"):
        run_request(other, EditRequest(targets=(Sung("a", "b"),), steps=4, tstart=2, cfg_src=1.0, cfg_tar=1.0), clip(rate=16000, channels=1))


def test_the_denoiser_reads_the_rows_condition_lengths_once_per_run(editor, monkeypatch):
    """The rows' valid condition keys are read from the device once per condition, not at every
    step (a run passes the same condition to each of its model calls)."""
    inv = editor.invert(clip(seconds=0.5, seed=11), "pop song", num_steps=8, t_start=6)
    reads = []
    tolist = torch.Tensor.tolist

    def counted(tensor, *args, **kwargs):
        reads.append(tensor.shape)
        return tolist(tensor, *args, **kwargs)

    calls = []
    hook = editor.model.transformer.register_forward_hook(lambda module, args, out: calls.append(1))
    monkeypatch.setattr(editor.model, "_keys_of", None)
    original = AceStepModel._valid_keys

    def watched(model, mask):
        monkeypatch.setattr(torch.Tensor, "tolist", counted)
        try:
            return original(model, mask)
        finally:
            monkeypatch.setattr(torch.Tensor, "tolist", tolist)

    monkeypatch.setattr(AceStepModel, "_valid_keys", watched)
    try:
        editor.edit(inv, "jazz piano", cfg_tar=3.0, output_type="latent")
    finally:
        hook.remove()
    # 6 steps, each two DiT calls (the prompt's rows and the one-key null rows), one read of the lengths
    assert len(calls) == 12 and len(reads) == 1

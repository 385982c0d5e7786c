"""Stable Audio Open on a tiny random-weight model built from the diffusers classes: loading through
``from_pretrained``, the adapter against diffusers' own pipeline pieces, 44.1 kHz stereo in and out,
and the methods (DDPM text edit on SAO's DPM-Solver++ SDE sampler, DDIM, SDEdit, masks by time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sounds import noisy_tone, relative

from audio_edit import AudioEditor
from audio_edit.audio_io import Audio
from audio_edit.stable_audio import StableAudioModel, is_stable_audio
from audio_edit.stable_audio_editor import StableAudioEditor, to_stereo
from image_core.errors import InputError
from image_core.schedule import Schedule

RATE = 44100


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained("tiny-sao")


def clip(seconds: float = 0.05, rate: int = RATE, channels: int = 2, seed: int = 0) -> Audio:
    return noisy_tone(seconds, rate, channels, seed)


rel = relative


def test_tiny_sao_round_trips_through_from_pretrained(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert is_stable_audio(str(tmp_path)) and is_stable_audio("stabilityai/stable-audio-open-1.0")
    loaded = StableAudioModel.from_pretrained(str(tmp_path))
    assert loaded.fingerprint() == model.fingerprint()
    assert Schedule.from_config(loaded.scheduler_config, 10).path == "edm"
    x = torch.randn(2, model.latent_channels, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([80.0, 0.5], dtype=torch.float64)
    cond = model.encode_prompts(["warm analog synth", ""])
    assert torch.equal(loaded.predict_eps(x, t, loaded.encode_prompts(["warm analog synth", ""])), model.predict_eps(x, t, cond))
    editor = AudioEditor.from_pretrained(str(tmp_path), device="cpu", dtype="float32", progress=False)
    assert isinstance(editor, StableAudioEditor)


def test_the_adapter_is_the_pipelines_denoiser(model):
    """Our ε at the path's x_t gives the x0 that diffusers' pipeline pieces give: its prompt and
    duration encodings, the all-zero unconditional states, ``scale_model_input`` (x_edm · c_in), the
    DiT at ``precondition_noise(σ)``, and ``precondition_outputs`` (v -> x0)."""
    pytest.importorskip("torchsde")
    from diffusers import CosineDPMSolverMultistepScheduler, StableAudioPipeline
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    scheduler = CosineDPMSolverMultistepScheduler.from_config(model.scheduler_config)
    pipe = StableAudioPipeline(model.vae, model.text_encoder, model.projection_model, model.tokenizer, model.transformer, scheduler)
    prompt_embeds = pipe.encode_prompt(["warm analog synth"], "cpu", False)
    frames = 12
    seconds = frames * model.hop_length / RATE
    start, end = pipe.encode_duration(0.0, seconds, "cpu", False, 1)
    cond = model.encode_prompts(["warm analog synth", ""])
    assert torch.allclose(cond["text"][:1], prompt_embeds, atol=1e-6)
    assert torch.equal(cond["text"][1], torch.zeros_like(cond["text"][1])) and cond["keep"].tolist() == [1.0, 0.0]
    g = torch.Generator().manual_seed(1)
    x_edm = torch.randn(1, model.latent_channels, frames, generator=g) * 3
    for sigma in (0.3, 2.0, 40.0, 500.0):
        states = torch.cat([prompt_embeds, start, end], dim=1)
        rotary = get_1d_rotary_pos_embed(pipe.rotary_embed_dim, frames + 1, use_real=True, repeat_interleave_real=False)
        t = scheduler.precondition_noise(torch.tensor(sigma)).reshape(1)  # as the pipeline passes t.unsqueeze(0)
        with torch.no_grad():
            v = model.transformer(
                scheduler.precondition_inputs(x_edm, sigma), t, encoder_hidden_states=states,
                global_hidden_states=torch.cat([start, end], dim=2), rotary_embedding=rotary, return_dict=False,
            )[0]  # fmt: skip
            reference = scheduler.precondition_outputs(x_edm, v, sigma).double()
            alpha, s = 1 / math.sqrt(1 + sigma**2), sigma / math.sqrt(1 + sigma**2)
            x_t = x_edm.double() * alpha
            eps = model.predict_eps(x_t, torch.tensor([sigma], dtype=torch.float64), {k: v[:1] for k, v in cond.items()})
            ours = (x_t - s * eps) / alpha
        assert rel(ours, reference) < 1e-5, sigma


def test_stereo_in_and_out(model):
    editor = StableAudioEditor(model, progress=False)
    assert np.array_equal(to_stereo(np.ones((1, 5), np.float32)), np.ones((2, 5), np.float32))
    stereo = clip(channels=2)
    source = editor.codec.read(stereo)
    assert source.data.shape == (2, stereo.num_frames) and np.array_equal(source.data, stereo.samples)  # kept
    mono16 = clip(rate=16000, channels=1)
    source = editor.codec.read(mono16)
    assert source.data.shape == (2, math.ceil(mono16.num_frames * RATE / 16000))
    assert np.array_equal(source.data[0], source.data[1])  # duplicated
    inv = editor.invert(mono16, "a tone", num_steps=6, t_start=4, cfg_src=1.0)
    out = editor.reconstruct(inv)
    assert out[0].shape == (2, mono16.num_frames)  # stereo at the input's rate and length
    native = editor.reconstruct(inv, "native")
    assert native[0].shape == (2, source.data.shape[1])
    longer = clip(seconds=model.max_frames * model.hop_length / RATE + 0.01, channels=1)  # over one window
    assert editor.codec.read(longer).data.shape == (2, longer.num_frames)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ddpm_edit_on_the_sde_sampler_reconstructs_exactly(dtype):
    """Latents and noise maps are float64: the sampler retraces the inverted x_t, so the DiT sees the
    same inputs again. With its calls shaped as in the edit (one x_t per call) reconstruction is exact
    to float64 rounding, here from σ_max under guidance; with batched inversion calls the bound is
    the kernels' batch-size-dependent rounding only."""
    model = StableAudioModel.from_pretrained("tiny-sao", dtype=dtype)
    editor = StableAudioEditor(model, progress=False)
    audio = clip(channels=2)
    inv = editor.invert(audio, "a tone", num_steps=20, t_start=15, cfg_src=1.0, seed=[0, 1])
    assert inv.zs is not None and torch.isfinite(inv.zs).all()
    assert rel(editor.reconstruct_latent(inv), inv.x0) < 1e-4
    one_call = StableAudioEditor(model, progress=False, inversion_batch_size=1)
    inv3 = one_call.invert(audio, "a tone", num_steps=20, t_start=20, cfg_src=3.0)
    assert rel(one_call.reconstruct_latent(inv3), inv3.x0) < 1e-10
    edited = editor.edit_latent(inv, ["jazz piano", "rain"], 12.0)
    assert edited.shape == (4, *inv.x0.shape[1:]) and torch.isfinite(edited).all()
    assert rel(edited[:2], inv.x0) > 1e-3
    mask = editor.region_mask(inv, seconds=(0.0, 0.02))
    masked = editor.edit_latent(inv, "jazz piano", 12.0, mask=mask)
    outside = mask[0, 0] == 0
    assert outside.any() and torch.equal(masked[..., outside], inv.x0[..., outside])


def test_ddim_and_sdedit_run_on_sao(model):
    editor = StableAudioEditor(model, progress=False)
    audio = clip(channels=1, seed=3)
    inv = editor.invert(audio, "a tone", num_steps=30, t_start=20, cfg_src=1.0, method="ddim")
    assert inv.zs is None and rel(editor.reconstruct_latent(inv), inv.x0) < 0.5
    waves = editor.sdedit(audio, "jazz piano", num_steps=12, t_start=8, cfg_tar=7.0, seed=[0, 1])
    assert len(waves) == 2 and waves[0].shape == (2, audio.num_frames) and np.isfinite(waves[0]).all()


def test_frequency_bands_are_refused(model):
    editor = StableAudioEditor(model, progress=False)
    inv = editor.invert(clip(), "a tone", num_steps=6, t_start=4, cfg_src=1.0)
    with pytest.raises(InputError, match="no frequency axis"):
        editor.region_mask(inv, seconds=(0.0, 0.01), hz=(100.0, 200.0))


def test_concepts_masks_components_and_null_text_run_on_sao(model):
    """The other methods on SAO's latents (channels on axis 1, time on the last): LEDITS concepts,
    DiffEdit's mask (over time), posterior principal components and null-text inversion, whose
    optimised unconditional branch ("" = all-zero states) reconstructs better than DDIM's."""
    from image_core.methods.sega import Concept

    editor = StableAudioEditor(model, progress=False)
    audio = clip(channels=2, seed=5)
    inv = editor.invert(audio, "a tone", num_steps=10, t_start=8, cfg_src=1.0)
    guided = editor.edit_latent(inv, None, 1.0, concepts=[Concept("drums", 5.0)])
    assert torch.isfinite(guided).all() and rel(guided, inv.x0) > 1e-4
    mask = editor.mask(inv, "drums", draws=2)
    assert mask.shape == (1, 1, inv.x0.shape[-1]) and set(mask.unique().tolist()) <= {0.0, 1.0}
    pcs = editor.principal_components(inv, n=1, step=2, max_iterations=3)
    moved = editor.edit_pc_latent(inv, pcs, 1, [0.0, 2.0])
    assert rel(moved[0], editor.reconstruct_latent(inv)[0]) < 1e-5 and rel(moved[1], inv.x0) > 1e-4  # amount 0: the reconstruction
    ddim = editor.invert(audio, "a tone", num_steps=10, t_start=8, cfg_src=5.0, method="ddim")
    null = editor.invert(audio, "a tone", num_steps=10, t_start=8, cfg_src=5.0, method="null-text", inner_steps=5)
    assert null.uncond is not None and set(null.uncond) == {"text", "keep"}
    assert rel(editor.reconstruct_latent(null), null.x0) < rel(editor.reconstruct_latent(ddim), ddim.x0)


def test_the_command_line_edits_with_tiny_sao(tmp_path, capsys):
    import soundfile as sf
    from commands import run

    from audio_edit.cli import main

    audio = clip(seconds=0.08, rate=22050, channels=1)
    sf.write(tmp_path / "in.wav", audio.samples.T, audio.sample_rate)
    code, _, err = run(main, [str(tmp_path / "in.wav"), "--model", "tiny-sao", "--target", "jazz piano", "--steps", "8",
                              "--tstart", "6", "--cfg-src", "1", "--out", str(tmp_path / "out.wav")], capsys)  # fmt: skip
    assert code == 0, err
    wave, rate = sf.read(tmp_path / "out.wav")
    assert rate == 22050 and wave.shape == (audio.num_frames, 2)  # stereo at the input's rate and length


def window_clip(model: StableAudioModel, windows: float, seed: int = 0) -> Audio:
    """A stereo clip ``windows`` times the model's window long (0.19 s a window for tiny-sao)."""
    return clip(seconds=windows * model.max_frames * model.hop_length / RATE, channels=2, seed=seed)


def test_a_clip_longer_than_the_window_runs_on_overlapping_windows(model):
    """2.1 windows: three DiT windows of at most the training length per step (their seconds_total
    the window's length), the VAE window by window; reconstruction stays exact, edits come back
    stereo at the input's length, and the fingerprint holds the overlap."""
    from image_core.errors import InversionMismatchError

    editor = StableAudioEditor(model, progress=False)
    calls = []
    inner = editor.denoiser.model
    editor.denoiser.model = lambda x, t, cond: calls.append(x.shape[-1]) or inner(x, t, cond)
    audio = window_clip(model, 2.1)
    inv = editor.invert(audio, "a tone", num_steps=10, t_start=6, cfg_src=1.0, seed=[0, 1])
    frames = inv.x0.shape[-1]
    assert frames == math.ceil(audio.num_frames / model.hop_length) > model.max_frames
    assert calls and max(calls) <= model.max_frames and len(set(calls)) == 1  # windows of one length
    assert rel(editor.reconstruct_latent(inv), inv.x0) <= 1e-4
    waves = editor.edit(inv, "jazz piano", 12.0)
    assert [w.shape for w in waves] == [(2, audio.num_frames)] * 2 and all(np.isfinite(w).all() for w in waves)
    other = StableAudioEditor(model, overlap=editor.overlap // 2, progress=False)
    assert other.fingerprint() != editor.fingerprint()
    with pytest.raises(InversionMismatchError):
        other.reconstruct_latent(inv)


def test_windowed_reconstruction_is_exact_with_one_row_per_call(model):
    """With every DiT call shaped as in the edit (one x_t, one window) reconstruction of a clip of
    several windows is exact to float64 rounding: the blend is a deterministic function of x_t."""
    editor = StableAudioEditor(model, progress=False, inversion_batch_size=1, window_batch=1)
    inv = editor.invert(window_clip(model, 1.6, seed=2), "a tone", num_steps=8, t_start=6, cfg_src=3.0)
    assert inv.x0.shape[-1] > model.max_frames
    assert rel(editor.reconstruct_latent(inv), inv.x0) <= 1e-10


def test_the_codec_runs_the_vae_on_windows(model):
    """Encoding and decoding a long clip window by window agree with the whole-clip VAE (the Oobleck
    VAE is convolutional) up to the blend of the overlaps; a clip of one window is the VAE's own."""
    editor = StableAudioEditor(model, progress=False)
    for windows, bound in ((0.9, 0.0), (2.5, 2e-3)):
        source = editor.codec.read(window_clip(model, windows, seed=4))
        wave = torch.nn.functional.pad(torch.from_numpy(source.data)[None], (0, -source.data.shape[1] % model.hop_length))
        latent = editor.codec.encode(source)
        assert latent.shape == (1, model.latent_channels, wave.shape[-1] // model.hop_length)
        assert rel(latent, model.encode_audio(wave)) <= bound
        assert rel(editor.codec.decode(latent), model.decode_latent(latent)) <= bound


def test_overlap_is_checked(model):
    with pytest.raises(InputError, match="overlap"):
        StableAudioEditor(model, overlap=model.max_frames)
    with pytest.raises(InputError, match="overlap"):
        StableAudioEditor(model, overlap=-1)


def test_a_clip_too_long_for_memory_is_refused_in_one_line(model, tmp_path, capsys, monkeypatch):
    """No length limit any more, but the free-memory checks still refuse a clip whose noise maps (or
    samples) would not fit, before the work starts (simulated with 512 KiB of free memory)."""
    import soundfile as sf
    from commands import run

    from audio_edit.cli import main
    from image_core import adapters

    editor = StableAudioEditor(model, progress=False)
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": 2**19)
    monkeypatch.setattr(editor.codec, "encode", lambda source: pytest.fail("the clip was encoded before the refusal"))
    with pytest.raises(InputError, match="lower tstart"):
        editor.invert(window_clip(model, 40.0), "a tone", num_steps=200, t_start=100)
    audio = window_clip(model, 40.0)
    sf.write(tmp_path / "long.wav", audio.samples.T, RATE)
    code, _, err = run(main, [str(tmp_path / "long.wav"), "--model", "tiny-sao", "--target", "jazz", "--steps", "8",
                              "--tstart", "6", "--out", str(tmp_path / "out.wav")], capsys)  # fmt: skip
    assert code == 2 and "MiB are free" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.wav").exists()


def test_command_line_uses_source_guidance_one_for_stable_audio_open(tmp_path, capsys):
    """The audio paper's recommendation for this model, unless --cfg-src is given."""
    import json

    import soundfile as sf

    from audio_edit.cli import main
    from commands import run

    clip = tmp_path / "clip.wav"
    rate = 44100
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(0.15 * rate)) / rate)).astype(np.float32), rate)
    for extra, expected in (([], 1.0), (["--cfg-src", "3"], 3.0)):
        out = tmp_path / f"edit{expected:g}.wav"
        code, _, err = run(main, [str(clip), "--model", "tiny-sao", "--target", "a flute", "--steps", "6", "--tstart", "3", "--out", str(out), *extra], capsys)
        assert code == 0, err
        assert json.loads(out.with_name(out.name + ".json").read_text())["settings"]["cfg_src"] == expected


def test_command_line_uses_the_models_defaults_unless_given(tmp_path, capsys):
    """Without --steps, --tstart, --cfg-src and --cfg-tar the record shows the editor's defaults
    (200 / 100 / 1 / 12), not AudioLDM's; options given win."""
    import json

    import soundfile as sf

    from audio_edit.cli import main
    from audio_edit.stable_audio_editor import DEFAULTS
    from commands import run

    clip = tmp_path / "clip.wav"
    rate = 44100
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(0.05 * rate)) / rate)).astype(np.float32), rate)
    given = ["--steps", "6", "--tstart", "4", "--cfg-src", "2", "--cfg-tar", "3"]
    plain = (DEFAULTS.num_steps, DEFAULTS.t_start, DEFAULTS.cfg_src, DEFAULTS.cfg_tar)
    assert plain == (200, 100, 1.0, 12.0)
    for name, extra, expected in (("plain", [], plain), ("given", given, (6, 4, 2.0, 3.0))):
        out = tmp_path / f"{name}.wav"
        code, _, err = run(main, [str(clip), "--model", "tiny-sao", "--target", "a flute", "--out", str(out), *extra], capsys)
        assert code == 0, err
        settings = json.loads(out.with_name(out.name + ".json").read_text())["settings"]
        assert (settings["num_steps"], settings["t_start"], settings["cfg_src"], settings["cfg_tar"]) == expected

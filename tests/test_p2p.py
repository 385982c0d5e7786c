"""Prompt-to-Prompt on inverted pictures and recordings (tiny random-weight SD and AudioLDM 2, CPU).

The references are P2P's definitions (Hertz et al., 2022, and its official code): replace sets a
target's cross-attention maps to the source's, reweight multiplies a token's map by its factor
(no renormalisation), refine reads each target token from the source token the global alignment
pairs it with (match +1, mismatch -1, gap 0) and keeps its own map for new tokens, the local blend
keeps the source row outside the mask.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from audio_edit import Audio, AudioEditor
from image_core import ImageEditor
from image_core.attention import layers
from image_core.errors import InputError
from image_core.methods import p2p as algorithm
from image_core.methods.p2p import AttentionControl, align, blend_mask, refinement
from image_core.p2p import P2POptions, Tokens, plan, prompt_to_prompt

SOURCE = "a cat sitting next to a mirror"


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    y, x = np.mgrid[0:128, 0:128]
    rgb = np.stack([x / 128, y / 128, ((x - 64) ** 2 + (y - 60) ** 2 < 30**2) * 1.0], -1)
    path = tmp_path_factory.mktemp("p2p") / "cat.png"
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def images():
    return ImageEditor.from_pretrained("tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def sounds():
    return AudioEditor.from_pretrained("tiny", device="cpu", progress=False)


def tone(seconds: float, rate: int = 16000) -> Audio:
    t = np.arange(int(rate * seconds)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 220 * 2 ** (np.floor(t * 4) % 5 / 12) * t))[None].astype(np.float32), rate)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------- identity edits


@pytest.mark.parametrize("method", ["ddpm", "ddim", "null-text"])
@pytest.mark.parametrize("fractions", [(1.0, 1.0), (0.3, 0.0), (0.0, 0.7)])
def test_target_equal_to_source_reconstructs(images, picture, method, fractions):
    """Any injection fractions: the edit of the source prompt is the inversion's reconstruction
    (the source row and the target row are the same computation)."""
    seeds = [0, 1] if method == "ddpm" else 0
    tuning = {"inner_steps": 2} if method == "null-text" else {}
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6, seed=seeds, method=method, cfg_src=3.5, **tuning)
    reference = images.reconstruct(inv, output_type="latent")
    latents, _ = prompt_to_prompt(images, inv, [SOURCE], [3.5], "", P2POptions("replace", *fractions))
    B = inv.num_latents
    assert latents.shape == (2 * B, *inv.x0.shape[1:])
    assert relative(latents[B:], reference) <= 1e-4 and relative(latents[:B], reference) <= 1e-4
    if method == "ddpm":
        assert relative(latents[B:], inv.x0) <= 1e-4  # exact reconstruction of the input


def test_target_equal_to_source_reconstructs_audio(sounds):
    inv = sounds.invert(tone(3.0), "a melody on a piano", num_steps=10, t_start=6, cfg_src=3.0, seed=[0, 1])
    out = sounds.edit_p2p(inv, "a melody on a piano", cross_steps=1.0, self_steps=1.0, cfg_tar=3.0, output_type="latent")
    assert out.shape == inv.x0.shape
    assert relative(out, inv.x0) <= 1e-4


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_identity_edit_in_half_precision(picture, dtype):
    """Half-precision UNet: the identity P2P edit stays as close to the input as the plain
    reconstruction (scores and softmax are computed in float32 in the controlled layers)."""
    editor = ImageEditor.from_pretrained("tiny", device="cpu", dtype=dtype, progress=False)
    inv = editor.invert(picture, SOURCE, num_steps=10, t_start=6, cfg_src=3.5)
    plain = relative(editor.reconstruct(inv, output_type="latent"), inv.x0)
    out = editor.edit_p2p(inv, SOURCE, cross_steps=1.0, self_steps=1.0, cfg_tar=3.5, output_type="latent")
    assert relative(out, inv.x0) <= max(2 * plain, 1e-3)


# ------------------------------------------------------------------------------ the maps themselves


class Recorder:
    """Records what the controller returns at the word layers."""

    def __init__(self, monkeypatch):
        self.seen = []
        call = AttentionControl.__call__

        def recording(control, layer, probs):
            before = probs.clone()
            out = call(control, layer, probs)
            self.seen.append((layer, control.step, before, out.clone(), control.plan))
            return out

        monkeypatch.setattr(AttentionControl, "__call__", recording)

    def words(self):
        return [item for item in self.seen if item[0].stream == "words"]


def conditional(probs: torch.Tensor, plan) -> torch.Tensor:
    """(P, B, heads, Q, K): the conditional rows of one block."""
    return probs[: plan.rows].unflatten(0, (plan.prompts, plan.latents))


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_word_swap_injects_the_source_maps_exactly(images, sounds, picture, monkeypatch, modality):
    recorder = Recorder(monkeypatch)
    if modality == "image":
        inv = images.invert(picture, SOURCE, num_steps=10, t_start=6, seed=[0, 1])
        images.edit_p2p(inv, "a dog sitting next to a mirror", cross_steps=1.0, self_steps=0.0, output_type="latent")
    else:  # the T5 stream; "piano" and "flute" have the same number of tokens
        inv = sounds.invert(tone(3.0), "a piano melody", num_steps=10, t_start=6, seed=[0, 1])
        sounds.edit_p2p(inv, "a flute melody", cross_steps=1.0, self_steps=0.0, output_type="latent")
    seen = recorder.words()
    assert seen and len({step for _, step, *_ in seen}) == 6  # every step of the edit, at every word layer
    for _, _, before, after, plan in seen:
        rows = conditional(after, plan)
        assert torch.equal(rows[1], rows[0])  # target maps = source maps, each seed its own source row
        assert not torch.equal(conditional(before, plan)[1], rows[1])  # they were not equal before
        assert torch.equal(after[plan.rows :], before[plan.rows :])  # the unconditional half untouched


def test_injection_stops_after_its_steps(images, picture, monkeypatch):
    """cross-steps 0.3 of N = 10: P2P's int(0.3 (N + 1)) = 3 steps injected, counted from the edit's first."""
    recorder = Recorder(monkeypatch)
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6)
    images.edit_p2p(inv, "a dog sitting next to a mirror", cross_steps=0.3, self_steps=0.0, output_type="latent")
    steps = sorted({step for _, step, *_ in recorder.words()})
    assert steps == [0, 1, 2]


def test_reweight_multiplies_the_word_map(images, picture, monkeypatch):
    recorder = Recorder(monkeypatch)
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6)
    images.edit_p2p(inv, SOURCE, reweight={"mirror": 2.5}, cross_steps=1.0, output_type="latent")
    positions = Tokens(images.model.tokenizer, "text").positions(SOURCE, "mirror")
    assert len(positions) >= 1
    others = [k for k in range(77) if k not in positions]
    for _, _, _, after, plan in recorder.words():
        rows = conditional(after, plan)
        assert torch.allclose(rows[1][..., positions], 2.5 * rows[0][..., positions], rtol=1e-6, atol=0)
        assert torch.equal(rows[1][..., others], rows[0][..., others])


def test_reweight_by_one_changes_nothing(images, picture):
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6)
    target = "a dog sitting next to a mirror"
    plain = images.edit_p2p(inv, target, output_type="latent")
    assert torch.equal(images.edit_p2p(inv, target, reweight={"dog": 1.0}, output_type="latent"), plain)
    assert not torch.equal(images.edit_p2p(inv, target, reweight={"dog": 3.0}, output_type="latent"), plain)


def test_refine_reads_aligned_tokens_and_keeps_new_ones(images, picture, monkeypatch):
    recorder = Recorder(monkeypatch)
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6)
    target = "a big cat sitting next to a mirror"
    images.edit_p2p(inv, target, mode="refine", cross_steps=1.0, output_type="latent")
    tokenizer = images.model.tokenizer
    source_ids, target_ids = tokenizer(SOURCE).input_ids, tokenizer(target).input_ids
    new = Tokens(tokenizer, "text").positions(target, "big")
    for _, _, before, after, plan in recorder.words():
        rows, own = conditional(after, plan), conditional(before, plan)
        # "a" and the start token keep their place; "cat" ... "mirror" and the end token shift by len(new)
        assert torch.equal(rows[1][..., :2], rows[0][..., :2])
        assert torch.equal(rows[1][..., new[-1] + 1 : len(target_ids)], rows[0][..., 2 : len(source_ids)])
        assert torch.equal(rows[1][..., new], own[1][..., new])  # the new word keeps its own attention


# ------------------------------------------------------------------------------------ local blend


def test_local_blend_keeps_the_source_outside_the_mask(images, picture, monkeypatch):
    """After every step the target rows take the source row outside the mask, so the outputs equal
    the source row's there, bit for bit. (The tiny model's maps are nearly uniform, so the mask is
    fixed here to the left half; ``blend_mask`` itself is checked against P2P below.)"""
    from image_core import p2p as p2p_edit

    made = []

    def half(maps, words, grid, size, threshold):
        made.append((maps.shape, words.clone(), tuple(grid), tuple(size)))
        mask = torch.zeros(*maps.shape[:2], 1, *size, dtype=torch.bool)
        mask[..., : size[1] // 2] = True
        return mask

    monkeypatch.setattr(p2p_edit.p2p, "blend_mask", half)
    inv = images.invert(picture, SOURCE, num_steps=10, t_start=6, seed=[0, 1])
    latents, _ = prompt_to_prompt(images, inv, ["a dog sitting next to a mirror"], [15.0], "", P2POptions("replace", blend=("cat", "dog")))
    assert len(made) == 6  # a mask after every step (DDPM inversion: blending from the first step)
    shape, words, grid, size = made[0]
    assert shape == (2, 2, 64, 77) and grid == (8, 8) and size == tuple(inv.x0.shape[2:])
    assert words[0].nonzero().flatten().tolist() == Tokens(images.model.tokenizer, "text").positions(SOURCE, "cat")
    for target, source in ((2, 0), (3, 1)):  # each seed's target row against its own source row
        assert torch.equal(latents[target][..., 8:], latents[source][..., 8:])
        assert not torch.equal(latents[target][..., :8], latents[source][..., :8])


def test_blend_mask_follows_p2p():
    """The mask of P2P's LocalBlend, written out for one 2x2 map of one word."""
    maps = torch.tensor([[0.0, 1.0], [0.2, 0.0]]).reshape(1, 1, 4, 1).repeat(2, 1, 1, 1)
    maps[1] = 0  # the target does not attend to the word: its mask is the source's (union)
    words = torch.ones(2, 1)
    mask = blend_mask(maps, words, (2, 2), (4, 4), threshold=0.3)
    # a 3x3 max-pool of a 2x2 map spreads its maximum everywhere: everything is kept for the edit
    assert mask.all()
    single = torch.zeros(1, 1, 16, 1)
    single[0, 0, 0] = 1.0
    mask = blend_mask(single, torch.ones(1, 1), (4, 4), (8, 8))[0, 0, 0]
    assert mask[:4, :4].all() and not mask[4:].any() and not mask[:, 4:].any()  # pooled to 2x2 cells, each 2x2 pixels


# ---------------------------------------------------------------------------- mappings and streams


def test_alignment_pairs_tokens_as_p2p():
    assert align([1, 2, 3, 4], [1, 2, 9, 3, 4]) == [0, 1, -1, 2, 3]  # a word added
    # a word changed: with gaps free and a mismatch -1, the new token is unaligned and keeps its own attention
    assert align([1, 2, 3, 4], [1, 2, 8, 4]) == [0, 1, -1, 3]
    assert align([1, 2, 3], [1, 7, 7, 2, 3]) == [0, -1, -1, 1, 2]
    index, alpha = refinement([1, 2, 3, 4], [1, 2, 9, 3, 4], keys=8)
    assert index.tolist() == [0, 1, 0, 2, 3, 5, 6, 7] and alpha.tolist() == [1, 1, 0, 1, 1, 1, 1, 1]


def test_audioldm2_word_stream_is_t5_and_gpt2_is_left_alone(sounds):
    streams = {layer.name: layer.stream for layer in layers(sounds.model.unet).values()}
    cross = {name: stream for name, stream in streams.items() if name.endswith("attn2") and stream != "self"}
    assert set(cross.values()) == {"words", "states"}
    for name, stream in cross.items():
        index = int(name.split(".")[name.split(".").index("attentions") + 1])
        assert stream == ("states" if index % 3 == 1 else "words")  # (self, GPT-2, T5) per layer
    control = AttentionControl(algorithm.Plan(2, 1, True, cross_end=100, self_end=100))
    state_layer = next(layer for layer in layers(sounds.model.unet).values() if layer.stream == "states")
    assert not control.wants(state_layer, 64)


def test_p2p_adds_no_model_calls(images, picture):
    calls = []
    unet = images.model.unet
    handle = unet.register_forward_hook(lambda module, args, kwargs=None: calls.append(args[0].shape[0]))
    try:
        inv = images.invert(picture, SOURCE, num_steps=10, t_start=6, seed=[0, 1])
        calls.clear()
        images.edit_p2p(inv, ["a dog sitting next to a mirror", "a fox sitting next to a mirror"], output_type="latent")
    finally:
        handle.remove()
    assert calls == [2 * 3 * 2] * 6  # one call per step: (source + 2 targets) x 2 seeds x both guidance halves


def test_long_clips_edit_on_windows_with_source_and_targets_together(sounds):
    inv = sounds.invert(tone(22.0), "a melody", num_steps=8, t_start=4, cfg_src=3.0)
    assert inv.x0.shape[2] > sounds.model.latent_window
    out = sounds.edit_p2p(inv, "a melody", cross_steps=1.0, self_steps=1.0, cfg_tar=3.0, output_type="latent")
    assert relative(out, inv.x0) <= 1e-4
    with pytest.raises(InputError, match="one model window"):
        sounds.edit_p2p(inv, "a melody", blend=["melody"], output_type="latent")


def test_attention_maps_are_drawn(sounds, images, picture, tmp_path):
    inv = sounds.invert(tone(3.0), "a melody on a piano", num_steps=8, t_start=4)
    out, maps = sounds.edit_p2p(inv, "a melody on a guitar", mode="refine", return_attention=True)
    P, h, w, K = maps.maps.shape
    assert P == 2 and (h, w) == tuple(-(-side // 4) for side in inv.x0.shape[2:])  # 1/4 of the latent per side
    assert torch.allclose(maps.maps.sum(-1), torch.ones(P, h, w))  # averages of probabilities over the keys
    sounds.draw_attention(maps, inv, tmp_path / "a.png")
    inv = images.invert(picture, SOURCE, num_steps=8, t_start=4)
    _, maps = images.edit_p2p(inv, "a dog sitting next to a mirror", return_attention=True)
    images.draw_attention(maps, inv, tmp_path / "i.png")
    for name in ("a.png", "i.png"):
        assert Image.open(tmp_path / name).size[0] > 100


# -------------------------------------------------------------------------------------- bad input


def test_bad_requests_are_refused_in_one_line(images, picture):
    inv = images.invert(picture, SOURCE, num_steps=8, t_start=4)
    with pytest.raises(InputError, match="not a word of the target"):
        images.edit_p2p(inv, "a dog sitting next to a mirror", reweight={"zebra": 2.0})
    with pytest.raises(InputError, match="equal token length.*refine"):
        images.edit_p2p(inv, "a big dog sitting next to a mirror")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        images.edit_p2p(inv, "a dog sitting next to a mirror", cross_steps=1.5)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        images.edit_p2p(inv, "a dog sitting next to a mirror", self_steps=-0.1)
    with pytest.raises(InputError, match="replace or refine"):
        images.edit_p2p(inv, "a dog sitting next to a mirror", mode="swap")
    with pytest.raises(InputError, match="neither"):
        images.edit_p2p(inv, "a dog sitting next to a mirror", blend=["zebra"])


def test_audioldm_v1_has_no_cross_attention():
    editor = AudioEditor.from_pretrained("tiny-audioldm", device="cpu", progress=False)
    inv = editor.invert(tone(2.0), "a melody", num_steps=6, t_start=3)
    with pytest.raises(InputError, match="AudioLDM has none.*AudioLDM 2"):
        editor.edit_p2p(inv, "a melody")


def test_plan_defaults_follow_each_inversion(images):
    tok = images.model.tokenizer
    for method, cross, self_ in (("ddpm", 0.6, 0.2), ("ddim", 0.8, 0.4), ("null-text", 0.8, 0.5)):
        made = plan(Tokens(tok, "text"), [SOURCE, SOURCE], 1, True, 77, P2POptions(), method, 50, None)
        assert (made.cross_end, made.self_end) == (int(cross * 51), int(self_ * 50))


# ---------------------------------------------------------------------------------- command lines


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reweight", "dog=2"], "--reweight goes with --p2p"),
        (["--p2p", "replace", "--cross-steps", "1.5"], r"\[0, 1\]"),
        (["--p2p", "replace", "--self-steps", "-1"], r"\[0, 1\]"),
        (["--p2p", "replace", "--method", "sdedit"], "sdedit"),
        (["--p2p", "replace", "--add", "rain"], "leave out --add"),
        (["--p2p", "replace", "--mask", "auto"], "leave out --mask"),
        (["--p2p", "replace", "--reweight", "dog"], "WORD=FACTOR"),
        (["--p2p", "replace", "--reweight", "zebra=2"], "not a word of the target"),
        (["--p2p", "replace", "--blend", "zebra"], "neither"),
        (["--p2p", "replace", "--target", "a big dog"], "equal token length.*refine"),
    ],
)
def test_image_cli_refuses_bad_p2p_in_one_line(picture, tmp_path, capsys, extra, message):
    from image_core.stable_diffusion.cli import main

    from commands import run

    out = tmp_path / "out.png"
    argv = [str(picture), "--model", "tiny", "--source", "a cat", "--target", "a dog", "--steps", "6", "--tstart", "3", "--out", str(out), *extra]
    code, _, err = run(main, argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_audio_cli_refuses_p2p_on_audioldm(tmp_path, capsys):
    import soundfile as sf

    from audio_edit.cli import main

    from commands import run

    clip = tmp_path / "clip.wav"
    sf.write(clip, tone(2.0).samples[0], 16000)
    code, _, err = run(main, [str(clip), "--model", "tiny-audioldm", "--target", "a guitar", "--p2p", "refine", "--steps", "6", "--tstart", "3"], capsys)
    assert code == 2 and "AudioLDM has none" in err and len(err.strip().splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.wav"]


def test_cli_p2p_edit_writes_its_outputs_and_attention_picture(picture, tmp_path, capsys):
    import json

    from image_core.stable_diffusion.cli import main

    from commands import run

    out, drawn = tmp_path / "dog.png", tmp_path / "att.png"
    argv = [str(picture), "--model", "tiny", "--source", SOURCE, "--target", "a dog sitting next to a mirror", "--p2p", "replace",
            "--reweight", "dog=2", "--blend", "cat", "dog", "--steps", "6", "--tstart", "3", "--out", str(out), "--save-attention", str(drawn)]
    code, stdout, err = run(main, argv, capsys)
    assert code == 0, err
    assert Image.open(out).size == (128, 128) and Image.open(drawn).size[0] > 128
    assert str(drawn) in stdout.splitlines()
    record = json.loads((tmp_path / "dog.png.json").read_text())
    assert record["files"]["attention"] == "att.png"
    assert "replace" in json.dumps(record) and "dog=2" in json.dumps(record)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_word_swap_against_float64_of_the_same_weights(picture, dtype):
    """The controlled layers (float32 probabilities beside the layer's own attention) cost no accuracy:
    a P2P edit in each dtype is as close to its float64 evaluation as the plain edit is to its own
    (measured on the tiny SD: 8e-6 / 1.8e-2 / 0.14 against 8e-6 / 2.0e-2 / 0.14)."""
    from image_core import adapters

    def editor(dt):
        made = ImageEditor.from_pretrained("tiny", device="cpu", progress=False)
        for module in (made.model.unet, made.model.text_encoder, made.model.vae):
            adapters.cast(module, dt)
        made.model.dtype = dt
        return made

    target = "a dog sitting next to a mirror"
    runs = {}
    for dt in (torch.float64, dtype):
        ed = editor(dt)
        inv = ed.invert(picture, SOURCE, num_steps=10, t_start=6)
        runs[dt] = (ed.edit_p2p(inv, target, cross_steps=1.0, self_steps=1.0, output_type="latent"), ed.edit(inv, target, output_type="latent"))
    (p2p64, plain64), (p2p, plain) = runs[torch.float64], runs[dtype]
    assert relative(p2p, p2p64) <= 1.5 * relative(plain, plain64) + 1e-6

"""Prompt-to-Prompt on the audio DiTs: ACE-Step 1.5 and Stable Audio Open (tiny random-weight models, CPU).

References: ACE-Step's packed condition is rebuilt here from the pipeline's own pieces (its prompt
encoding, the text projector, diffusers' packing order lyric -> timbre -> text); the attention of
a controlled layer against the layer's own processor (diffusers' ``AceStepAttnProcessor2_0`` and
``StableAudioAttnProcessor2_0``); the P2P rules as in ``test_p2p`` (replace sets a target's maps to
the source's; self-attention injected; outside the local-blend mask the target equals its source row).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_edit.ace_step import AceStepModel
from audio_edit.ace_step_editor import AceStepEditor
from audio_edit.audio_io import Audio
from audio_edit.stable_audio import StableAudioModel
from audio_edit.stable_audio_editor import StableAudioEditor
from image_core import attention
from image_core.p2p import P2POptions, prompt_to_prompt

from sounds import noisy_tone, relative
from test_p2p import Recorder, conditional

SOURCE, SWAPPED = "soft piano melody", "soft organ melody"  # one byte a token: equal token lengths


def clip(seconds: float = 3.0, seed: int = 0) -> Audio:
    return noisy_tone(seconds, 48000, 2, seed)


@pytest.fixture(scope="module")
def exact() -> AceStepEditor:
    return AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=torch.float64), progress=False)


# ------------------------------------------------------------------------------------- the words


@pytest.mark.parametrize("lyrics", ["", "la la la\nsing it"])
def test_word_keys_are_the_captions_tokens_in_the_packed_condition(lyrics):
    model = AceStepModel.from_pretrained("tiny-acestep", lyrics=lyrics)
    words = model.attention_control().words
    pipe = model.pipeline()
    text, text_mask, _, _ = pipe.encode_prompt([SOURCE], [lyrics], "cpu", audio_duration=model.duration)
    caption = model.condition_encoder.text_projector(text)[0]  # (L_text, D): the text part of the condition
    condition = model.encode_prompts([SOURCE])["text"][0]
    ids = words.ids(SOURCE)
    assert len(ids) == condition.shape[0] and len(ids) - caption.shape[0] == sum(1 for i in ids if i < 0)
    prefix = len(ids) - caption.shape[0]
    torch.testing.assert_close(condition[prefix:], caption, rtol=0, atol=1e-6)  # diffusers packs the text last
    positions = words.positions(SOURCE, "piano")
    tokens = pipe.tokenizer(pipe._format_prompt(SOURCE, lyrics, "en", model.duration)[0]).input_ids
    assert pipe.tokenizer.decode([tokens[k - prefix] for k in positions]) == "piano"  # the word's own tokens
    assert words.positions(SOURCE, "PIANO,") == positions and words.positions(SOURCE, "drums") == []
    assert "".join(s for s in words.strings(SOURCE) if s) == SOURCE.replace(" ", "␣")  # only the caption is drawn
    assert words.ids("") == [words.ids("")[0]] and words.positions("", "piano") == []  # the null condition: one key


# ------------------------------------------------------------------------------------- the layers


class Unchanged:
    """A controller that asks for every layer's probabilities and changes nothing (a copy, so the
    processor adds (P' - P) v = 0)."""

    def __init__(self) -> None:
        self.calls = 0

    def wants(self, layer, queries):
        return True

    def __call__(self, layer, probs):
        self.calls += 1
        return probs.clone()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["tiny-acestep", "tiny-sao"])
def test_a_controlled_layer_that_changes_nothing_is_the_layers_own_attention(name, dtype):
    """Every self- and cross-attention layer computed by the controlled processor (fused attention of
    the layer's own inputs plus (P' - P) v) gives the DiT's output bit for bit, in every dtype."""
    model = (AceStepModel if name == "tiny-acestep" else StableAudioModel).from_pretrained(name, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, model.latent_channels, 40, generator=g)
    t = torch.tensor([0.7, 0.3]) if name == "tiny-acestep" else torch.tensor([30.0, 0.5])
    cond = model.encode_prompts([SOURCE, SWAPPED])
    plain = model.predict_eps(x, t, cond)
    control = Unchanged()
    with attention.controlled(model.transformer, control) as found:
        controlled = model.predict_eps(x, t, cond)
    assert {layer.stream for layer in found.values()} == {"self", "words"} and {layer.place for layer in found.values()} == {"dit"}
    assert control.calls == len(found)
    assert torch.equal(controlled, plain)


class Nothing(Unchanged):
    """A controller that returns all-zero probabilities: the layer then attends with A + (0 - P) v,
    zero exactly when P is the probabilities the fused attention A used."""

    def __call__(self, layer, probs):
        self.calls += 1
        return torch.zeros_like(probs)


def grouped_dit(name: str) -> tuple[object, torch.Tensor, dict]:
    """A float64 DiT of ``name``'s tiny layout with 4 query heads over 2 key-value heads (the order
    heads are repeated in matters), and latents, levels and conditions of two prompts for it."""
    if name == "tiny-acestep":
        from diffusers import AceStepTransformer1DModel

        from audio_edit.tiny_ace_step import build_tiny_ace_step

        parts = build_tiny_ace_step()
        config = dict(parts["transformer"].config)
        config.update(num_attention_heads=4, num_key_value_heads=2, sliding_window=8)
        parts["transformer"] = AceStepTransformer1DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        model = AceStepModel(parts, dtype=torch.float64)
        t = torch.tensor([0.7, 0.3], dtype=torch.float64)
    else:
        from diffusers import StableAudioDiTModel

        from audio_edit.tiny import build_tiny_sao

        parts = build_tiny_sao()
        config = dict(parts["transformer"].config)
        config.update(num_attention_heads=4, num_key_value_attention_heads=2)
        parts["transformer"] = StableAudioDiTModel(**{k: v for k, v in config.items() if not k.startswith("_")})
        model = StableAudioModel(parts, dtype=torch.float64)
        t = torch.tensor([30.0, 0.5], dtype=torch.float64)
    x = torch.randn(2, model.latent_channels, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return model, (x, t), model.encode_prompts([SOURCE, SWAPPED])


@pytest.mark.parametrize("name", ["tiny-acestep", "tiny-sao"])
def test_the_controller_sees_the_probabilities_the_layer_attends_with(name):
    """With every layer's probabilities replaced by zeros every attention output is 0 (A - P v = 0),
    so ε is that of a DiT whose attention layers output nothing: checked against the DiT with its
    attention projections' outputs zeroed (grouped-query heads, RoPE and ACE-Step's sliding window
    included). Then the unchanged controller gives the DiT's own output."""
    model, (x, t), cond = grouped_dit(name)
    control = Nothing()
    with attention.controlled(model.transformer, control) as found:
        silenced = model.predict_eps(x, t, cond)
    assert control.calls == len(found) == 2 * model.transformer.config.get("num_hidden_layers", model.transformer.config.get("num_layers"))
    hooks = [module.to_out[0].register_forward_hook(lambda module, args, out: torch.zeros_like(out))
             for name_, module in model.transformer.named_modules() if name_.endswith(("attn", "attn1", "attn2"))]  # fmt: skip
    try:
        reference = model.predict_eps(x, t, cond)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(silenced, reference, rtol=1e-10, atol=1e-10)
    assert relative(model.predict_eps(x, t, cond), reference) > 1e-3  # the attention matters
    with attention.controlled(model.transformer, Unchanged()):
        assert torch.equal(model.predict_eps(x, t, cond), model.predict_eps(x, t, cond))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_of_different_condition_lengths_run_together_as_alone(dtype):
    """While attention is controlled every row runs in one DiT call, its condition padded to the
    longest: each row attends to its own keys only and equals the model's output for it alone."""
    model = AceStepModel.from_pretrained("tiny-acestep", dtype=dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, model.latent_channels, 40, generator=g, dtype=torch.float64)
    t = torch.tensor([0.8, 0.8, 0.5], dtype=torch.float64)
    cond = model.encode_prompts([SOURCE, "soft jazzy organ melody", ""])  # 3 lengths, the null condition 1 key
    assert len(set(cond["mask"].sum(1).tolist())) == 3
    alone = torch.cat([model.predict_eps(x[i : i + 1], t[i : i + 1], {k: v[i : i + 1] for k, v in cond.items()}) for i in range(3)])
    calls = []
    model.transformer.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with model.rows_together() as lengths, attention.controlled(model.transformer, Unchanged(), lengths):
        together = model.predict_eps(x, t, cond)
    assert calls[-1] == 3  # one call
    assert relative(together, alone) < (1e-12 if dtype == torch.float64 else 1e-5)


# ---------------------------------------------------------------------------------------- edits


def test_identity_edit_reconstructs_in_float64(exact):
    inv = exact.invert(clip(), SOURCE, seed=[0, 1])
    out = exact.edit_p2p(inv, SOURCE, cross_steps=1.0, self_steps=1.0, output_type="latent")
    assert out.shape == inv.x0.shape and relative(out, inv.x0) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_identity_edit_in_every_dtype_stays_as_close_as_the_reconstruction(dtype):
    editor = AceStepEditor(AceStepModel.from_pretrained("tiny-acestep", dtype=dtype), progress=False)
    inv = editor.invert(clip(), SOURCE)
    plain = relative(editor.reconstruct_latent(inv), inv.x0)
    out = editor.edit_p2p(inv, SOURCE, cross_steps=1.0, self_steps=1.0, output_type="latent")
    assert relative(out, inv.x0) <= max(2 * plain, 1e-5)


def test_word_swap_injects_the_source_maps_at_every_dit_layer(exact, monkeypatch):
    recorder = Recorder(monkeypatch)
    inv = exact.invert(clip(), SOURCE, seed=[0, 1])
    out = exact.edit_p2p(inv, SWAPPED, cross_steps=1.0, self_steps=0.5, output_type="latent")
    plain = exact.edit(inv, SWAPPED, output_type="latent")
    layers = {layer.name for layer, *_ in recorder.seen}
    assert layers == {f"layers.{i}.{kind}" for i in range(2) for kind in ("self_attn", "cross_attn")}
    for layer, step, before, after, plan in recorder.seen:
        rows = conditional(after, plan)
        assert torch.equal(rows[1], rows[0])  # target = source (cross: every step; self: the first int(0.5 * 8))
        if layer.stream == "words":
            assert not torch.equal(conditional(before, plan)[1], rows[1])
        else:
            assert step < 4
    assert len({step for layer, step, *_ in recorder.seen if layer.stream == "words"}) == 6  # the edit's 6 steps
    assert relative(out, plain) > 1e-3  # the injection changes the edit


def test_refine_aligns_the_lyric_timbre_and_template_keys(exact, monkeypatch):
    """A word added: every key before it (lyrics, timbre, template, "soft") reads the source's same
    key, the added word keeps its own attention, the keys after it read the source's shifted keys."""
    recorder = Recorder(monkeypatch)
    inv = exact.invert(clip(), SOURCE)
    target = "soft jazzy piano melody"
    exact.edit_p2p(inv, target, mode="refine", cross_steps=1.0, self_steps=0.0, output_type="latent")
    words = exact.model.attention_control().words
    new = words.positions(target, "jazzy") + [words.positions(target, "piano")[0] - 1]  # "jazzy" and its space
    before_new, source_keys = new[0], len(words.ids(SOURCE))
    for layer, _, before, after, plan in recorder.seen:
        if layer.stream != "words":
            continue
        rows, own = conditional(after, plan), conditional(before, plan)
        assert torch.equal(rows[1][..., :before_new], rows[0][..., :before_new])
        assert torch.equal(rows[1][..., new], own[1][..., new])
        shift = len(new)
        assert torch.equal(rows[1][..., before_new + shift : source_keys + shift], rows[0][..., before_new:source_keys])


def test_local_blend_keeps_the_source_outside_the_mask_over_time(exact, monkeypatch):
    """The mask is over the latent's frames (1-D); outside it each target equals its source row bit
    for bit. The tiny model's maps are nearly uniform, so the mask is fixed to the first half."""
    from image_core import p2p as p2p_edit

    made = []

    def first_half(maps, words, grid, size, threshold):
        made.append((maps.shape, tuple(grid), tuple(size)))
        mask = torch.zeros(*maps.shape[:2], 1, *size, dtype=torch.bool)
        mask[..., : size[0] // 2] = True
        return mask

    monkeypatch.setattr(p2p_edit.p2p, "blend_mask", first_half)
    inv = exact.invert(clip(), SOURCE, seed=[0, 1])
    latents, maps = prompt_to_prompt(exact, inv, [SWAPPED], [1.0], "", P2POptions("replace", blend=("piano", "organ")), keep_maps=True)
    frames = inv.x0.shape[-1]
    assert made and made[0][1:] == ((1, -(-frames // 2)), (frames,))
    half = frames // 2
    for target, source in ((2, 0), (3, 1)):
        assert torch.equal(latents[target][..., half:], latents[source][..., half:])
        assert not torch.equal(latents[target][..., :half], latents[source][..., :half])
    assert maps is not None and maps.maps.shape == (2, 1, -(-frames // 2), len(exact.model.attention_control().words.ids(SOURCE)))


def test_blend_mask_over_time_is_the_pictures_rule_on_one_row():
    """A 1-D map is P2P's 2-D rule on a grid one row high: a 3-wide max-pool over time, resized, thresholded."""
    from image_core.methods.p2p import blend_mask

    maps = torch.zeros(1, 1, 8, 1)
    maps[0, 0, 2] = 1.0
    mask = blend_mask(maps, torch.ones(1, 1), (1, 8), (16,))
    assert mask.shape == (1, 1, 1, 16)
    assert mask[0, 0, 0].nonzero().flatten().tolist() == list(range(2, 8))  # positions 1..3, two frames each


def test_the_command_line_runs_p2p_and_draws_the_word_maps(tmp_path, capsys):
    """--p2p refine on ACE-Step with a local blend: the edit at the input's format, the maps drawn over the latent."""
    import soundfile as sf
    from commands import run
    from PIL import Image

    from audio_edit.cli import main

    wave = clip(2.0).samples
    sf.write(tmp_path / "in.wav", wave.T, 48000)
    out, picture = tmp_path / "out.wav", tmp_path / "maps.png"
    code, _, err = run(main, [str(tmp_path / "in.wav"), "--model", "tiny-acestep", "--source", SOURCE, "--target", "soft jazzy piano melody",
                              "--p2p", "refine", "--blend", "piano", "--save-attention", str(picture), "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    edited, rate = sf.read(out, always_2d=True)
    assert rate == 48000 and edited.shape == wave.T.shape and np.isfinite(edited).all()
    assert Image.open(picture).size[1] > 0


# ------------------------------------------------------------------------------ Stable Audio Open


@pytest.fixture(scope="module")
def sao() -> StableAudioEditor:
    return StableAudioEditor(StableAudioModel.from_pretrained("tiny-sao", dtype=torch.float64), progress=False)


def sao_clip(seconds: float) -> Audio:
    n = int(seconds * 44100)
    return Audio((0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)[None] * np.ones((2, 1))).astype(np.float32), 44100)


def test_stable_audio_open_word_swap_reads_the_t5_words_and_the_seconds_keys(sao, monkeypatch):
    """Stable Audio Open: the keys are the T5 tokens (padded to the tokenizer's length) and the two seconds states; a
    word swap sets the target's maps to the source's over all of them; self-attention (a global
    token and the frames: 0.03 s of the tiny model is 166 frames, at most 16² positions) is injected;
    the identity edit with the source's guidance is the plain edit of the source prompt (whose first
    step, first order, differs from the reconstruction on this second-order sampler)."""
    recorder = Recorder(monkeypatch)
    inv = sao.invert(sao_clip(0.03), "a soft melody", num_steps=8, t_start=6, cfg_src=3.0)
    sao.edit_p2p(inv, "a loud melody", cross_steps=1.0, self_steps=1.0, cfg_tar=3.0, output_type="latent")
    frames, text = inv.x0.shape[-1], sao.model.tokenizer.model_max_length  # 128 in the real model, 64 in the tiny one
    kinds = {(layer.stream, after.shape[-2], after.shape[-1]) for layer, _, _, after, _ in recorder.seen}
    assert kinds == {("words", frames + 1, text + 2), ("self", frames + 1, frames + 1)}
    for layer, _, before, after, plan in recorder.seen:
        rows = conditional(after, plan)
        assert torch.equal(rows[1], rows[0])
        assert torch.equal(after[plan.rows :], before[plan.rows :])  # the unconditional half untouched
    monkeypatch.undo()
    same = sao.edit_p2p(inv, "a soft melody", cross_steps=1.0, self_steps=1.0, cfg_tar=3.0, output_type="latent")
    # float64 rounding of a batch of 2 against 1, through a chain from EDM level 500 (the tiny model's
    # own reconstruction is 8e-11 from the input)
    assert relative(same, sao.edit(inv, "a soft melody", cfg_tar=3.0, output_type="latent")) < 1e-7


def test_stable_audio_open_maps_skip_the_global_token_and_blend_over_frames(sao, tmp_path):
    inv = sao.invert(sao_clip(0.03), "a soft melody", num_steps=8, t_start=6)
    out, maps = sao.edit_p2p(inv, "a soft loud melody", mode="refine", blend=["loud"], output_type="latent", return_attention=True)
    frames = inv.x0.shape[-1]
    assert out.shape == inv.x0.shape and maps.maps.shape == (2, 1, frames, sao.model.tokenizer.model_max_length + 2)
    sao.draw_attention(maps, inv, tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["tiny-acestep", "tiny-sao"])
def test_word_swap_against_float64_of_the_same_weights(name, dtype):
    """The controlled DiT layers cost no accuracy: a P2P word swap in each dtype is as close to its
    float64 evaluation (same weights, each inverted in its own dtype) as the plain edit is to its own
    (measured: ACE-Step 3.8e-7 / 1.7e-3 / 1.3e-2 against 5.8e-7 / 1.9e-3 / 1.3e-2 in fp32 / fp16 / bf16;
    Stable Audio Open 2e-6 / 1.0e-2 / 7.0e-2 against 2e-6 / 8e-3 / 6.4e-2)."""
    if name == "tiny-acestep":
        make = lambda dt: AceStepEditor(AceStepModel.from_pretrained(name, dtype=dt), progress=False)  # noqa: E731
        audio, source, target, settings = clip(2.0), SOURCE, SWAPPED, {}
    else:
        make = lambda dt: StableAudioEditor(StableAudioModel.from_pretrained(name, dtype=dt), progress=False)  # noqa: E731
        audio, source, target, settings = sao_clip(0.03), "a soft melody", "a loud melody", {"num_steps": 8, "t_start": 6}
    runs = {}
    for dt in (torch.float64, dtype):
        ed = make(dt)
        inv = ed.invert(audio, source, **settings)
        runs[dt] = (ed.edit_p2p(inv, target, cross_steps=1.0, self_steps=1.0, output_type="latent"),
                    ed.edit(inv, target, output_type="latent"))  # fmt: skip
    (p2p64, plain64), (p2p, plain) = runs[torch.float64], runs[dtype]
    assert relative(p2p, p2p64) <= 1.5 * relative(plain, plain64) + 1e-6

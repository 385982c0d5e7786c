"""DDIM inversion, SDEdit and DiffEdit masks end to end on the tiny AudioLDM2, AudioLDM and SD models."""

import numpy as np
import pytest
import torch
from PIL import Image

from audio_edit import Audio, AudioEditor
from image_core import ImageEditor
from image_core.errors import InputError

STEPS, T_START = 8, 4


@pytest.fixture(scope="module", params=["tiny", "tiny-audioldm", "sd"])
def case(request):
    if request.param == "sd":
        editor = ImageEditor.from_pretrained("tiny", device="cpu", progress=False)
        x = np.linspace(0, 1, 96)
        picture = Image.fromarray((np.stack([np.outer(x, x)] * 3, -1) * 255).astype(np.uint8))
        return editor, picture
    editor = AudioEditor.from_pretrained(request.param, device="cpu", progress=False)
    t = np.arange(16000 * 2) / 16000
    return editor, Audio((0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t))[None].astype(np.float32), 16000)


def test_ddim_inversion_edits_deterministically(case):
    editor, item = case
    inv = editor.invert(item, "a", num_steps=STEPS, t_start=T_START, cfg_src=1.0, method="ddim")
    assert inv.zs is None and inv.settings.method == "ddim"
    first = editor.edit(inv, "b", output_type="latent")
    assert torch.equal(first, editor.edit(inv, "b", output_type="latent"))
    assert len(editor.edit(inv, ["b", "c"])) == 2


def test_sdedit_targets_times_seeds(case):
    editor, item = case
    outputs = editor.sdedit(item, ["b", "c"], num_steps=STEPS, t_start=T_START, seed=[0, 1])
    assert len(outputs) == 4
    latents = editor.sdedit(item, "b", num_steps=STEPS, t_start=T_START, seed=[0, 1], output_type="latent")
    assert not torch.equal(latents[0], latents[1])


def test_auto_mask_masked_edit_and_mask_files(case, tmp_path):
    editor, item = case
    inv = editor.invert(item, "a", num_steps=STEPS, t_start=T_START)
    mask = editor.mask(inv, "b", draws=4)
    assert mask.shape == (1, 1, *inv.x0.shape[2:]) and set(mask.unique().tolist()) <= {0.0, 1.0}
    if not mask.any():
        mask[..., 0, 0] = 1
    edited = editor.edit(inv, "b", mask=mask, output_type="latent")
    keep = (mask == 0).expand_as(edited)
    assert torch.equal(edited[keep], inv.x0.expand_as(edited)[keep])  # bitwise outside the mask
    editor.save_mask(mask, tmp_path / "mask.png", inv)
    assert torch.equal(editor.load_mask(tmp_path / "mask.png", inv), mask)
    painted = Image.new("L", (200, 100), 0)  # painted: white on the left half, no exact grid inside
    painted.paste(255, (0, 0, 100, 100))
    painted.save(tmp_path / "painted.png")
    loaded = editor.load_mask(tmp_path / "painted.png", inv)
    across = loaded[0, 0].any(1) if isinstance(editor, AudioEditor) else loaded[0, 0].any(0)  # time / columns
    half = len(across) // 2
    assert loaded.shape == mask.shape and across[:half].all() and not across[half:].any()


def test_bad_masks_are_refused(case, tmp_path):
    editor, item = case
    inv = editor.invert(item, "a", num_steps=STEPS, t_start=T_START)
    with pytest.raises(InputError, match="does not fit"):
        editor.edit(inv, "b", mask=torch.ones(1, 1, 3, 3))
    with pytest.raises(InputError, match="empty"):
        editor.edit(inv, "b", mask=torch.zeros(1, 1, *inv.x0.shape[2:]))
    Image.new("L", (40, 20), 0).save(tmp_path / "black.png")
    with pytest.raises(InputError, match="empty"):
        editor.load_mask(tmp_path / "black.png", inv)
    (tmp_path / "text.png").write_text("no picture")
    with pytest.raises(InputError, match="readable"):
        editor.load_mask(tmp_path / "text.png", inv)
    if isinstance(editor, AudioEditor):
        with pytest.raises(InputError, match="time range"):
            editor.region_mask(inv, seconds=(1.5, 3.0))  # the clip is 2 s
        with pytest.raises(InputError, match="8000 Hz"):
            editor.region_mask(inv, hz=(1000, 9000))
        mask = editor.region_mask(inv, seconds=(0.5, 1.0), hz=(200, 2000))
        frames = mask[0, 0].any(1).nonzero().flatten()
        assert frames.min() * 0.04 <= 0.5 < (frames.min() + 1) * 0.04 and frames.max() * 0.04 < 1.0
    else:
        with pytest.raises(InputError, match="inside"):
            editor.region_mask(inv, (0, 0, 200, 50))
        mask = editor.region_mask(inv, (0, 0, 48, 48))  # the top-left quarter
        h, w = inv.x0.shape[2:]
        assert mask[0, 0, : h // 2, : w // 2].all() and mask.sum() == (h // 2) * (w // 2)


def test_concepts_run_in_one_model_call_per_step(case):
    """LEDITS through the API: the target, the unconditional branch and three concepts are one UNet
    call per step, and the concepts change the edit."""
    from image_core import Concept

    editor, item = case
    inv = editor.invert(item, "a", num_steps=STEPS, t_start=T_START)
    calls = []
    handle = editor.model.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        concepts = [Concept("b", scale=5.0, warmup=0), Concept("c", scale=3.0, remove=True), Concept("d", scale=2.0)]
        guided = editor.edit(inv, "e", concepts=concepts, output_type="latent")
    finally:
        handle.remove()
    assert len(calls) == T_START
    plain = editor.edit(inv, "e", output_type="latent")
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)
    only_concepts = editor.edit(inv, None, concepts=[Concept("b", warmup=0)])
    assert len(only_concepts) == 1


def test_principal_components_and_prompt_free_edits(case, tmp_path):
    """The prompt-free path on every model: components limited to a region, moved at two amounts in
    one batch, saved and used again; amount 0 is the reconstruction."""
    from image_core import PosteriorPCs

    editor, item = case
    inv = editor.invert(item, "", num_steps=STEPS, t_start=T_START)
    if isinstance(editor, AudioEditor):
        region = editor.region_mask(inv, seconds=(0.2, 1.0))
    else:
        region = editor.region_mask(inv, (0, 0, 48, 48))
    pcs = editor.principal_components(inv, n=2, region=region, max_iterations=2)
    assert pcs.vectors.shape == (2, *inv.x0.shape[1:]) and pcs.values[0] >= pcs.values[1]
    outside = (region[0] == 0).expand_as(inv.x0[0])
    assert not pcs.vectors[:, outside].any()
    moved = editor.edit_pc(inv, pcs, pc=[1, 2], amount=[-2.0, 2.0], output_type="latent")
    assert moved.shape == (4, *inv.x0.shape[1:])
    assert torch.allclose(editor.edit_pc(inv, pcs, 1, 0.0, output_type="latent"), editor.reconstruct(inv, output_type="latent"), atol=1e-6)
    pcs.save(tmp_path / "x.pcs")
    assert len(editor.edit_pc(inv, PosteriorPCs.load(tmp_path / "x.pcs"), 1, 1.0)) == 1

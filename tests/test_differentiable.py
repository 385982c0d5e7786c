"""The model adapters' denoisers are differentiable (null-text inversion optimises a condition
through the UNet); the editors' entry points build no graph. (Forward-mode ``torch.func.jvp`` does
not pass diffusers' scaled-dot-product attention on the CPU in torch 2.13: Jacobian-vector products
of these models are finite differences.)"""

import pytest
import torch

from audio_edit import Audio, AudioEditor
from image_core import ImageEditor


@pytest.fixture(scope="module", params=["audio-tiny", "audio-tiny-audioldm", "image-tiny"])
def editor(request):
    kind, name = request.param.split("-", 1)
    cls = AudioEditor if kind == "audio" else ImageEditor
    return cls.from_pretrained(name, device="cpu", progress=False)


def _latent(editor):
    if isinstance(editor, AudioEditor):
        return torch.randn(1, editor.model.latent_channels, 256, 16, dtype=torch.float64)
    return torch.randn(1, 4, 16, 16, dtype=torch.float64)


def test_gradients_reach_latents_and_conditions_not_weights(editor):
    x = _latent(editor).requires_grad_(True)
    cond = editor.model.encode_prompts([""])
    key = next(iter(cond))
    cond = {**cond, key: cond[key].clone().float().requires_grad_(True)} if cond[key].is_floating_point() else cond
    eps = editor.model.predict_eps(x, torch.tensor([500]), cond)
    eps.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if cond[key].requires_grad:
        assert cond[key].grad is not None and cond[key].grad.abs().sum() > 0
    weights = editor.model.unet.parameters()
    assert all(not p.requires_grad and p.grad is None for p in weights)


def test_editing_builds_no_graph(editor):
    if isinstance(editor, AudioEditor):
        inv = editor.invert(Audio(torch.randn(1, 16000).numpy() * 0.1, 16000), "a", num_steps=4, t_start=2)
    else:
        from PIL import Image

        inv = editor.invert(Image.new("RGB", (64, 64), (200, 30, 30)), "a", num_steps=4, t_start=2)
    assert not inv.zs.requires_grad and not inv.xts.requires_grad
    assert not editor.edit(inv, "b", output_type="latent").requires_grad

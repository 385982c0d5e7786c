"""Half precision: the numeric paths in float16 and bfloat16 against a float64 evaluation of the same
(rounded) weights, on the tiny AudioLDM2 and Stable Diffusion models.

Each model is built once, its UNet's weights rounded to bfloat16 (exactly representable in float32
and float64; float16 holds all of them but the tiniest), then evaluated in every dtype.
"""

from __future__ import annotations

import copy

import pytest
import torch

from image_core import batching
from image_core.guidance import ClassifierFreeGuidance
from image_core.methods.pcs import posterior_pcs, x0_jvp
from image_core.schedule import Schedule

HALF = (torch.float16, torch.bfloat16)


def _rounded(unet: torch.nn.Module) -> torch.nn.Module:
    return unet.to(torch.bfloat16).to(torch.float64)


def _audio(dtype: torch.dtype, base: dict) -> object:
    from audio_edit.models import AudioModel

    model = copy.copy(base["model"])
    model.unet = copy.deepcopy(base["unet"]).to(dtype)
    model.dtype = dtype
    return model


def _image(dtype: torch.dtype, base: dict) -> object:
    from image_core.stable_diffusion.model import StableDiffusionModel

    parts = base["parts"]
    unet = copy.deepcopy(base["unet"]).to(dtype)
    return StableDiffusionModel("tiny", parts["tokenizer"], parts["text_encoder"], unet, parts["vae"], parts["scheduler_config"])


@pytest.fixture(scope="module", params=["audioldm2", "sd"])
def world(request):
    """(models by dtype, latent shape, a prompt row) of one tiny model."""
    torch.manual_seed(0)
    if request.param == "audioldm2":
        from audio_edit.models import AudioModel

        model = AudioModel.from_pretrained("tiny")
        base = {"model": model, "unet": _rounded(model.unet)}
        models = {dtype: _audio(dtype, base) for dtype in (torch.float64, torch.float32, *HALF)}
        shape = (model.latent_channels, 64, 16)
    else:
        from image_core.stable_diffusion.tiny import tiny_stable_diffusion

        parts = tiny_stable_diffusion()
        base = {"parts": parts, "unet": _rounded(parts["unet"])}
        models = {dtype: _image(dtype, base) for dtype in (torch.float64, torch.float32, *HALF)}
        shape = (4, 16, 16)
    cond = models[torch.float32].encode_prompts(["a prompt"])
    uncond = models[torch.float32].encode_prompts([""])
    return models, shape, cond, uncond


def _point(world, k: int = 45, num_steps: int = 100):
    """A noisy latent x_t at step k of a 100-step chain (t about 500), and its ᾱ and t."""
    models, shape, _, _ = world
    schedule = Schedule.from_config(models[torch.float64].scheduler_config, num_steps)
    a, t = float(schedule.alphas[k]), int(schedule.timesteps[k])
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    return a, t, a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(1, *shape, generator=g, dtype=torch.float64)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


@pytest.mark.parametrize("dtype", HALF)
def test_jacobian_and_covariance_products_match_float64(world, dtype):
    models, shape, cond, uncond = world
    a, t, x = _point(world)
    v = torch.randn(3, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rows = lambda value: torch.full((3,), value)  # noqa: E731
    guidance = {d: ClassifierFreeGuidance(models[d].predict_eps, batching.repeat(cond, 3), batching.repeat(uncond, 3), 3.0)
                for d in (torch.float64, dtype)}  # fmt: skip
    products = {d: x0_jvp(guidance[d], rows(a).double(), rows(t).long(), x.expand(3, *shape), v) for d in guidance}
    assert _relative(products[dtype], products[torch.float64]) <= 0.05  # J v
    scale = (1 - a) / a**0.5  # Cov v = (1 - ᾱ) / sqrt(ᾱ) J v: the same relative error, checked on its own
    assert _relative(scale * products[dtype], scale * products[torch.float64]) <= 0.05
    # a float64 central difference agrees with the float64 product (the reference itself is right)
    h = 1e-2
    def x0_hat(points):
        eps = guidance[torch.float64](points, rows(t).long())
        return (points - (1 - a) ** 0.5 * eps) / a**0.5

    difference = (x0_hat(x + h * v) - x0_hat(x - h * v)) / (2 * h)
    assert _relative(difference, products[torch.float64]) <= 1e-3


@pytest.mark.parametrize("dtype", HALF)
def test_top_eigenvalues_match_float32(world, dtype):
    models, shape, cond, uncond = world
    a, t, x = _point(world)
    values = {}
    for d in (torch.float32, dtype):
        guidance = ClassifierFreeGuidance(models[d].predict_eps, cond, uncond, 3.0)
        _, values[d], _ = posterior_pcs(guidance, a, t, x, n=3, max_iterations=8, tolerance=0, progress=False)
    assert torch.allclose(values[dtype], values[torch.float32], rtol=0.05)


@pytest.mark.parametrize("dtype", HALF)
def test_audio_latents_stay_float32_with_a_half_precision_unet(dtype):
    """The VAE runs in float32 and its latent is not rounded to the UNet's dtype: a half-precision
    editor inverts exactly the latent a float32 one does, and reconstructs it to float rounding."""
    import numpy as np

    from audio_edit import Audio, AudioEditor

    wave = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32) * 0.3
    clip = Audio(wave[None], 16000)
    full = AudioEditor.from_pretrained("tiny", device="cpu", dtype=torch.float32, progress=False)
    half = AudioEditor.from_pretrained("tiny", device="cpu", dtype=dtype, progress=False)
    x0 = full.invert(clip, num_steps=10, t_start=4).x0
    inv = half.invert(clip, num_steps=10, t_start=4)
    assert torch.equal(inv.x0, x0)
    assert not torch.equal(x0, x0.to(dtype).to(x0.dtype))  # which the UNet's dtype could not hold
    assert float((half.reconstruct(inv, output_type="latent") - x0).abs().max()) < 1e-6

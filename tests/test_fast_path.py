"""The GPU fast path, checked on the CPU. The loops read nothing back from the device: every method's
steps run end to end with the latents,
noise maps and conditions on PyTorch's "meta" device, where any read of a value (``float(t)``,
``.item()``, ``if tensor:``, a copy to the host) raises. On a GPU such a read would stall the
device once per step. (The schedule lives on the host as plain numbers; only the model's inputs
go to the device.) Half precision is the default on CUDA; a compiled UNet serves the loops and the
eager one the forward-mode products."""

from __future__ import annotations

import pytest
import torch
from analytic import SCHEDULER_CONFIG

from image_core.guidance import ClassifierFreeGuidance
from image_core.methods import pcs
from image_core.methods.ddim import ddim_invert
from image_core.methods.ddpm import ddpm_edit, ddpm_invert
from image_core.methods.diffedit import keep_outside
from image_core.methods.null_text import null_text_invert
from image_core.methods.sdedit import sdedit
from image_core.methods.sega import SemanticGuidance
from image_core.sampling import GaussianNoise, generators, sample
from image_core.schedule import Schedule

B, D, K = 2, 8, 10
META = torch.device("meta")


def model(x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """A denoiser that only computes (every op runs on meta tensors)."""
    return 0.1 * x_t + cond["e"].to(x_t.dtype)


def meta(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.empty(*shape, device=META, dtype=dtype)


@pytest.fixture
def world() -> tuple[Schedule, ClassifierFreeGuidance]:
    schedule = Schedule.from_config(SCHEDULER_CONFIG, 20)
    guidance = ClassifierFreeGuidance(model, {"e": meta(B, D)}, {"e": meta(B, D)}, torch.tensor([3.0, 5.0], dtype=torch.float64))
    return schedule, guidance


def test_a_read_of_a_meta_value_raises() -> None:
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(meta(1).sum())


def test_inversions_read_nothing(world) -> None:
    schedule, guidance = world
    assert ddpm_invert(guidance, schedule, meta(B, D), K, 1.0, [0, 1], 4, False).zs.device == META
    assert ddim_invert(guidance, schedule, meta(B, D), K, False).device == META


def test_edits_read_nothing(world) -> None:
    schedule, guidance = world
    x_t, zs = meta(B, D), meta(B, K, D)
    mask = torch.ones(1, D, dtype=torch.float64)
    mask[:, :3] = 0
    masked = keep_outside(mask, meta(B, K, D), meta(B, D))
    assert ddpm_edit(guidance, schedule, x_t, zs, 1.0, None, masked, False).device == META
    drift = pcs.drift(meta(B, D), torch.ones(B, K, dtype=torch.float64), range(2, 8))
    assert ddpm_edit(guidance, schedule, x_t, zs, 1.0, None, drift, False).device == META
    assert sample(guidance, schedule, x_t, schedule.last(K), 1.0, GaussianNoise(generators([0, 1])), progress=False).device == META
    assert sdedit(guidance, schedule, meta(B, D), K, 1.0, [0, 1], None, False).device == META


def test_semantic_guidance_reads_nothing(world) -> None:
    schedule, guidance = world
    concepts = SemanticGuidance(
        guidance, {"e": meta(B, 2, D)}, scale=torch.ones(B, 2), threshold=torch.full((B, 2), 0.9),
        warmup=torch.tensor([[0, 3]] * B), cooldown=torch.tensor([[6, 99]] * B),
    )  # fmt: skip
    assert sample(concepts, schedule, meta(B, D), schedule.last(K), 1.0, None, progress=False).device == META


def test_principal_components_read_only_for_their_stop(world) -> None:
    """With tolerance 0 (a fixed count) the subspace iteration reads nothing until it is done: every
    iteration's model call runs before the first read (the final angle, handed back in its info)."""
    schedule, guidance = world
    calls = []

    def counting(x_t, t, cond):
        calls.append(t.shape[0])
        return model(x_t, t, cond)

    one = ClassifierFreeGuidance(counting, {"e": meta(1, D)})
    with pytest.raises((RuntimeError, NotImplementedError)):
        pcs.posterior_pcs(one, 0.5, 500, meta(1, D), n=2, max_iterations=3, tolerance=0, progress=False)
    assert len(calls) == 3


def test_null_text_without_early_stop_reads_its_losses_once(world) -> None:
    """Without the early stop nothing is read per inner step; the losses are read once at the end
    (which is where the meta device refuses)."""
    schedule, _ = world
    calls = []

    def counting(x_t, t, cond):
        calls.append(t.shape[0])
        return model(x_t, t, cond)

    cond, start = {"e": meta(1, D)}, {"e": meta(1, D, dtype=torch.float32)}
    with pytest.raises((RuntimeError, NotImplementedError)):
        null_text_invert(counting, schedule, meta(1, D), cond, start, ("e",), 3, 7.5, inner_steps=2, early_stop=0.0, progress=False)
    assert len(calls) == 3 + 3 * (1 + 2 + 1)  # the pivot, then per step: conditional, 2 Adam steps, the kept one: all ran


@pytest.mark.parametrize("major, expected", [(9, torch.bfloat16), (8, torch.bfloat16), (7, torch.float16)])
def test_half_precision_is_the_default_on_cuda(monkeypatch: pytest.MonkeyPatch, major: int, expected: torch.dtype) -> None:
    """bfloat16 from Ampere (compute capability 8) on, where it runs in hardware; float16 before."""
    from image_core import adapters

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: (major, 0))
    assert adapters.resolve_dtype("auto", torch.device("cuda")) == expected
    assert adapters.resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_a_compiled_unet_serves_the_loops_and_the_eager_one_the_products() -> None:
    from audio_edit import AudioEditor

    editor = AudioEditor.from_pretrained("tiny", device="cpu", progress=False)
    model = editor.model
    x = torch.randn(2, model.latent_channels, 16, 16, dtype=torch.float64)
    t, cond = torch.tensor([500, 500]), model.encode_prompts(["a", ""])
    eager = model.predict_eps(x, t, cond)
    model.compile(backend="eager")  # the plumbing; "inductor", the default, compiles kernels
    calls = []
    compiled = model.compiled_unet
    model.compiled_unet = lambda *args, **kwargs: calls.append(1) or compiled(*args, **kwargs)
    assert torch.allclose(model.predict_eps(x, t, cond), eager, atol=1e-6) and len(calls) == 1
    guidance = ClassifierFreeGuidance(model.predict_eps, cond)
    product = pcs.x0_jvp(guidance, torch.full((2,), 0.5, dtype=torch.float64), t, x, torch.ones_like(x))
    assert torch.isfinite(product).all() and len(calls) == 1  # the products did not go through it


def test_inversion_batches_follow_the_free_memory_of_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from image_core import adapters

    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": 80 * 2**30)
    latent = 2 * 8 * 256 * 16 * 2  # both guidance branches of a 10 s AudioLDM2 latent in half precision
    rows = adapters.rows_in_memory(torch.device("cuda"), latent)
    assert rows == int(80 * 2**30 * adapters.MEMORY_SHARE // (adapters.UNET_ACTIVATIONS * latent))
    assert 1 <= rows <= adapters.MAX_ROWS
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": 2**20)
    assert adapters.rows_in_memory(torch.device("cuda"), latent) == 1  # never 0
    assert adapters.rows_in_memory(torch.device("cpu"), latent) == adapters.CPU_ROWS

"""Accuracy of the posterior-PC products J v = ∂x0_hat/∂x_t · v in float32, float16 and bfloat16.

Models: the tiny random-weight AudioLDM2 (``AudioModel.from_pretrained("tiny")``, latent (8, T, 16),
T = ``--frames``, 256 = a 10.24 s clip) and the tiny Stable Diffusion (latent (4, 16, 16)). Each
UNet's weights are rounded to bfloat16 once (exact in every dtype but the tiniest in float16) and
then evaluated in float64, float32, float16 and bfloat16, as in ``tests/test_precision.py``. The
point is x_t at step 45 of a 100-step chain (t about 500), the guidance CFG 3 with "a prompt" / "";
x_t stays float64 (the project's latent dtype) and is rounded to the UNet's dtype on entry.

Product methods (x0_hat = (x_t - sqrt(1 - ᾱ) ε) / sqrt(ᾱ), u = v / ‖v‖):
  (a) one-sided FD, h = 1e-3·‖x_t‖: J v ≈ (x0_hat(x_t + h u) - x0_hat(x_t)) / h · ‖v‖ (a plain finite difference);
  (b) official (AudioEditingCode pc_drift.py forward_directional): the same with h = c·sqrt(ᾱ), c = 1e-3;
  (c) forward-mode AD, ``image_core.methods.pcs.x0_jvp`` (the current method).
Columns: J·v rel. err = max over 3 random unit directions of ‖Jv - Jv_ref‖ / ‖Jv_ref‖, Jv_ref the
float64 forward-mode product of the same weights; s / call = one call giving those 3 products;
for (a) and (c): λ1..λ3 from ``posterior_pcs`` with ``--iterations`` subspace iterations (no early
stop; (a) by monkeypatching ``pcs.x0_jvp``), their max relative difference from float32's with the
same method and seed, and seconds per iteration. The float64 row is the reference (its λ diff is
float32's own error).

    python benchmarks/bench_precision.py                                # about 5 minutes on one core
    python benchmarks/bench_precision.py --frames 64 --iterations 5     # quick: under a minute
    python benchmarks/bench_precision.py --long-frames 1024             # + J·v errors on a 41 s clip (+4 min)
    python benchmarks/bench_precision.py --models "" --long-frames 1024  # that table alone
    python benchmarks/bench_precision.py --models sd --threads 2

What to expect: (c) keeps the model's precision: about 1e-6 relative error in float32, 2e-3 in
float16 and 2e-2 in bfloat16, λ within 1e-3 (float16) / 1e-2 (bfloat16) of float32's. (a) is
truncation-limited in float32 (about 1e-3), but in half precision its per-cell step (1e-3·‖x_t‖/sqrt(d),
about 1e-3) is about one rounding step of a latent cell: errors of 1 to 10, λ off by up to 10x. (b)
moves a cell by only c·sqrt(ᾱ/d) (about 1e-5): rounding-limited already in float32 (5e-2 to 1,
growing with d) and pure rounding noise in half precision (errors of 1e2 to 1e4). Cost: a (c) call
takes 2-3x an FD call on a 10 s clip but ~10x on a 41 s one in float32 (the "math" attention
kernel forward-mode AD needs is quadratic in length); float16 runs slowly on CPUs.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

try:
    from .common import print_table
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import print_table

from image_core import batching
from image_core.batching import append_dims
from image_core.guidance import ClassifierFreeGuidance
from image_core.methods import pcs
from image_core.sampling import predicted_x0
from image_core.schedule import Schedule

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
Product = Callable[[ClassifierFreeGuidance, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = {
    "a": "(a) one-sided FD, h = 1e-3·‖x_t‖",
    "b": "(b) official: one-sided FD, x_t + c·sqrt(ᾱ)·v, c = 1e-3",
    "c": "(c) forward-mode AD (x0_jvp)",
}
COLUMNS = [("model", "model"), ("dtype", "dtype"), ("method", "method"), ("err", "J·v rel. err (max of 3)"),
           ("call_s", "s / call"), ("l1", "λ1"), ("l2", "λ2"), ("l3", "λ3"), ("ldiff", "λ rel. diff vs float32"),
           ("iter_s", "s / iteration")]  # fmt: skip


def fd_product(method: str) -> Product:
    """A one-sided finite-difference J v with ``x0_jvp``'s signature: (x0_hat(x_t + h u) - x0_hat(x_t)) / h · ‖v‖,
    h = 1e-3·‖x_t‖ per row (method "a") or 1e-3·sqrt(ᾱ) (method "b"); base and probes in one call."""

    def product(guidance: ClassifierFreeGuidance, a_t: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor,
                tangents: torch.Tensor) -> torch.Tensor:  # fmt: skip
        norm = tangents.flatten(1).norm(dim=1)
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        u = tangents / append_dims(norm, tangents)
        h = 1e-3 * (x_t.flatten(1).norm(dim=1) if method == "a" else a_t.sqrt())
        h = append_dims(h.to(x_t.device, x_t.dtype), u)
        rows = x_t.shape[0]
        points = torch.cat([x_t, x_t + h * u])
        a2, t2 = a_t.repeat(2), t.repeat(2)
        base, probe = predicted_x0(a2, points, guidance.take(torch.arange(rows).repeat(2))(points, t2)).chunk(2)
        return (probe - base) / h * append_dims(norm, u)

    return product


PRODUCTS: dict[str, Product] = {"a": fd_product("a"), "b": fd_product("b"), "c": pcs.x0_jvp}


@contextmanager
def product_rule(product: Product) -> Iterator[None]:
    """``posterior_pcs`` with ``product`` in place of ``x0_jvp`` inside the ``with`` block."""
    saved = pcs.x0_jvp
    pcs.x0_jvp = product
    try:
        yield
    finally:
        pcs.x0_jvp = saved


def build(name: str, frames: int) -> tuple[dict[torch.dtype, Any], tuple[int, ...], Any, Any]:
    """(models by dtype with the same bf16-rounded UNet weights, latent shape, cond, uncond)."""
    torch.manual_seed(0)
    dtypes = (torch.float64, *DTYPES)
    if name == "audioldm2":
        from audio_edit.models import AudioModel

        base = AudioModel.from_pretrained("tiny")
        unet = base.unet.to(torch.bfloat16).to(torch.float64)
        models = {}
        for dtype in dtypes:
            models[dtype] = copy.copy(base)
            models[dtype].unet, models[dtype].dtype = copy.deepcopy(unet).to(dtype), dtype
        shape: tuple[int, ...] = (base.latent_channels, frames, 16)
    else:
        from image_core.stable_diffusion.model import StableDiffusionModel
        from image_core.stable_diffusion.tiny import tiny_stable_diffusion

        p = tiny_stable_diffusion()
        unet = p["unet"].to(torch.bfloat16).to(torch.float64)
        models = {d: StableDiffusionModel("tiny", p["tokenizer"], p["text_encoder"], copy.deepcopy(unet).to(d), p["vae"],
                                          p["scheduler_config"]) for d in dtypes}  # fmt: skip
        shape = (4, 16, 16)
    return models, shape, models[torch.float32].encode_prompts(["a prompt"]), models[torch.float32].encode_prompts([""])


def noisy_point(model: Any, shape: tuple[int, ...], k: int = 45, steps: int = 100) -> tuple[float, int, torch.Tensor]:
    """ᾱ, t and a float64 x_t (1, ...) at step k of a ``steps``-step chain (t about 500)."""
    schedule = Schedule.from_config(model.scheduler_config, steps)
    a, t = float(schedule.alphas[k]), int(schedule.timesteps[k])
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    return a, t, a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(1, *shape, generator=g, dtype=torch.float64)


def relative(x: torch.Tensor, reference: torch.Tensor) -> float:
    """max over rows of ‖x - reference‖ / ‖reference‖, in float64."""
    x, reference = x.double().flatten(1), reference.double().flatten(1)
    return float(((x - reference).norm(dim=1) / reference.norm(dim=1)).max())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def products(models: dict[torch.dtype, Any], shape: tuple[int, ...], cond: Any, uncond: Any, label: str,
             methods: str = "abc") -> list[dict[str, Any]]:  # fmt: skip
    """One row per (dtype, method): the J·v error of 3 random unit directions and the seconds of the call."""
    a, t, x = noisy_point(models[torch.float64], shape)
    v = torch.randn(3, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v = v / append_dims(v.flatten(1).norm(dim=1), v)
    a3, t3, x3 = torch.full((3,), a, dtype=torch.float64), torch.full((3,), t, dtype=torch.long), x.expand(3, *shape)

    def call(dtype: torch.dtype, method: str) -> tuple[float, torch.Tensor]:
        guidance = ClassifierFreeGuidance(models[dtype].predict_eps, batching.repeat(cond, 3), batching.repeat(uncond, 3), 3.0)
        with torch.no_grad():
            return timed(lambda: PRODUCTS[method](guidance, a3, t3, x3, v))

    ref_s, reference = call(torch.float64, "c")
    rows = [{"model": label, "dtype": "float64", "method": METHODS["c"] + " = ref", "key": "c", "call_s": ref_s}]
    for dtype in DTYPES:
        for method in methods:
            seconds, jv = call(dtype, method)
            rows.append({"model": label, "dtype": str(dtype).removeprefix("torch."), "method": METHODS[method],
                         "key": method, "err": relative(jv, reference), "call_s": seconds})  # fmt: skip
    return rows


def eigenvalues(models: dict[torch.dtype, Any], shape: tuple[int, ...], cond: Any, uncond: Any, rows: list[dict[str, Any]],
                iterations: int) -> None:  # fmt: skip
    """Adds λ1..λ3 of ``posterior_pcs`` (a fixed ``iterations``, seed 0) to the (a) and (c) rows, and the float64 row."""
    a, t, x = noisy_point(models[torch.float64], shape)
    values: dict[tuple[str, str], torch.Tensor] = {}
    for row in rows:
        method = row["key"]
        if method == "b":
            continue
        guidance = ClassifierFreeGuidance(models[getattr(torch, row["dtype"])].predict_eps, cond, uncond, 3.0)
        with torch.no_grad(), product_rule(PRODUCTS[method]):
            seconds, (_, lam, _) = timed(lambda: pcs.posterior_pcs(guidance, a, t, x, n=3, max_iterations=iterations,
                                                                   tolerance=0, seed=0, progress=False))  # fmt: skip
        values[row["dtype"], method] = lam.double()
        row.update(l1=float(lam[0]), l2=float(lam[1]), l3=float(lam[2]), iter_s=seconds / iterations)
    for row in rows:
        if (row["dtype"], row["key"]) in values and row["dtype"] != "float32":
            ours, base = values[row["dtype"], row["key"]], values["float32", row["key"]]
            row["ldiff"] = float(((ours - base).abs() / base.abs()).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default="audioldm2,sd", help="comma-separated: audioldm2, sd")
    p.add_argument("--frames", type=int, default=256, help="latent frames of the AudioLDM2 clip (256 = 10.24 s)")
    p.add_argument("--iterations", type=int, default=10, help="subspace iterations of posterior_pcs (0: skip the λ)")
    p.add_argument("--long-frames", type=int, default=0, help="also the J·v errors on an AudioLDM2 latent this long (0: no)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the "keep in float32" note of every cast UNet
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; iterations {args.iterations}\n", flush=True)
    rows: list[dict[str, Any]] = []
    for name in filter(None, args.models.split(",")):
        models, shape, cond, uncond = build(name, args.frames)
        label = f"{name} {tuple(shape)}"
        model_rows = products(models, shape, cond, uncond, label)
        if args.iterations > 0:
            eigenvalues(models, shape, cond, uncond, model_rows, args.iterations)
        rows += model_rows
    if rows:
        print_table(rows, COLUMNS)
        print("\nJ·v rel. err: against the float64 forward-mode product; λ: posterior_pcs eigenvalues "
              "(Cov = (1 - ᾱ)/sqrt(ᾱ) J); λ rel. diff: max over λ1..λ3 vs float32 with the same method.")
    if args.long_frames:
        models, shape, cond, uncond = build("audioldm2", args.long_frames)
        print(f"\nLonger clip: {args.long_frames} latent frames ({args.long_frames * 0.04:.2f} s)\n", flush=True)
        print_table(products(models, shape, cond, uncond, f"audioldm2 {tuple(shape)}"), COLUMNS[:5])


if __name__ == "__main__":
    main()

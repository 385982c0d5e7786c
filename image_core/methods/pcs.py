"""Unsupervised editing along the principal components of the posterior (Manor & Michaeli, ICML 2024).

At a timestep t the posterior covariance of the clean latent given x_t is, by Tweedie's formula,

    Cov[x0 | x_t] = (1 - ᾱ_t) / sqrt(ᾱ_t) · ∂x0_hat / ∂x_t      (σ_t² / α_t · ∂x0_hat / ∂x_t on any path),

x0_hat(x_t) = (x_t - sqrt(1 - ᾱ_t) ε(x_t)) / sqrt(ᾱ_t) the (guided) posterior mean. Its top
eigenvectors are the directions in which the model is most uncertain about the input: moving along
one changes, say, an instrument's timbre or a face's expression, with no prompt at all.

They are found by subspace iteration: n directions V, W = Cov V by Jacobian-vector products, QR
re-orthonormalisation, Rayleigh-Ritz so the eigenvalues come out sorted, and a stop once the
subspace no longer turns (largest principal angle between successive iterates below
``TOLERANCE``), with at most ``MAX_ITERATIONS`` (the paper's fixed count); ``OVERSAMPLE`` more
directions than asked for speed up the top n. A region (a 0/1 mask over the latent) restricts
them: the iteration runs on P Cov P, P the mask.

The products J v are exact (forward-mode automatic differentiation through the denoiser, all
directions of an iteration batched into as few calls as memory allows), so they keep the model's own precision: against a
float64 evaluation of the same weights, about 2e-3 relative error in float16 and 2e-2 in bfloat16
(``benchmarks/bench_precision.py``).
The official code takes a one-sided finite difference instead, moving x_t by const · sqrt(ᾱ_t)
along a unit vector (const 1e-3): in half precision that step is about one rounding step of each
latent cell, and the difference is rounding noise (relative errors of 1 to 10).

Applying PC k with an amount a at a step t moves x0_hat by a · σ_t(v_k) · v_k, where σ_t(v)² =
v^T Cov[x0 | x_t] v is the posterior variance along v at that step (ε re-derived from the moved
x0_hat and x_t, the step's noise map kept: ``drift``). An amount thus means the same number of
standard deviations at every step it acts on, as in the paper and the official ``apply_drift``,
which uses each step's own eigenvalue; where the variance has collapsed (the last steps) the
shift vanishes with it. The vectors are those of one step (the official ``--use_specific_ts_pc``);
the official default extracts new ones at every step, 50 iterations each, which costs a full
extraction per step and stops converging at low noise, where the posterior is nearly certain. ``principal_components`` measures σ_t(v_k)² at every step from the
components' step to the end of the inversion (one more product per step and component, batched
like an inversion), along the inverted trajectory the official code extracts its eigenvalues on.
The default drift acts at all of those steps (the official ``drift_end`` of -1, "to the end").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from ..progress import Progress

from ..batching import Placed, append_dims, to_like
from ..errors import InputError
from ..guidance import ClassifierFreeGuidance, Guidance
from ..sampling import Callback, Step, predicted_x0

MAX_ITERATIONS = 50  # the official code's fixed count, here an upper bound
OVERSAMPLE = 2  # directions iterated beyond the n asked for (convergence then goes as λ_{n+3} / λ_n)
TOLERANCE = 1e-4  # radians: the largest principal angle between successive subspaces at the stop
AMOUNT = 2.0  # standard deviations moved by default (the paper's evaluation)
FORMAT = "posterior-pcs/2"  # /1 files lack the per-step variances: compute those again


@dataclass(frozen=True)
class PosteriorPCs:
    """The top principal components of Cov[x0 | x_t] at one step of an inversion.

    Attributes:
        vectors: (n, ...) orthonormal eigenvectors (latent-shaped, float64), by decreasing variance.
        values: (n,) eigenvalues λ (variances along each vector).
        point: the x_t they were computed at (one latent), which identifies the inversion they fit.
        step: the index of that step among the inversion's steps (0 = x_{t_start}).
        timestep: its timestep t.
        region: 0/1 mask the PCs are restricted to (broadcastable to a latent), or None.
        info: how they were made (iterations, final angle, guidance, prompt).
        variances: (n, K - step) float64 σ_t(v_k)², the posterior variance along each vector at
            every step from ``step`` to the inversion's last (column 0 ≈ ``values``), the scale
            of a drift at each step; None where not measured (then no drift can use them).
    """

    vectors: torch.Tensor
    values: torch.Tensor
    point: torch.Tensor
    step: int
    timestep: int | float
    region: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    variances: torch.Tensor | None = None

    @property
    def count(self) -> int:
        """n, the number of components."""
        return int(self.values.shape[0])

    def check_fits(self, xts: torch.Tensor) -> None:
        """InputError unless these PCs were computed at step ``self.step`` of an inversion whose first
        latent's x_t are ``xts`` (K, ...)."""
        if not (self.step < xts.shape[0] and torch.equal(xts[self.step].cpu(), self.point.cpu())):
            raise InputError("these principal components belong to another inversion: compute them again for this one")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write safetensors (tensors) with the step, timestep and info as JSON metadata (no pickle)."""
        from safetensors.torch import save_file

        tensors = {"vectors": self.vectors, "values": self.values, "point": self.point}
        for name in ("region", "variances"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name)
        metadata = {"format": FORMAT, "step": str(self.step), "timestep": str(self.timestep), "info": json.dumps(self.info)}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, os.fspath(path), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PosteriorPCs:
        """Read a file written by ``save``; anything else is a one-line InputError."""
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format", "").startswith("posterior-pcs/") and metadata["format"] != FORMAT:
                    raise InputError(f"{path} holds principal components of an older format: compute them again")
                if metadata.get("format") != FORMAT:
                    raise InputError(f"{path} is not a file of principal components (format {metadata.get('format')!r})")
                keys = ("vectors", "values", "point", "region", "variances")
                tensors = {key: f.get_tensor(key) for key in keys if key in f.keys()}
            pcs = cls(**tensors, step=int(metadata["step"]), timestep=_time(metadata["timestep"]), info=json.loads(metadata["info"]))
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"cannot read principal components file {path}: {error}".replace("\n", " ")) from None
        if pcs.vectors.shape[0] != pcs.values.shape[0] or pcs.vectors.shape[1:] != pcs.point.shape:
            raise InputError(f"principal components file {path} is inconsistent (tensor shapes do not match)")
        return pcs


def _time(text: str) -> int | float:
    """A timestep as written by ``save``: an integer (VP path) or a float (continuous paths)."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


def x0_jvp(
    guidance: Guidance, a_t: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, tangents: torch.Tensor,
    v_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """J v = ∂x0_hat/∂x_t · v per row, by forward-mode automatic differentiation (exact up to the
    model's rounding, in any dtype).

    Args:
        guidance: B rows; a_t: (B,) float64 ᾱ (α_t²) of each row; t: (B,) timesteps; x_t: (B, ...) points.
        v_t: (B,) float64 σ_t² of each row; None: 1 - α_t² (variance-preserving).
        tangents: (B, ...) directions v (any norm).
    Returns:
        (B, ...) J v in ``x_t``'s dtype.

    Each tangent enters the model scaled to an RMS of one per cell (the product is linear in it),
    clear of half-precision underflow at any latent size. Attention runs on PyTorch's reference
    ("math") kernel here, the one whose forward derivative PyTorch implements.
    """
    import torch.autograd.forward_ad as fwAD
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rms = tangents.flatten(1).pow(2).mean(1).sqrt()
    rms = torch.where(rms > 0, rms, torch.ones_like(rms))
    with sdpa_kernel([SDPBackend.MATH]), fwAD.dual_level():
        dual = fwAD.make_dual(x_t.contiguous(), tangents / append_dims(rms, tangents))
        out = predicted_x0(a_t, dual, guidance(dual, t), v_t)
        product = fwAD.unpack_dual(out).tangent
    return product * append_dims(rms, product)


def posterior_pcs(
    guidance: ClassifierFreeGuidance,
    a_t: float,
    t: int | float,
    x_t: torch.Tensor,
    n: int = 3,
    region: torch.Tensor | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
    oversample: int = OVERSAMPLE,
    seed: int = 0,
    progress: bool = True,
    batch_size: int | None = None,
    v_t: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The top ``n`` eigenpairs of Cov[x0 | x_t] by subspace iteration (see the module docstring).

    Args:
        a_t: ᾱ (α_t²) at the timestep ``t`` of ``x_t``; v_t: σ_t² there (None: 1 - α_t²).
        guidance: one row (the source prompt's); x_t: (1, ...) one latent.
        region: 0/1 mask broadcastable to ``x_t``, or None.
        batch_size: directions per denoiser call (None: all n + oversample in one).
    Returns:
        (vectors (n, ...), values (n,), info): orthonormal eigenvectors zero outside the region,
        eigenvalues by decreasing size, and {"iterations", "angle", "oversample"}.
    """
    shape = x_t.shape[1:]
    d = x_t[0].numel()
    if region is not None and region.dim() == x_t.dim():
        region = region[0]  # a mask with a batch axis of one
    P = (torch.ones(d, dtype=x_t.dtype, device=x_t.device) if region is None else
         region.to(x_t.device, x_t.dtype).expand_as(x_t[0]).reshape(d))  # fmt: skip
    cells = d if region is None else int((region.detach().cpu() > 0).expand(shape).sum())  # counted on the host
    if not 1 <= n <= cells:
        raise InputError(f"the number of components must be between 1 and the {cells} latent cells, got {n}")
    scale = ((1 - a_t) if v_t is None else v_t) / a_t**0.5  # σ_t² / α_t

    def covariance_times(V: torch.Tensor) -> torch.Tensor:
        """P Cov P V for V (d, m): the m products in one denoiser call."""
        m = V.shape[1]
        tangents = (P[:, None] * V).T.reshape(m, *shape)
        parts = []
        for chunk in tangents.split(batch_size or m):
            rows = len(chunk)
            repeated = guidance.take(torch.zeros(rows, dtype=torch.long))
            a_rows = torch.full((rows,), a_t, dtype=torch.float64)  # on the host: cast before it moves (MPS has no float64)
            v_rows = None if v_t is None else torch.full((rows,), v_t, dtype=torch.float64)
            t_rows = torch.full((rows,), t, dtype=torch.long if isinstance(t, int) else x_t.dtype, device=x_t.device)
            parts.append(x0_jvp(repeated, a_rows, t_rows, x_t.expand(rows, *shape), chunk, v_rows))
        return scale * P[:, None] * torch.cat(parts).reshape(m, d).T

    g = torch.Generator().manual_seed(seed)
    m = min(n + oversample, cells)  # a few extra directions speed up the top n
    V, _ = torch.linalg.qr(P[:, None] * torch.randn(d, m, generator=g, dtype=torch.float64).to(x_t.device, x_t.dtype))
    angle, iterations, previous = float("inf"), 0, None

    def turn(before: torch.Tensor, after: torch.Tensor) -> float:
        """The largest principal angle between two subspaces (one number read back)."""
        return float(torch.arccos(torch.linalg.svdvals(before.T @ after).clamp(max=1).min()))

    bar = Progress(total=max_iterations, desc="principal components", disable=not progress)
    for iterations in range(1, max_iterations + 1):
        W = covariance_times(V)  # the one model call of the iteration
        values, U = torch.linalg.eigh(((V.T @ W) + (V.T @ W).T) / 2)  # Rayleigh-Ritz on span(V)
        order = values.argsort(descending=True)
        U, lam = U[:, order], values[order]
        ritz = (V @ U)[:, :n]
        bar.update(1)
        if previous is not None and tolerance > 0:  # the stop reads one number per iteration; tolerance 0 none
            angle = turn(previous, ritz)
            bar.set_postfix(angle=f"{angle:.1e}")
            if angle < tolerance:
                break
        if iterations < max_iterations:
            previous = ritz
            V, _ = torch.linalg.qr(W @ U)  # the power step: Cov span(V)
    bar.close()
    if tolerance <= 0 and previous is not None and iterations > 1:
        angle = turn(previous, ritz)
    ritz = P[:, None] * ritz  # exactly zero outside the region (QR leaves rounding there)
    signs = torch.where(ritz.sum(0) < 0, -1.0, 1.0).to(ritz.dtype)  # a fixed sign per vector
    vectors = (ritz * signs).T.reshape(n, *shape)
    return vectors, lam[:n], {"iterations": iterations, "angle": angle, "oversample": m - n}


def variances_along(
    guidance: ClassifierFreeGuidance,
    alphas: torch.Tensor,
    timesteps: torch.Tensor,
    xts: torch.Tensor,
    vectors: torch.Tensor,
    batch_size: int = 16,
    progress: bool = True,
    variances: torch.Tensor | None = None,
) -> torch.Tensor:
    """σ_t(v)² = v^T Cov[x0 | x_t] v of each vector at each of K points of a trajectory.

    Args:
        guidance: K rows, the guidance at each point (e.g. ``ClassifierFreeGuidance.at_steps``).
        alphas, timesteps: (K,) ᾱ (α_t²) and t of the points; xts: (K, ...) the points.
        variances: (K,) σ_t² of the points; None: 1 - α_t².
        vectors: (n, ...) unit vectors.
        batch_size: (point, vector) products per denoiser call.
    Returns:
        (n, K) float64 variances, clamped at zero (a learned Jacobian is not exactly symmetric).
    """
    n, K = vectors.shape[0], xts.shape[0]
    i, k = torch.arange(n).repeat_interleave(K), torch.arange(K).repeat(n)  # row r: vector i[r] at point k[r]
    out = torch.empty(n * K, dtype=xts.dtype, device=xts.device)  # read back once, at the end
    a = alphas.to(torch.float64)
    var = (1 - a) if variances is None else variances.to(torch.float64)
    for lo in Progress(range(0, n * K, batch_size), desc="variance along the components", disable=not progress):
        ip, kp = i[lo : lo + batch_size], k[lo : lo + batch_size]
        v = vectors[ip].to(xts.device, xts.dtype)
        x = xts[kp.to(xts.device)]
        jv = x0_jvp(guidance.take(kp), a[kp], timesteps[kp].to(x.device), x, v, None if variances is None else var[kp])  # ᾱ from the host (MPS has no float64)
        scale = to_like(var[kp] / a[kp].sqrt(), jv)
        out[lo : lo + len(kp)] = scale * (v * jv).flatten(1).sum(1)
    return out.view(n, K).clamp(min=0).cpu().double()


def drift(directions: torch.Tensor, sd: torch.Tensor, steps: range) -> Callback:
    """A step callback that moves x0_hat by ``sd[:, j - steps.start] · directions`` at the run's steps
    j in ``steps``, ε re-derived from it and x_t, the step's noise kept (``Step.x_s_for``).

    Args:
        directions: (rows, ...) amount · v per row (zero rows keep their steps exactly as they were).
        sd: (rows, len(steps)) the posterior standard deviation along each row's v at each step.
    """

    placed, deviations = Placed(directions), Placed(sd)

    def callback(step: Step) -> torch.Tensor:
        if step.j not in steps:
            return step.x_s
        moved = placed.like(step.x_s) * append_dims(deviations.like(step.x_s)[:, step.j - steps.start], step.x_s)
        still = (moved.flatten(1) == 0).all(1)
        return torch.where(append_dims(still, moved) > 0, step.x_s, step.x_s_for(step.x0_hat + moved))

    return callback


def directions(pcs: PosteriorPCs, pc: Sequence[int], amounts: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(pc) * len(amounts), ...) amount · v_k, PC-major (``pc`` counts from 1), and the (rows,)
    component index of each row."""
    rows = [a * pcs.vectors[k - 1] for k in pc for a in amounts]
    return torch.stack(rows), torch.tensor([k - 1 for k in pc for _ in amounts])

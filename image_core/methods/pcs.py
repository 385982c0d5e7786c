"""Unsupervised editing along the principal components of the posterior (Manor & Michaeli, ICML 2024).

At a timestep t the posterior covariance of the clean latent given x_t is, by Tweedie's formula,

    Cov[x0 | x_t] = (1 - ᾱ_t) / sqrt(ᾱ_t) · ∂x0_hat / ∂x_t,

x0_hat(x_t) = (x_t - sqrt(1 - ᾱ_t) ε(x_t)) / sqrt(ᾱ_t) the (guided) posterior mean. Its top
eigenvectors are the directions in which the model is most uncertain about the input: moving along
one changes, say, an instrument's timbre or a face's expression, with no prompt at all.

They are found by subspace iteration: n directions V, W = Cov V by Jacobian-vector products (finite
differences J v ≈ (x0_hat(x_t + h v) - x0_hat(x_t)) / h with h = ``FD_STEP`` · ||x_t||,
all directions in ONE batched denoiser call per iteration, the base point once for all;
``OVERSAMPLE`` more directions than asked for),
QR re-orthonormalisation, Rayleigh-Ritz so the
eigenvalues come out sorted, and a stop once the subspace no longer turns (largest principal angle
between successive iterates below ``TOLERANCE``), with at most ``MAX_ITERATIONS`` (the paper's fixed
count). A region (a 0/1 mask over the latent) restricts them: the iteration runs on P Cov P, P the mask.

Applying PC k with an amount a shifts x0_hat by a · sqrt(λ_k) · v_k at each step of a range of the
edit (ε re-derived from the shifted x0_hat, the step's noise map kept): ``drift``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import batching
from ..batching import Cond, append_dims
from ..errors import InputError
from ..guidance import Denoiser
from ..sampling import Callback, Step, predicted_x0

FD_STEP = 1e-3  # finite-difference step relative to ||x_t|| (the official code's constant)
MAX_ITERATIONS = 50  # the official code's fixed count, here an upper bound
OVERSAMPLE = 2  # directions iterated beyond the n asked for (convergence then goes as λ_{n+3} / λ_n)
TOLERANCE = 1e-4  # radians: the largest principal angle between successive subspaces at the stop
AMOUNT = 2.0  # standard deviations moved by default (the paper's evaluation)
FORMAT = "posterior-pcs/1"


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
        info: how they were made (iterations, final angle, finite-difference step, guidance, prompt).
    """

    vectors: torch.Tensor
    values: torch.Tensor
    point: torch.Tensor
    step: int
    timestep: int
    region: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

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
        if self.region is not None:
            tensors["region"] = self.region
        metadata = {"format": FORMAT, "step": str(self.step), "timestep": str(self.timestep), "info": json.dumps(self.info)}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, os.fspath(path), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PosteriorPCs:
        """Read a file written by ``save``; anything else is a one-line InputError."""
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise InputError(f"{path} is not a file of principal components (format {metadata.get('format')!r})")
                tensors = {key: f.get_tensor(key) for key in ("vectors", "values", "point", "region") if key in f.keys()}
            pcs = cls(**tensors, step=int(metadata["step"]), timestep=int(metadata["timestep"]), info=json.loads(metadata["info"]))
        except InputError:
            raise
        except Exception as error:
            raise InputError(f"cannot read principal components file {path}: {error}".replace("\n", " ")) from None
        if pcs.vectors.shape[0] != pcs.values.shape[0] or pcs.vectors.shape[1:] != pcs.point.shape:
            raise InputError(f"principal components file {path} is inconsistent (tensor shapes do not match)")
        return pcs


def posterior_pcs(
    denoiser: Denoiser,
    a_t: float,
    t: int,
    x_t: torch.Tensor,
    cond: Cond,
    n: int = 3,
    region: torch.Tensor | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
    fd_step: float = FD_STEP,
    oversample: int = OVERSAMPLE,
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The top ``n`` eigenpairs of Cov[x0 | x_t] by subspace iteration (see the module docstring).

    Args:
        a_t: ᾱ at the timestep ``t`` of ``x_t``.
        x_t: (1, ...) one latent; cond: one row of condition (guided or not).
        region: 0/1 mask broadcastable to ``x_t``, or None.
    Returns:
        (vectors (n, ...), values (n,), info): orthonormal eigenvectors zero outside the region,
        eigenvalues by decreasing size, and {"iterations", "angle", "fd_step"}.
    """
    shape = x_t.shape[1:]
    d = x_t[0].numel()
    if region is not None and region.dim() == x_t.dim():
        region = region[0]  # a mask with a batch axis of one
    P = (torch.ones(d, dtype=x_t.dtype, device=x_t.device) if region is None else
         region.to(x_t.device, x_t.dtype).expand_as(x_t[0]).reshape(d))  # fmt: skip
    if not 1 <= n <= int((P > 0).sum()):
        raise InputError(f"the number of components must be between 1 and the {int((P > 0).sum())} latent cells, got {n}")
    h = fd_step * float(x_t.norm())
    scale = (1 - a_t) / a_t**0.5

    a = torch.tensor(a_t, dtype=torch.float64)

    def x0_hat(points: torch.Tensor) -> torch.Tensor:
        rows = points.shape[0]
        t_rows = torch.full((rows,), t, dtype=torch.long, device=x_t.device)
        return predicted_x0(a, points, denoiser(points, t_rows, batching.repeat(cond, rows)))

    base = x0_hat(x_t)  # the shared base point: one evaluation for all iterations

    def covariance_times(V: torch.Tensor) -> torch.Tensor:
        """P Cov P V for V (d, m): the m probes in one denoiser call."""
        m = V.shape[1]
        probes = x_t + h * (P[:, None] * V).T.reshape(m, *shape)
        return scale * P[:, None] * (x0_hat(probes) - base).reshape(m, d).T / h

    g = torch.Generator().manual_seed(seed)
    m = min(n + oversample, int((P > 0).sum()))  # a few extra directions speed up the top n
    V, _ = torch.linalg.qr(P[:, None] * torch.randn(d, m, generator=g, dtype=torch.float64).to(x_t.device, x_t.dtype))
    angle, iterations, previous = float("inf"), 0, None
    bar = tqdm(total=max_iterations, desc="principal components", disable=not progress)
    for iterations in range(1, max_iterations + 1):
        W = covariance_times(V)  # the one model call of the iteration
        values, U = torch.linalg.eigh(((V.T @ W) + (V.T @ W).T) / 2)  # Rayleigh-Ritz on span(V)
        order = values.argsort(descending=True)
        U, lam = U[:, order], values[order]
        ritz = (V @ U)[:, :n]
        if previous is not None:  # how far the top-n subspace turned in this iteration
            angle = float(torch.arccos(torch.linalg.svdvals(previous.T @ ritz).clamp(max=1).min()))
        bar.update(1)
        bar.set_postfix(angle=f"{angle:.1e}")
        if angle < tolerance:
            break
        previous = ritz
        V, _ = torch.linalg.qr(W @ U)  # the power step: Cov span(V)
    bar.close()
    ritz = P[:, None] * ritz  # exactly zero outside the region (QR leaves rounding there)
    signs = torch.where(ritz.sum(0) < 0, -1.0, 1.0).to(ritz.dtype)  # a fixed sign per vector
    vectors = (ritz * signs).T.reshape(n, *shape)
    return vectors, lam[:n], {"iterations": iterations, "angle": angle, "fd_step": fd_step, "oversample": m - n}


def drift(shift: torch.Tensor, steps: range) -> Callback:
    """A step callback that moves x0_hat by ``shift`` (broadcastable to the latents, e.g. (rows, ...)
    amount · sqrt(λ_k) · v_k per row) at the run's steps j in ``steps``, ε re-derived from it and the
    step's noise kept (``Step.x_s_for``)."""

    def callback(step: Step) -> torch.Tensor:
        if step.j not in steps:
            return step.x_s
        moved = shift.to(step.x_s.device, step.x_s.dtype)
        still = (moved.flatten(1) == 0).all(1)  # rows of amount 0 keep the step exactly as it was
        return torch.where(append_dims(still, moved) > 0, step.x_s, step.x_s_for(step.x0_hat + moved))

    return callback


def shifts(pcs: PosteriorPCs, pc: Sequence[int], amounts: Sequence[float]) -> torch.Tensor:
    """(len(pc) * len(amounts), ...) shifts amount · sqrt(λ_k) · v_k, PC-major; ``pc`` counts from 1."""
    rows = [a * float(pcs.values[k - 1].clamp(min=0)) ** 0.5 * pcs.vectors[k - 1] for k in pc for a in amounts]
    return torch.stack(rows)


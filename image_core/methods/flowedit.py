"""FlowEdit (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, ICCV 2025): inversion-free editing.

No inversion: an ODE is integrated directly from the source X_src towards the edit. At each step of the
chain from ``n_max`` steps before its end to ``n_min`` steps before it (the paper's indices i = n_max ...
n_min + 1, step i going from t_i to t_{i-1}), with fresh noise N:

    Z_src = α_t X_src + σ_t N                         (the source noised to t)
    Z_tar = Z_FE + (Z_src - X_src)                    (the edit carried along the same noise)
    Z_FE <- Z_FE + mean over n_avg draws of [ D_tar(Z_tar) - D_src(Z_src) ]

where D(x) is the deterministic step of the probability-flow ODE from t to its predecessor s, driven by
the guidance's ε at x:

    D(x) = (α_s - α_t) x0_hat + (σ_s - σ_t) ε,   x0_hat = (x - σ_t ε) / α_t,

i.e. x_s - x_t of the DDIM (eta = 0) step. On the rectified-flow path (α = 1 - t, σ = t) this is
(s - t)(ε - x0_hat) = (t_{i-1} - t_i) V with V = ε - x0_hat the flow velocity the model predicts
(``FlowMatchEulerDiscreteScheduler``'s Euler step): exactly the paper's Algorithm 1. On the VP and EDM
paths it is the first-order (DDIM) step of that path's probability-flow ODE, the same construction with
that path's velocity. Z_FE starts at X_src; where ``n_min`` > 0 the last ``n_min`` steps are plain
deterministic sampling of the target from Z_tar = Z_FE + (α_t X_src + σ_t N - X_src), N fresh (the
paper's "regular sampling" phase); otherwise Z_FE after the step to the chain's end is the result.

Cost: one guidance evaluation of the source and one of the target per draw and FlowEdit step; both, and
all ``n_avg`` draws, go to the denoiser in ONE call where both guidances are classifier-free guidance of
one denoiser (source and target rows, each with its unconditional branch where it has one). With the
same guidance as source and target, D_tar - D_src is zero and the output is the input.

Several targets of one source: the target guidance may have m times the source's rows (target row r
edits source row r mod B'); Z_src, its noise and the source's ε are then computed once per source row.

Noise: source row r's draws come from its own generator (seeds), step by step, draw by draw, then the
one draw that starts the sampling phase, each a float32 N(0, I) of the latent's shape; the targets of a
source row share its noise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .. import batching
from ..errors import InputError
from ..guidance import ClassifierFreeGuidance, Guidance
from ..progress import Progress
from ..sampling import gaussian, generators, sample
from ..schedule import Schedule

# the paper's settings for Stable Diffusion 3 (its SD3_exp.yaml; FLUX_exp.yaml uses 28 steps, n_max 24,
# guidance 1.5 / 5.5 on FLUX's guidance embedding)
NUM_STEPS, N_MAX, N_MIN, N_AVG, CFG_SRC, CFG_TAR = 50, 33, 0, 1, 3.5, 13.5
MAX_AVG = 100  # draws per step, all in one model call


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_flowedit_settings(schedule: Schedule, n_max: int, n_min: int, n_avg: int) -> None:
    """Refuse, in one line, FlowEdit settings the chain cannot run: 1 <= n_max <= N (below N where the
    chain's first step is pure noise), 0 <= n_min <= n_max, 1 <= n_avg <= ``MAX_AVG``."""
    N = schedule.num_steps
    if not _is_int(n_max) or not 1 <= n_max <= N:
        raise InputError(f"n_max must be a whole number between 1 and steps ({N}), got {n_max!r}")
    if n_max == N and float(schedule.alphas[0]) == 0:
        raise InputError(f"the chain's first step is pure noise (α = 0) on this path: use an n_max below {N}")
    if not _is_int(n_min) or not 0 <= n_min <= n_max:
        raise InputError(f"n_min must be a whole number between 0 and n_max ({n_max}), got {n_min!r}")
    if not _is_int(n_avg) or not 1 <= n_avg <= MAX_AVG:
        raise InputError(f"n_avg must be a whole number from 1 to {MAX_AVG}, got {n_avg!r}")


class _Pair:
    """ε of a step's source and target rows (``draws`` x B' and ``draws`` x B, draw-major), in one
    denoiser call where both guidances are classifier-free guidance of one denoiser without per-step
    rows; else one call of each guidance per draw."""

    def __init__(self, source: Guidance, target: Guidance, rows: tuple[int, int], draws: int) -> None:
        self.source, self.target, self.rows, self.draws = source, target, rows, draws
        self.joint = (
            isinstance(source, ClassifierFreeGuidance) and isinstance(target, ClassifierFreeGuidance)
            and source.uncond_steps is None and target.uncond_steps is None and source.model == target.model
        )  # fmt: skip
        if self.joint:
            self.sides = tuple(g.take(torch.arange(n).repeat(draws)) for g, n in zip((source, target), rows))  # type: ignore[union-attr]
            self.branches = [1 if side.uncond is None else 2 for side in self.sides]
            conds = [c for side in self.sides for c in (side.cond, side.uncond) if c is not None]
            self.cond = batching.cat(conds)

    def __call__(self, z_src: torch.Tensor, z_tar: torch.Tensor, t: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε_src, ε_tar) at (draws * B', ...) and (draws * B, ...) latents; ``t`` a 0-dim timestep on their device."""
        if not self.joint:
            pairs = [
                (self.source(s, t.expand(self.rows[0]), j), self.target(z, t.expand(self.rows[1]), j))
                for s, z in zip(z_src.chunk(self.draws), z_tar.chunk(self.draws))
            ]  # fmt: skip
            return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
        inputs = [z_src] * self.branches[0] + [z_tar] * self.branches[1]
        x = torch.cat(inputs)
        out = self.sides[0].model(x, t.expand(x.shape[0]), self.cond).split([len(z) for z in inputs])
        first = self.branches[0]
        return _guided(self.sides[0], out[:first]), _guided(self.sides[1], out[first:])


def _guided(side: ClassifierFreeGuidance, out: Sequence[torch.Tensor]) -> torch.Tensor:
    """ClassifierFreeGuidance's combination of its branches' outputs (cond, then uncond)."""
    if len(out) == 1:
        return out[0]
    eps_c, eps_u = out
    return eps_u + side.scales_like(eps_c) * (eps_c - eps_u)


@torch.no_grad()
def flowedit(
    source_guidance: Guidance,
    target_guidance: Guidance,
    schedule: Schedule,
    x0: torch.Tensor,
    n_max: int = N_MAX,
    n_min: int = N_MIN,
    n_avg: int = N_AVG,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
) -> torch.Tensor:
    """FlowEdit of ``x0`` from the source guidance's description to the target's.

    Args:
        source_guidance: ε of B' rows, row r that of ``x0[r]``'s description.
        target_guidance: ε of B = m B' rows; row r edits ``x0[r mod B']`` (m targets per source row).
        schedule: the chain of N steps (any path; on the rectified-flow path this is the paper's
            algorithm, elsewhere its probability-flow ODE analogue, see the module).
        x0: (B', ...) clean source latents.
        n_max: the edit starts ``n_max`` steps before the chain's end (the paper's n_max).
        n_min: the last ``n_min`` steps are plain deterministic sampling of the target.
        n_avg: noise draws averaged per step.
        seeds: one per source row.
    Returns:
        (B, ...) edited latents: Z_FE after the chain's last step (``n_min`` 0), else the sample.
    """
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"need one seed per latent: {x0.shape[0]} latents, {len(seeds)} seeds")
    check_flowedit_settings(schedule, n_max, n_min, n_avg)
    N, shape = schedule.num_steps, x0.shape[1:]
    rows = (x0.shape[0], _rows(target_guidance, x0.shape[0]))
    m = rows[1] // rows[0]
    gens = generators(seeds)
    alphas, alphas_prev = schedule.alphas.tolist(), schedule.alphas_prev.tolist()
    variances, variances_prev = schedule.variances.tolist(), schedule.variances_prev.tolist()
    timesteps = schedule.times_like(x0)
    pair = _Pair(source_guidance, target_guidance, rows, n_avg)
    ones = [1] * len(shape)
    x_src = x0.repeat(n_avg, *ones)  # draw-major: row d * B' + r
    x_tar = x0.repeat(m, *ones)  # target row r edits source row r mod B'
    z_fe = x_tar
    for j, k in enumerate(Progress(range(N - n_max, N - n_min), desc="flowedit", disable=not progress)):
        a_t, s_t = math.sqrt(alphas[k]), math.sqrt(variances[k])
        a_s, s_s = math.sqrt(alphas_prev[k]), math.sqrt(variances_prev[k])
        noise = torch.cat([gaussian(gens, shape) for _ in range(n_avg)]).to(x0.device, x0.dtype)
        z_src = a_t * x_src + s_t * noise
        z_tar = _targets(z_src, n_avg, m) + (z_fe - x_tar).repeat(n_avg, *ones)
        eps_src, eps_tar = pair(z_src, z_tar, timesteps[k], j)

        def step(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:  # D(x): x_s - x_t of the ODE step
            x0_hat = (x - s_t * eps) / a_t
            return (a_s - a_t) * x0_hat + (s_s - s_t) * eps

        delta = step(z_tar, eps_tar) - _targets(step(z_src, eps_src), n_avg, m)
        z_fe = z_fe + delta.reshape(n_avg, rows[1], *shape).mean(0)
    if n_min == 0:
        return z_fe
    k = N - n_min
    noise = gaussian(gens, shape).to(x0.device, x0.dtype).repeat(m, *ones)
    z_tar = math.sqrt(alphas[k]) * x_tar + math.sqrt(variances[k]) * noise + (z_fe - x_tar)
    return sample(target_guidance, schedule, z_tar, range(k, N), 0.0, None, None, None, progress, "flowedit sampling")


def _rows(target: Guidance, sources: int) -> int:
    """B, the target guidance's rows: those of a classifier-free guidance (a multiple of the B' source
    rows), else B'."""
    if not isinstance(target, ClassifierFreeGuidance):
        return sources
    rows = target.rows
    if rows % sources:
        raise ValueError(f"the target rows ({rows}) must be a multiple of the source rows ({sources})")
    return rows


def _targets(source_rows: torch.Tensor, draws: int, m: int) -> torch.Tensor:
    """(draws * m * B', ...) from (draws * B', ...): each draw's B' source rows repeated for the m targets."""
    if m == 1:
        return source_rows
    per_draw = source_rows.reshape(draws, -1, *source_rows.shape[1:])
    return per_draw.repeat(1, m, *([1] * (source_rows.dim() - 1))).reshape(-1, *source_rows.shape[1:])

"""Semantic guidance (SEGA, Brack et al., NeurIPS 2023) on DDPM-inverted inputs: LEDITS (Tsaban &
Passos, 2023).

Besides (or instead of) a target prompt, concepts are added or removed, each where its noise
estimate differs most from the unconditional one. At every step, for a sample with target condition
and concepts c:

    ψ_c  = ε_c - ε_u                    (sign flipped for a concept to remove)
    γ_c  = w_c s_c M_c ⊙ ψ_c            (M_c: 1 where |ψ_c| reaches its `threshold` quantile over
                                         the latent cells of its channel, else 0; zero from the
                                         concept's cool-down step on)
    g    = Σ_c γ_c + s_m v              (the semantic guidance term)
    ε    = ε_u + s_g (ε_tar - ε_u) + g  (once the concepts are past their warm-up)
    v    ← β v + (1 - β) g              (momentum, built up from the first step, warm-up included)

as in the SEGA paper (Brack et al., Sec. 3.3) and diffusers' ``SemanticStableDiffusionPipeline``: the
momentum is updated with the guidance it was added to, so a concept that pulls the same way at
every step levels off at γ / (1 - s_m) (2γ with the LEDITS defaults), and a cooled-down concept
stops feeding it (the momentum it left keeps acting and decays). Concepts with different warm-ups: a step applies the γ_c of the concepts past
their warm-up, plus s_m v once any concept is (diffusers applies the weight-normalised mean of
those γ_c without momentum until every concept is past its warm-up). Every row of a step (target,
unconditional, each concept, of every sample) goes through the model in ONE call; the momentum
lives in the ``SemanticGuidance`` of one run, so two runs never share it.

Defaults (``Concept``): scale 10, threshold 0.95, warm-up 1 step; momentum scale 0.5, β 0.6: the
settings of the LEDITS demo (SEGA's own defaults: scale 5, threshold 0.9, warm-up 10, momentum 0.1, β 0.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import batching
from ..batching import Cond, append_dims
from ..errors import InputError
from ..guidance import ClassifierFreeGuidance

MAX_CONCEPTS = 16  # concepts of one edit: each adds one model evaluation per sample and step
MOMENTUM_SCALE = 0.5  # s_m (LEDITS demo)
MOMENTUM_BETA = 0.6  # β (LEDITS demo)


@dataclass(frozen=True)
class Concept:
    """A concept to add (or remove) by semantic guidance.

    Attributes:
        prompt: the concept, e.g. "jazz piano" or "glasses".
        scale: s_c, its guidance strength (LEDITS demo: 10; 0 disables it).
        remove: guide away from the concept instead of towards it.
        threshold: the quantile of |ψ_c| above which cells are guided, in [0, 1) (0.95: the 5 % of
            the cells of each channel where the concept differs most).
        warmup: edit steps before the concept starts guiding.
        cooldown: edit step from which it stops guiding (None: never).
        weight: w_c, a relative weight among concepts.
    """

    prompt: str
    scale: float = 10.0
    remove: bool = False
    threshold: float = 0.95
    warmup: int = 1
    cooldown: int | None = None
    weight: float = 1.0


def concept_sets(concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None) -> list[list[Concept]]:
    """K sets of concepts (one empty set without concepts), each checked."""
    if not concepts:
        return [[]]
    sets = [list(concepts)] if isinstance(concepts[0], Concept) else [list(cs) for cs in concepts]
    for concept_set in sets:
        check_concepts(concept_set)
    return sets


def check_concepts(concepts: Sequence[Concept]) -> None:
    """Refuse concepts no edit can run with, in one line each."""
    if len(concepts) > MAX_CONCEPTS:
        raise InputError(f"at most {MAX_CONCEPTS} concepts per edit (each costs one model evaluation per step), got {len(concepts)}")
    for c in concepts:
        if not isinstance(c, Concept):
            raise InputError(f"concepts must be Concept values, got {type(c).__name__}")
        if not isinstance(c.prompt, str) or not c.prompt.strip():
            raise InputError("a concept must not be empty: name what to add or remove, e.g. \"jazz piano\"")
        for name, value in (("scale", c.scale), ("weight", c.weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 100):
                raise InputError(f"concept {name}s must be between 0 and 100, got {value} for {c.prompt!r}")
        if not (isinstance(c.threshold, (int, float)) and 0 <= c.threshold < 1):
            raise InputError(f"concept thresholds must be in [0, 1), got {c.threshold} for {c.prompt!r}")
        if isinstance(c.warmup, bool) or not isinstance(c.warmup, int) or c.warmup < 0:
            raise InputError(f"concept warm-up must be a whole number of steps >= 0, got {c.warmup} for {c.prompt!r}")
        if c.cooldown is not None and (not isinstance(c.cooldown, int) or c.cooldown <= c.warmup):
            raise InputError(f"concept cool-down must be a step after its warm-up, got {c.cooldown} for {c.prompt!r}")


class SemanticGuidance:
    """Semantic guidance of N samples with C concepts each, for ONE run: target, unconditional and
    concept rows in one model call per step; keeps the momentum v. Make a new one for every run.

    Args:
        guidance: the N rows' classifier-free guidance (target, unconditional branch, scale).
        concepts: the concepts' conditions, tensors shaped (N, C, ...).
        scale: (N, C) s_c w_c, signed (negative removes a concept).
        threshold: (N, C) quantile levels in [0, 1).
        warmup, cooldown: (N, C) steps of the run from / before which each concept guides.
        momentum_scale, momentum_beta: s_m and β (``MOMENTUM_SCALE``, ``MOMENTUM_BETA`` when None).
        channel_axis: the latents' channel axis (masks are per channel), None for none.
    """

    def __init__(
        self, guidance: ClassifierFreeGuidance, concepts: Cond, scale: torch.Tensor, threshold: torch.Tensor,
        warmup: torch.Tensor, cooldown: torch.Tensor, momentum_scale: float | None = None,
        momentum_beta: float | None = None, channel_axis: int | None = 1,
    ) -> None:
        self.guidance, self.concepts, self.channel_axis = guidance, concepts, channel_axis
        self.scale, self.threshold = scale.float(), threshold.float()  # float32: MPS has no float64
        self.warmup, self.cooldown = warmup.long(), cooldown.long()
        self._placed = {name: batching.Placed(getattr(self, name)) for name in ("scale", "threshold", "warmup", "cooldown")}
        self.momentum_scale = MOMENTUM_SCALE if momentum_scale is None else momentum_scale
        self.momentum_beta = MOMENTUM_BETA if momentum_beta is None else momentum_beta
        self.momentum: torch.Tensor | None = None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, j: int = 0) -> torch.Tensor:
        N, C = self.scale.shape
        base = self.guidance
        branches = [base.cond] + ([base.uncond_at(j)] if base.uncond is not None else [])
        flat = batching.tree_map(lambda v: v.flatten(0, 1), self.concepts)  # (N C, ...), sample-major
        rows = torch.cat([x_t] * len(branches) + [x_t.repeat_interleave(C, 0)])
        ts = torch.cat([t] * len(branches) + [t.repeat_interleave(C, 0)])
        eps = base.model(rows, ts, batching.cat([*branches, flat]))
        eps_c = eps[:N]
        if base.uncond is not None:
            eps_u = eps[N : 2 * N]
            guided = eps_u + base.scales_like(eps_c) * (eps_c - eps_u)
        else:  # the target is the unconditional branch itself
            eps_u = guided = eps_c
        psi = eps[len(branches) * N :].view(N, C, *x_t.shape[1:]) - eps_u.unsqueeze(1)
        gamma_live, gamma_active, warm = self._concept_guidance(psi, j)
        momentum = torch.zeros_like(gamma_live) if self.momentum is None else self.momentum
        total = guided + gamma_active + self.momentum_scale * append_dims(warm, guided) * momentum
        self.momentum = self.momentum_beta * momentum + (1 - self.momentum_beta) * (gamma_live + self.momentum_scale * momentum)
        return total

    def _concept_guidance(self, psi: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σ_c γ_c of the concepts before their cool-down, of those guiding at step j), each
        (N, ...), and (N,) 1 where some concept is past its warm-up (the momentum acts there, after
        a cool-down too, as in diffusers)."""
        ones = [1] * (psi.dim() - 2)
        scale, threshold, warmup, cooldown = (self._placed[name].like(psi) for name in ("scale", "threshold", "warmup", "cooldown"))
        gamma = scale.view(*scale.shape, *ones) * psi  # (N, C, ...)
        by_channel = self.channel_axis is not None and psi.dim() > 3
        cells = gamma.abs().flatten(3) if by_channel else gamma.abs().flatten(2).unsqueeze(2)  # (N, C, K, n)
        cut = _quantile(cells, threshold)
        gamma = torch.where((cells >= cut.unsqueeze(-1)).view_as(gamma), gamma, torch.zeros_like(gamma))
        live, warm = (j < cooldown).to(psi.dtype), (warmup <= j).to(psi.dtype)
        active = warm * live
        return (gamma * live.view(*scale.shape, *ones)).sum(1), (gamma * active.view(*scale.shape, *ones)).sum(1), warm.amax(1)


def _quantile(values: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The q-quantile (linear interpolation, as ``torch.quantile``) along the last axis of ``values``
    (N, C, K, n), one level per (N, C) in ``q``: (N, C, K). (``torch.quantile`` takes one level for
    all rows and at most 16M values.)"""
    n = values.shape[-1]
    ordered = values.sort(dim=-1).values
    position = (q.float() * (n - 1)).view(*q.shape, 1, 1).expand(*ordered.shape[:-1], 1)  # float32: MPS has no float64
    low = position.floor().long().clamp(max=n - 1)
    frac = (position - low).to(ordered.dtype)
    high = (low + 1).clamp(max=n - 1)
    return (ordered.gather(-1, low) * (1 - frac) + ordered.gather(-1, high) * frac).squeeze(-1)

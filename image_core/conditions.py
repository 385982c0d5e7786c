"""Prompts to guidance: every prompt of an edit encoded once, laid out over the rows of a run.

Rows are prompt-major: with P prompts and ``repeats`` latents each, row i * repeats + b is prompt i
with latent b (the layout of every method's outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from . import batching
from .batching import Cond
from .guidance import ClassifierFreeGuidance, Denoiser
from .methods.sega import Concept, SemanticGuidance

NEVER = 2**62  # a step no run reaches: a concept without cool-down


class PromptEncoder(Protocol):
    def encode_prompts(self, prompts: list[str]) -> Cond:
        """One condition row per prompt; "" is the unconditional branch."""
        ...


class Prompts:
    """Builds the guidance of a run from prompts, for one model.

    Args:
        model: encodes prompts (the model adapter).
        denoiser: the ε-predictor the guidance wraps (the model's, or a windowed one).
    """

    def __init__(self, model: PromptEncoder, denoiser: Denoiser) -> None:
        self.model, self.denoiser = model, denoiser

    def guidance(
        self,
        prompts: Sequence[str],
        negative: str,
        cfgs: Sequence[float],
        repeats: int,
        uncond_steps: Mapping[str, torch.Tensor] | None = None,
        first: int = 0,
    ) -> ClassifierFreeGuidance:
        """Classifier-free guidance of len(prompts) * repeats rows, prompts encoded once.

        The model runs once per sample instead of twice when guidance is a no-op for every row
        (scale 1, or the prompt is the unconditional one), unless ``uncond_steps`` (a null-text
        inversion's optimised unconditional rows, column ``first + j`` at the run's step j) makes
        the unconditional branch a learned one.
        """
        learned = uncond_steps is not None
        single = all(cfg == 1 or (prompt == negative and not learned) for prompt, cfg in zip(prompts, cfgs))
        encoded = self.model.encode_prompts(list(prompts) if single else [*prompts, negative])
        rows = torch.arange(len(prompts)).repeat_interleave(repeats)
        cond = batching.take(encoded, rows)
        if single:
            return ClassifierFreeGuidance(self.denoiser, cond)
        uncond = batching.take(encoded, torch.full_like(rows, len(prompts)))
        scale = torch.tensor([float(c) for c in cfgs], dtype=torch.float64)[rows]
        return ClassifierFreeGuidance(self.denoiser, cond, uncond, scale, uncond_steps, first)

    def semantic(
        self,
        targets: Sequence[str],
        negative: str,
        cfgs: Sequence[float],
        repeats: int,
        sets: Sequence[Sequence[Concept]],
        channel_axis: int | None,
        uncond_steps: Mapping[str, torch.Tensor] | None = None,
    ) -> SemanticGuidance:
        """Semantic guidance of len(sets) x len(targets) x ``repeats`` rows, set-major, every prompt
        encoded once; sets with fewer concepts are padded with concepts of scale 0."""
        C = max(len(concept_set) for concept_set in sets)
        prompts = list(dict.fromkeys([*targets, negative, *(c.prompt for cs in sets for c in cs)]))
        encoded = self.model.encode_prompts(prompts)
        index = {prompt: i for i, prompt in enumerate(prompts)}
        rows = torch.tensor([index[t] for t in targets]).repeat_interleave(repeats).repeat(len(sets))
        scale = torch.tensor([float(c) for c in cfgs], dtype=torch.float64).repeat_interleave(repeats).repeat(len(sets))
        uncond = batching.take(encoded, torch.full_like(rows, index[negative]))
        guidance = ClassifierFreeGuidance(self.denoiser, batching.take(encoded, rows), uncond, scale, uncond_steps)
        padded = [[*cs, *[Concept(negative, scale=0.0, warmup=NEVER)] * (C - len(cs))] for cs in sets]
        per_row = [cs for cs in padded for _ in range(len(targets) * repeats)]  # (N, C) concepts

        def table(value: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.tensor([[value(c) for c in cs] for cs in per_row], dtype=dtype)

        concept_rows = table(lambda c: index[c.prompt], torch.long)
        return SemanticGuidance(
            guidance, batching.tree_map(lambda v: v[concept_rows], encoded),
            scale=table(lambda c: c.scale * c.weight * (-1 if c.remove else 1)), threshold=table(lambda c: c.threshold),
            warmup=table(lambda c: c.warmup, torch.long), cooldown=table(lambda c: NEVER if c.cooldown is None else c.cooldown, torch.long),
            channel_axis=channel_axis,
        )  # fmt: skip

"""Prompt-to-Prompt (Hertz et al., 2022): edit by controlling the attention of the target rows.

The source row (the source prompt, regenerating the inversion) and every target row run in the
same UNet call; during the first steps of the edit each target row attends with the source row's
probabilities instead of its own:

* **cross-attention** to the prompt's words, for steps j < ``cross_end``:
  replace (word swap, prompts of equal token length): M_target = M_source;
  refine (words added or changed): M_target[:, k] = α_k M_source[:, m(k)] + (1 - α_k) M_target[:, k],
  m the global alignment of the two token sequences, α_k = 1 where token k is aligned, 0 where new;
  reweight: the result times c_k per token (c = 1 but for the chosen words), not renormalised.
* **self-attention** of at most ``self_queries`` positions (P2P's 16² of a 64² latent), for steps
  j < ``self_end``: S_target = S_source.
* **local blend**: a mask from the chosen words' cross-attention (summed over the steps so far,
  averaged over heads and layers at one size, 3x3 max-pooled, resized to the latents, divided by
  its maximum, thresholded), united with the source row's; outside it the target rows take the
  source row's latents after every step from ``blend_start`` on.

Only the conditional rows are controlled (the unconditional branch of classifier-free guidance is
left alone, as in P2P). Steps count from the first step the edit runs, j = 0, as in the official
code, whose controller starts counting where the edit starts.

Rows of a call: whole blocks of N rows (one per window of a long clip), each block the guidance's
layout: R = P x B conditional rows (prompt-major: prompt p = 0 is the source, latent b), then R
unconditional rows when the guidance has an unconditional branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import Layer

THRESHOLD = 0.3  # of the local blend's normalised map (P2P, both official codes)
SELF_QUERIES = 16**2  # self-attention maps replaced up to this many positions (P2P: 16² of SD's 64² latent)
MAP_LEVEL = 2  # the UNet level whose word maps the blend and the pictures use: 1/4 of the latent per side (P2P's 16²)


def align(source: Sequence[int], target: Sequence[int]) -> list[int]:
    """Global alignment (Needleman-Wunsch: match +1, mismatch -1, gap 0, as P2P's refinement) of two
    token sequences: for each target token, the index of the source token it is aligned to, or -1
    for a token the target adds."""
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (1 if source[i - 1] == target[j - 1] else -1)
            score[i][j] = max(diagonal, score[i - 1][j], score[i][j - 1])
    mapped, i, j = [-1] * m, n, m
    while i > 0 and j > 0:  # trace back with P2P's preference on ties: a target token added, a source token dropped, a pair
        if score[i][j] == score[i][j - 1]:
            j -= 1
        elif score[i][j] == score[i - 1][j]:
            i -= 1
        else:
            i, j = i - 1, j - 1
            mapped[j] = i
    return mapped


def refinement(source: Sequence[int], target: Sequence[int], keys: int) -> tuple[torch.Tensor, torch.Tensor]:
    """P2P's refinement mapping over ``keys`` key positions: (index (keys,) int64, alpha (keys,)
    float32). Target token k < len(target) reads source key ``index[k]`` with weight alpha[k] (1
    where aligned, 0 where new: it keeps its own attention); later keys (padding) map to themselves."""
    mapped = align(source, target)
    index = torch.arange(keys)
    alpha = torch.ones(keys)
    for k, i in enumerate(mapped[:keys]):
        index[k] = max(i, 0)
        alpha[k] = float(i >= 0)
    return index, alpha


@dataclass(frozen=True)
class Plan:
    """What a P2P edit does to the attention of its rows.

    Attributes:
        prompts: P, the source and the targets; latents: B, inverted latents per prompt.
        unconditional: whether each block of rows carries an unconditional half.
        cross_end, self_end: the steps j < these inject cross- / self-attention.
        index, alpha: (P - 1, K) refinement of each target (None: replace, identity).
        scale: (P - 1, K) reweighting of each target's keys (None: no reweighting).
        map_queries: the number of grid positions of the layers whose word maps are kept (None: none kept).
        map_skip: positions before the grid in those layers' queries (a DiT's prepended global token), not kept.
    """

    prompts: int
    latents: int
    unconditional: bool
    cross_end: int
    self_end: int
    index: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    map_queries: int | None = None
    map_skip: int = 0

    @property
    def rows(self) -> int:
        """R, the conditional rows of a block."""
        return self.prompts * self.latents

    @property
    def block(self) -> int:
        """N, the rows of a block: R, or 2R with an unconditional half."""
        return 2 * self.rows if self.unconditional else self.rows


class AttentionControl:
    """The controller of one P2P edit (``attention.Controller``); ``step`` is set before every call
    of the model (``Stepped``). It keeps the sum of the word maps at ``plan.map_queries`` positions
    over heads, layers and steps (``maps``: (P, B, Q, K) float32), for the local blend and pictures."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.step = 0
        self.maps: torch.Tensor | None = None
        self.map_calls = 0  # layer calls summed into ``maps``
        self._placed: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _keeps(self, layer: Layer, queries: int) -> bool:
        p = self.plan
        return p.map_queries is not None and p.map_queries + p.map_skip == queries and layer.stream == "words" and layer.place != "mid"

    def wants(self, layer: Layer, queries: int) -> bool:
        p = self.plan
        edits = p.prompts > 1
        if layer.stream == "words":
            return (edits and self.step < p.cross_end) or self._keeps(layer, queries)
        return layer.stream == "self" and edits and self.step < p.self_end and queries <= SELF_QUERIES

    def __call__(self, layer: Layer, probs: torch.Tensor) -> torch.Tensor:
        p = self.plan
        n, heads, queries, keys = probs.shape
        if n % p.block:
            raise RuntimeError(f"a model call of {n} rows splits the edit's blocks of {p.block}: the source and target rows must run together")
        cond = probs.view(n // p.block, p.block, heads, queries, keys)[:, : p.rows].unflatten(1, (p.prompts, p.latents))
        if layer.stream == "words" and self._keeps(layer, queries):
            self._keep(cond)
        cross = layer.stream == "words" and self.step < p.cross_end
        if p.prompts == 1 or not (cross or layer.stream == "self"):
            return probs
        edited = probs.clone()
        cond = edited.view(n // p.block, p.block, heads, queries, keys)[:, : p.rows].unflatten(1, (p.prompts, p.latents))
        base, target = cond[:, :1], cond[:, 1:]  # (blocks, 1 | P - 1, B, heads, Q, K)
        cond[:, 1:] = self._cross(base, target) if cross else base
        return edited

    def _cross(self, base: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The targets' cross-attention from the source's (replace or refine, then reweight)."""
        p = self.plan
        if p.index is None:
            new = base.expand_as(target)
        else:
            index, alpha = self._on("index", target.device), self._on("alpha", target.device)
            mapped = torch.stack([base[:, 0, ..., index[k]] for k in range(p.prompts - 1)], dim=1)
            a = alpha[None, :, None, None, None, :]
            new = mapped * a + target * (1 - a)
        if p.scale is not None:
            new = new * self._on("scale", target.device)[None, :, None, None, None, :]
        return new

    def _on(self, name: str, device: torch.device) -> torch.Tensor:
        """A plan tensor on ``device``, moved there once."""
        key = (name, device)
        if key not in self._placed:
            self._placed[key] = getattr(self.plan, name).to(device)
        return self._placed[key]

    def _keep(self, cond: torch.Tensor) -> None:
        if cond.shape[0] != 1:
            raise RuntimeError("attention maps are kept for latents that fit one window of the model")
        mean = cond[0, ..., self.plan.map_skip :, :].mean(dim=2)  # (P, B, Q, K): heads averaged
        self.maps = mean if self.maps is None else self.maps + mean
        self.map_calls += 1

    def average(self) -> torch.Tensor:
        """(P, B, Q, K) the word maps averaged over heads, layers and steps."""
        if self.maps is None:
            raise RuntimeError("no attention maps were kept")
        return self.maps / self.map_calls


def blend_mask(maps: torch.Tensor, words: torch.Tensor, grid: tuple[int, int], size: Sequence[int], threshold: float = THRESHOLD) -> torch.Tensor:
    """P2P's local-blend mask.

    Args:
        maps: (P, B, Q, K) word maps (sums or averages: the mask is normalised), Q = h * w.
        words: (P, K) 1 at the keys of each prompt's blend words, else 0.
        grid: (h, w) of the maps; size: the latents' spatial size, (H, W), or (T,) for latents with
            one axis (a DiT's frames: h = 1, the 3 x 3 pooling then pools 3 frames).
    Returns:
        (P, B, 1, *size) bool, each row's mask united with its latent's source row (p = 0).
    """
    P, B = maps.shape[:2]
    plane = (1,) * (2 - len(size)) + tuple(size)
    m = (maps * words[:, None, None, :].to(maps)).sum(-1).reshape(P * B, 1, *grid)
    m = F.interpolate(F.max_pool2d(m, 3, 1, 1), size=plane)
    m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
    mask = (m > threshold).view(P, B, 1, *size)
    return mask | mask[:1]


def blend(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (P * B, C, *size), prompt-major: each target row takes its source row outside ``mask``
    (P, B, 1, *size): x_src + mask (x - x_src); the source rows are unchanged."""
    P, B = mask.shape[:2]
    rows = x.view(P, B, *x.shape[1:])
    source = rows[:1]
    return (source + mask.to(x.dtype) * (rows - source)).view_as(x)

"""Batch operations on conditions: nested dicts of tensors whose first dimension is the batch.

A condition (``Cond``) is opaque to the sampling loops; they only select, repeat and concatenate
rows, which these functions do for any nesting of dicts of tensors. Sequence tensors (a text
encoder's states and their 0/1 mask) may differ in length along dim 1: ``cat`` zero-pads them to
the longest, and a frontend's mask of 0 marks the padding (AudioLDM2's T5 states).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

import torch

Cond = Union[torch.Tensor, Mapping[str, "Cond"]]


def to_like(values: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """``values`` in ``like``'s dtype, on its device: cast first, then moved (MPS has no float64)."""
    return torch.as_tensor(values).to(like.dtype).to(like.device)


def append_dims(values: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Per-row coefficients broadcastable against ``like``: a scalar or (B,) -> (B or 1, 1, ..., 1), in
    ``like``'s dtype and on its device."""
    return to_like(values, like).reshape(-1, *([1] * (like.dim() - 1)))


class Placed:
    """A constant of a run (a mask, scales, directions) put where the latents are once, on first use,
    instead of at every step; ``per_row``: shaped by ``append_dims``."""

    def __init__(self, values: torch.Tensor | float, per_row: bool = False) -> None:
        self.values, self.per_row = values, per_row
        self._copies: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}

    def like(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype, like.dim())
        if key not in self._copies:
            self._copies[key] = append_dims(self.values, like) if self.per_row else to_like(self.values, like)
        return self._copies[key]


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], cond: Cond) -> Cond:
    """Apply ``fn`` to every tensor of ``cond``, keeping its structure."""
    if isinstance(cond, torch.Tensor):
        return fn(cond)
    return {key: tree_map(fn, value) for key, value in cond.items()}


def leaves(cond: Cond) -> list[torch.Tensor]:
    """The tensors of ``cond``, in order."""
    if isinstance(cond, torch.Tensor):
        return [cond]
    return [tensor for value in cond.values() for tensor in leaves(value)]


def batch_size(cond: Cond) -> int:
    """The common first dimension of the tensors of ``cond``."""
    if isinstance(cond, torch.Tensor):
        return cond.shape[0]
    sizes = {batch_size(value) for value in cond.values()}
    if len(sizes) != 1:
        raise ValueError(f"condition tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def take(cond: Cond, index: torch.Tensor | slice) -> Cond:
    """Rows ``index`` of every tensor (an index tensor or a slice)."""
    return tree_map(lambda tensor: tensor[index], cond)


def cat(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditions of the same structure along the batch; tensors that differ only in
    dim 1 (sequence length) are zero-padded there to the longest."""
    first = conds[0]
    if isinstance(first, torch.Tensor):
        tensors: list[torch.Tensor] = list(conds)  # type: ignore[arg-type]
        if first.dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
            length = max(t.shape[1] for t in tensors)
            tensors = [_pad_dim1(t, length) for t in tensors]
        return torch.cat(tensors)
    return {key: cat([cond[key] for cond in conds]) for key in first}  # type: ignore[index]


def _pad_dim1(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros appended along dim 1 up to ``length``: (B, L, ...) -> (B, length, ...)."""
    missing = length - tensor.shape[1]
    if missing == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((tensor.shape[0], missing, *tensor.shape[2:]))], dim=1)


def repeat(cond: Cond, times: int) -> Cond:
    """Each row repeated ``times`` times in place: rows (a, b) -> (a, a, b, b) for times=2."""
    return tree_map(lambda tensor: tensor.repeat_interleave(times, dim=0), cond)


def tile(cond: Cond, times: int) -> Cond:
    """The whole batch repeated ``times`` times: rows (a, b) -> (a, b, a, b) for times=2."""
    return tree_map(lambda tensor: tensor.repeat(times, *([1] * (tensor.dim() - 1))), cond)

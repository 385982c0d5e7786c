"""Long inputs in overlapping windows: a MultiDiffusion denoiser and an overlap-add map.

A model trained on windows of a fixed length runs on each window of a longer latent; the window
outputs are blended with weights that ramp up linearly over the overlaps (MultiDiffusion, Bar-Tal
et al. 2023, with smooth instead of uniform weights so that no seam is audible or visible). The
blend is a deterministic function of the input, so inversion followed by reconstruction stays
exact for any length.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch

from . import batching
from .batching import Cond
from .guidance import Denoiser


def spans(length: int, window: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[start, end) windows covering [0, length): as few windows of ``window`` as keep consecutive ones
    overlapping by about ``overlap`` (less by under ``multiple``), spread with equal strides, the
    first starting at 0 and the last ending at ``length``.

    An input up to half an overlap longer than a window runs as ONE slightly longer window (0, length)
    instead of two almost identical ones: the UNet, VAE and vocoder are convolutional and take any
    length that is a multiple of theirs, and one window costs half as much as two.

    Starts are multiples of ``multiple`` when ``length`` and ``window`` are.
    """
    if length <= window + overlap // 2:
        return [(0, length)]
    count = -(-(length - overlap) // (window - overlap))  # windows needed: strides of at most window - overlap
    room = length - window  # the last start
    starts = [i * room // (count - 1) // multiple * multiple for i in range(count - 1)] + [room]
    return [(start, start + window) for start in starts]


def blend_weights(span: tuple[int, int], length: int, overlap: int) -> torch.Tensor:
    """(end - start,) float64 weights: linear ramps over ``overlap`` at edges inside [0, length), 1 elsewhere."""
    start, end = span
    n = end - start
    ramp = (torch.arange(n, dtype=torch.float64) + 0.5) / max(overlap, 1)
    weights = torch.ones(n, dtype=torch.float64)
    if start > 0:
        weights = torch.minimum(weights, ramp)
    if end < length:
        weights = torch.minimum(weights, ramp.flip(0))
    return weights


def _along(weights: torch.Tensor, axis: int, like: torch.Tensor) -> torch.Tensor:
    shape = [1] * like.dim()
    shape[axis] = -1
    return batching.to_like(weights, like).view(shape)


class WindowedDenoiser:
    """A denoiser over latents of any length along ``axis``, from one trained on ``window``.

    All windows of all rows go through the model in batches of at most ``max_batch`` rows, so
    memory per step is bounded whatever the length.
    """

    def __init__(self, model: Denoiser, axis: int, window: int, overlap: int, max_batch: int = 8) -> None:
        self.model, self.axis, self.window, self.overlap, self.max_batch = model, axis, window, overlap, max_batch

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        length = x_t.shape[self.axis]
        windows = spans(length, self.window, self.overlap)
        if len(windows) == 1 and x_t.shape[0] <= self.max_batch:
            return self.model(x_t, t, cond)
        weights = [blend_weights(span, length, self.overlap) for span in windows]
        jobs = [(i, row) for i in range(len(windows)) for row in range(x_t.shape[0])]  # window-major
        total = torch.zeros_like(x_t)
        for lo in range(0, len(jobs), self.max_batch):  # only max_batch windows are ever cut out at once
            part = jobs[lo : lo + self.max_batch]
            rows = torch.tensor([row for _, row in part])
            pieces = torch.stack([self._cut(x_t[row], windows[i]) for i, row in part])
            eps = self.model(pieces, t[rows.to(t.device)], batching.take(cond, rows))
            for i in dict.fromkeys(i for i, _ in part):  # one add per window, all its rows at once
                at = [n for n, (w, _) in enumerate(part) if w == i]
                start, end = windows[i]
                window_view = total.narrow(self.axis, start, end - start)
                window_view.index_add_(0, rows[at].to(total.device), _along(weights[i], self.axis, eps) * eps[at])
        norm = torch.zeros(length, dtype=torch.float64)
        for (start, end), w in zip(windows, weights):
            norm[start:end] += w
        return total / _along(norm, self.axis, x_t)

    def _cut(self, row: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
        """The view of one row (no batch axis) inside ``span`` along the window axis."""
        return row.narrow(self.axis - 1, span[0], span[1] - span[0])


def windowed_map(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    axis: int,
    out_axis: int,
    ratio: Fraction,
    window: int,
    overlap: int,
    multiple: int = 1,
) -> torch.Tensor:
    """Apply a length-changing map (an encoder, a decoder, a vocoder) window by window and overlap-add.

    Args:
        fn: maps a tensor whose ``axis`` has length n to one whose ``out_axis`` has length n * ratio.
        x: input; its ``axis`` length must be a multiple of ``multiple`` (and window of it), such that
            every window start times ``ratio`` is an integer.
    Returns:
        ``fn(x)`` for inputs that fit a window; otherwise the blend of the windows' outputs.
    """
    length = x.shape[axis]
    windows = spans(length, window, overlap, multiple)
    if len(windows) == 1:
        return fn(x)
    out_length = int(length * ratio)
    total: torch.Tensor | None = None
    norm = torch.zeros(out_length, dtype=torch.float64)
    for start, end in windows:
        y = fn(x.narrow(axis, start, end - start))
        span = (int(start * ratio), int(end * ratio))
        w = blend_weights(span, out_length, int(overlap * ratio))
        if total is None:
            shape = list(y.shape)
            shape[out_axis] = out_length
            total = y.new_zeros(shape)
        total.narrow(out_axis, span[0], span[1] - span[0]).add_(_along(w, out_axis, y) * y)
        norm[span[0] : span[1]] += w
    assert total is not None
    return total / _along(norm, out_axis, total)

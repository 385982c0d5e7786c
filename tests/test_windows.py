"""Windows over long inputs: coverage, blending, bounded batches."""

from fractions import Fraction

import pytest
import torch

from image_core.windows import WindowedDenoiser, blend_weights, spans, windowed_map


@pytest.mark.parametrize("length", [5, 64, 72, 73, 100, 200, 256, 257, 1000])
@pytest.mark.parametrize("multiple", [1, 4])
def test_spans_cover_with_overlap_and_equal_strides(length, multiple):
    length = -(-length // multiple) * multiple  # the grid holds for lengths on it
    windows = spans(length, 64, 16, multiple)
    covered = torch.zeros(length, dtype=torch.bool)
    for start, end in windows:
        assert end - start == (length if len(windows) == 1 else 64)
        covered[start:end] = True
    assert covered.all() and windows[0][0] == 0 and windows[-1][1] == length
    overlaps = [e0 - s1 for (_, e0), (s1, _) in zip(windows, windows[1:])]
    assert all(o > 16 - multiple for o in overlaps)
    assert not overlaps or max(overlaps) - min(overlaps) <= multiple  # strides equal up to the start grid
    assert all(start % multiple == 0 for start, _ in windows)


def test_slightly_longer_input_runs_one_window_not_two():
    """A 10.25 s clip (260 latent frames, window 256, overlap 64) ran two windows offset by 4 frames."""
    assert spans(260, 256, 64, 4) == [(0, 260)]
    assert spans(256 + 32, 256, 64, 4) == [(0, 288)]  # up to half an overlap longer
    assert len(spans(256 + 36, 256, 64, 4)) == 2
    assert len(spans(1500, 256, 64, 4)) == 8  # a 60 s clip: as many windows as before


def test_blend_weights_ramp_inside_only():
    w = blend_weights((0, 64), 200, 16)
    assert w[0] == 1 and w[-1] < 0.1 and (w > 0).all()
    w = blend_weights((100, 164), 164, 16)
    assert w[0] < 0.1 and w[-1] == 1


def test_windowed_denoiser_equals_model_when_model_is_local():
    """A pointwise model gives the same ε whole or in windows; batches stay within max_batch."""
    seen = []

    def model(x, t, cond):
        seen.append(x.shape[0])
        return torch.tanh(x) * cond["scale"].view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) * 1e-3

    x = torch.randn(3, 2, 300, 4, dtype=torch.float64)
    t = torch.tensor([1, 500, 999])
    cond = {"scale": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    windowed = WindowedDenoiser(model, axis=2, window=64, overlap=16, max_batch=5)(x, t, cond)
    assert torch.allclose(windowed, model(x, t, cond), atol=1e-12)
    assert max(seen[:-1]) <= 5 and sum(seen[:-1]) == 3 * len(spans(300, 64, 16))


def test_windowed_denoiser_blends_smoothly():
    """A model that sees only its window (ε = window mean) gives a continuous blend, no jumps."""

    def model(x, t, cond):
        return x.mean(dim=2, keepdim=True).expand_as(x)

    x = torch.linspace(0, 1, 500, dtype=torch.float64).view(1, 1, 500, 1)
    eps = WindowedDenoiser(model, axis=2, window=100, overlap=40)(x, torch.zeros(1, dtype=torch.long), {})
    steps = eps.flatten().diff().abs()
    assert steps.max() < 0.02  # window means differ by 0.12; ramps spread that over 40 frames


def test_windowed_map_changes_length():
    def upsample(x):
        return x.repeat_interleave(4, dim=2)

    x = torch.randn(1, 1, 400, 3, dtype=torch.float64)
    out = windowed_map(upsample, x, axis=2, out_axis=2, ratio=Fraction(4), window=64, overlap=16, multiple=4)
    assert torch.allclose(out, upsample(x))

    def vocode(x):
        return x[:, 0, :, 0].repeat_interleave(10, dim=1)

    assert torch.allclose(windowed_map(vocode, x, 2, 1, Fraction(10), 64, 16), vocode(x))

"""Fréchet distance between Gaussian fits of two embedding sets (FAD on CLAP embeddings).

For sets with means ``mu1, mu2`` and covariances ``S1, S2`` (Dowson & Landau 1982; FID, Heusel et al. 2017;
FAD, Kilgour et al. 2019):

    d^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

The trace of the matrix square root is computed without forming it: with ``S1 = U diag(w) U^T``,
``(S1 S2)^(1/2)`` is similar to ``(A S2 A)^(1/2)`` where ``A = S1^(1/2) = U diag(sqrt(w)) U^T`` is
symmetric, and ``A S2 A`` is symmetric positive semi-definite, so

    tr (S1 S2)^(1/2) = sum_i sqrt(max(lambda_i(A S2 A), 0)),

two symmetric eigen-decompositions in float64 (no complex parts, no ``sqrtm`` iterations, exact for
singular covariances, which sets with fewer items than dimensions always have).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Gaussian:
    """A Gaussian fit of a set of embeddings.

    Attributes:
        mean: float64 array shaped ``(dim,)``.
        covariance: float64 array shaped ``(dim, dim)`` (unbiased, ``n - 1`` in the denominator).
        count: how many embeddings were fitted.
    """

    mean: np.ndarray
    covariance: np.ndarray
    count: int


def fit_gaussian(embeddings: np.ndarray) -> Gaussian:
    """The mean and covariance of ``embeddings`` shaped ``(n, dim)``, n >= 2 (InputError otherwise)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"a Fréchet distance needs at least 2 embeddings per set, got {x.shape[0] if x.ndim == 2 else 0}")
    return Gaussian(mean=x.mean(axis=0), covariance=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), count=x.shape[0])


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2).

    Args:
        mean1, mean2: arrays shaped ``(dim,)``.
        cov1, cov2: symmetric positive semi-definite arrays shaped ``(dim, dim)``.

    Returns:
        ``||mean1 - mean2||^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))`` as a float >= 0 (rounding below
        zero is clipped).
    """
    m1, m2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    s1, s2 = _symmetric(cov1), _symmetric(cov2)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise InputError(f"mismatched Gaussians: means {m1.shape} and {m2.shape}, covariances {s1.shape} and {s2.shape}")
    w, u = np.linalg.eigh(s1)
    root1 = (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T
    cross = np.linalg.eigvalsh(_symmetric(root1 @ s2 @ root1))
    trace_root = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    d2 = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_root)
    return max(d2, 0.0)


def frechet_between(embeddings1: np.ndarray, embeddings2: np.ndarray) -> float:
    """Fréchet distance of the Gaussian fits of two sets shaped ``(n1, dim)`` and ``(n2, dim)`` (FAD when
    the rows are audio embeddings)."""
    g1, g2 = fit_gaussian(embeddings1), fit_gaussian(embeddings2)
    if g1.mean.shape != g2.mean.shape:
        raise InputError(f"the two sets have embeddings of different sizes ({g1.mean.size} and {g2.mean.size})")
    return frechet_distance(g1.mean, g1.covariance, g2.mean, g2.covariance)


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    m = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    return (m + m.T) / 2.0

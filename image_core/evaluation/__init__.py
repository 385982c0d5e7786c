"""Evaluation of edits: CLAP, LPAPS, FAD and CQT-1 PCC for audio; CLIP score and LPIPS for images.

One module per concern: ``frechet`` (Fréchet distance, FAD), ``stats`` (means and t-intervals),
``audio`` (reading and windowing recordings), ``clap`` (CLAP embeddings), ``lpaps``, ``melody``
(CQT-1 PCC), ``images`` (CLIP score, LPIPS), ``loading`` and ``tiny`` (checkpoints, or offline
random-weight models), ``results`` (results.jsonl and folders), ``scorer`` (per-edit scores),
``table``, ``plot`` and ``cli``.
Heavy imports (torch models, librosa) happen only when a model is built or a file is read.
"""

from __future__ import annotations

from .frechet import fit_gaussian, frechet_between, frechet_distance
from .scorer import Scorer
from .stats import Summary, summarize

__all__ = ["Scorer", "Summary", "fit_gaussian", "frechet_between", "frechet_distance", "summarize"]

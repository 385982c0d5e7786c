"""Per-edit scores: :class:`Scorer` turns one finished results row into its metrics.

Audio rows get ``clap`` (CLAP similarity of the edit to its target; only rows with a target),
``lpaps`` (edit against input) and ``cqt_pcc`` (melody kept; NaN when undefined). Image rows get
``clip`` (CLIP score; only rows with a target) and ``lpips`` (edit against input).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .results import Row, row_from_dict

MODALITIES = ("audio", "image")
AUDIO_METRICS = ("clap", "lpaps", "cqt_pcc")
IMAGE_METRICS = ("clip", "lpips")

_CACHED_INPUTS = 8  # inputs whose features are kept (rows of one input usually come together)

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Scored:
    """One row's metrics and its edit's embeddings (for set metrics such as FAD).

    Attributes:
        metrics: metric name -> value.
        embeddings: float32 array shaped ``(windows, dim)`` (one row for a picture).
    """

    metrics: dict[str, float]
    embeddings: np.ndarray


class Scorer:
    """Scores results rows of one modality. Make one with :meth:`create`; reuse it for many rows."""

    modality: str = ""
    metrics: tuple[str, ...] = ()

    @staticmethod
    def create(modality: str, clap_model: str | None = None, device: str | None = None, **options: Any) -> Scorer:
        """A scorer for "audio" or "image" rows.

        Args:
            modality: "audio" or "image".
            clap_model: the text-matching model: for audio a CLAP (hub id, folder or "tiny"; None:
                ``laion/larger_clap_music``), for images a CLIP (None: ``openai/clip-vit-large-patch14``;
                "tiny" also makes LPIPS a random offline stand-in).
            device: "auto", "cpu", "cuda", "mps" (None: auto).
            options: audio: ``lpaps_normalization`` ("tokens" or "channels"); image: ``lpips_net``
                ("alex", "vgg", "squeeze", "none"; default "alex").

        Raises:
            ModelLoadError: a model did not load (one line).
        """
        if modality == "audio":
            return AudioScorer(clap_model, device, **options)
        if modality == "image":
            return ImageScorer(clap_model, device, **options)
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")

    def score(self, row: dict[str, Any]) -> dict[str, float]:
        """The metrics of one results.jsonl row with status "done" (paths relative to the current folder)."""
        return self.score_row(row_from_dict(row, None, "row")).metrics

    def score_row(self, row: Row) -> Scored:
        """The metrics and embeddings of one :class:`Row`."""
        raise NotImplementedError


class AudioScorer(Scorer):
    """CLAP, LPAPS and CQT-1 PCC of audio edits."""

    modality = "audio"
    metrics = AUDIO_METRICS

    def __init__(self, clap_model: str | None = None, device: str | None = None, lpaps_normalization: str = "tokens") -> None:
        from .clap import load_clap
        from .lpaps import NORMALIZATIONS

        if lpaps_normalization not in NORMALIZATIONS:
            raise ValueError(f"lpaps_normalization must be one of {NORMALIZATIONS}, got {lpaps_normalization!r}")
        self.clap = load_clap(clap_model, device)
        self.normalization = lpaps_normalization
        self._inputs: OrderedDict[Path, Any] = OrderedDict()
        self._texts: dict[str, np.ndarray] = {}

    def score_row(self, row: Row) -> Scored:
        from .lpaps import lpaps_windows
        from .melody import curve_pcc

        reference, reference_curve = _cached(self._inputs, row.input, lambda: self._features(row.input))
        edited, edited_curve = self._features(row.output)
        metrics = {}
        if row.target:
            if row.target not in self._texts:
                self._texts[row.target] = self.clap.text_embeddings([row.target])[0]
            metrics["clap"] = float(np.mean(edited.embeddings @ self._texts[row.target]))
        metrics["lpaps"] = float(lpaps_windows(reference.stages, edited.stages, self.normalization).mean())
        metrics["cqt_pcc"] = curve_pcc(reference_curve, edited_curve)
        return Scored(metrics, edited.embeddings)

    def embeddings_of(self, path: Path) -> np.ndarray:
        """CLAP embeddings of every window of the recording at ``path``, shaped ``(windows, dim)``."""
        from .audio import read_mono

        (wave,) = read_mono(path, self.clap.rate)
        return self.clap.audio(wave).embeddings

    def _features(self, path: Path) -> tuple[Any, np.ndarray]:
        """The CLAP features and the top-1 CQT curve of the recording at ``path``."""
        from .audio import read_mono
        from .melody import CQT_RATE, top1_cqt

        wave, low = read_mono(path, self.clap.rate, CQT_RATE)
        return self.clap.audio(wave), top1_cqt(low)


class ImageScorer(Scorer):
    """CLIP score and LPIPS of image edits."""

    modality = "image"
    metrics = IMAGE_METRICS

    def __init__(self, clap_model: str | None = None, device: str | None = None, lpips_net: str | None = None) -> None:
        from .images import DEFAULT_LPIPS, LPIPS_NETS, TINY, Lpips, load_clip

        net = lpips_net or (TINY if clap_model == TINY else DEFAULT_LPIPS)
        if net not in (*LPIPS_NETS, TINY):
            raise ValueError(f"lpips_net must be one of {LPIPS_NETS}, got {net!r}")
        self.clip = load_clip(clap_model, device)
        self.lpips = None if net == "none" else Lpips(net, self.clip.device)
        self.metrics = ("clip",) if self.lpips is None else IMAGE_METRICS
        self._inputs: OrderedDict[Path, Any] = OrderedDict()
        self._texts: dict[str, np.ndarray] = {}

    def score_row(self, row: Row) -> Scored:
        from .images import clip_score, read_image

        reference = _cached(self._inputs, row.input, lambda: read_image(row.input))
        edited = read_image(row.output)
        embedding = self.clip.image_embeddings([edited])[0]
        metrics = {}
        if row.target:
            if row.target not in self._texts:
                self._texts[row.target] = self.clip.text_embeddings([row.target])[0]
            metrics["clip"] = clip_score(embedding, self._texts[row.target])
        if self.lpips is not None:
            metrics["lpips"] = self.lpips(reference, edited)
        return Scored(metrics, embedding[None, :])

    def embeddings_of(self, path: Path) -> np.ndarray:
        """CLIP image embedding of the picture at ``path``, shaped ``(1, dim)``."""
        from .images import read_image

        return self.clip.image_embeddings([read_image(path)])


def _cached(cache: OrderedDict[K, V], key: K, make: Callable[[], V]) -> V:
    """``cache[key]``, made by ``make()`` on a miss; the least recently used of more than a few is dropped."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > _CACHED_INPUTS:
        cache.popitem(last=False)
    return value

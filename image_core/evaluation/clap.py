"""A CLAP model (transformers' ``ClapModel``) turned into the embeddings the audio metrics need.

One pass of the audio tower over a recording's windows gives both its joint embeddings (CLAP score,
FAD) and the outputs of its Swin stages (LPAPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import adapters
from .audio import windows
from .loading import load_parts

DEFAULT_CLAP = "laion/larger_clap_music"
"""The transformers port of LAION-CLAP's ``music_audioset_epoch_15_esc_90.14.pt`` (HTSAT-base audio
tower, not fused, trained on music and AudioSet), the checkpoint with which the audio paper computed
CLAP and LPAPS. ``laion/larger_clap_music_and_speech`` is the port of another checkpoint
(``music_speech_audioset_epoch_15_esc_89.98.pt``, with speech data added)."""

CLAP_HUB_IDS = ("laion/larger_clap_music", "laion/larger_clap_music_and_speech", "laion/larger_clap_general")

WINDOW_BATCH = 8
"""Windows per call of the audio tower."""


@dataclass(frozen=True)
class AudioFeatures:
    """What the CLAP audio tower makes of one recording, window by window.

    Attributes:
        embeddings: float32 array shaped ``(windows, dim)``, each row of unit length.
        stages: one tensor per Swin stage shaped ``(windows, channels, tokens)`` (float32, CPU).
    """

    embeddings: np.ndarray
    stages: list[torch.Tensor]


@dataclass
class Clap:
    """A loaded CLAP model with its feature extractor and tokenizer.

    Attributes:
        model: a ``ClapModel`` in eval mode on ``device``.
        features: its ``ClapFeatureExtractor`` (sample rate and window length).
        tokenizer: its text tokenizer.
        device: where the model runs.
        name: the model id, folder or "tiny".
    """

    model: Any
    features: Any
    tokenizer: Any
    device: torch.device
    name: str

    @property
    def rate(self) -> int:
        """Sample rate (Hz) the audio tower reads (48000 for the LAION checkpoints)."""
        return int(self.features.sampling_rate)

    @property
    def window(self) -> int:
        """Samples per window (10 s for the LAION checkpoints)."""
        return int(self.features.nb_max_samples)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Unit-length joint embeddings of ``texts``, float32 shaped ``(len(texts), dim)``."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _unit(_pooled(out)).float().cpu().numpy()

    @torch.no_grad()
    def audio(self, wave: np.ndarray) -> AudioFeatures:
        """The embeddings and Swin stage outputs of each window of ``wave`` (mono at ``rate``, shaped ``(n,)``).

        Windows are :func:`.audio.windows` of ``window`` samples; a window shorter than that is repeated
        to fill it (CLAP's own "repeatpad").
        """
        parts = windows(wave, self.window)
        embeddings, stages = [], []
        for start in range(0, len(parts), WINDOW_BATCH):
            batch = self._inputs(parts[start : start + WINDOW_BATCH])
            out = self.model.audio_model(**batch, output_hidden_states=True)
            projected = self.model.audio_projection(out.pooler_output)
            embeddings.append(_unit(projected).float().cpu())
            # hidden_states: the patch embedding, then each stage's output (batch, channels, height, width)
            stages.append([h.flatten(2).float().cpu() for h in out.hidden_states[1:]])
        joined = [torch.cat([batch[i] for batch in stages]) for i in range(len(stages[0]))]
        return AudioFeatures(embeddings=torch.cat(embeddings).numpy(), stages=joined)

    def _inputs(self, parts: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Feature-extractor inputs of some windows (none longer than ``window``), on ``device``."""
        fused = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        batch = self.features(
            [np.asarray(p, dtype=np.float32) for p in parts], sampling_rate=self.rate, return_tensors="pt",
            truncation="fusion" if fused else "rand_trunc", padding="repeatpad",
        )  # fmt: skip
        inputs = {"input_features": batch["input_features"].to(self.device)}
        if fused:  # no window is longer than the model's length (the extractor would mark one at random)
            inputs["is_longer"] = torch.zeros(len(parts), 1, dtype=torch.bool, device=self.device)
        return inputs


def load_clap(name: str | None = None, device: str | torch.device | None = None) -> Clap:
    """A CLAP model: ``name`` a hub id, a local folder saved with ``save_pretrained``, or "tiny" (random
    weights, offline); None gives :data:`DEFAULT_CLAP`.

    Raises:
        ModelLoadError: one line saying why the model did not load (never a silent fallback).
        InputError: an unknown or unavailable ``device``.
    """
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    from .tiny import tiny_clap

    name = name or DEFAULT_CLAP
    where = adapters.resolve_device(str(device) if device is not None else "auto")
    parts = [("CLAP model", ClapModel.from_pretrained), ("feature extractor", ClapFeatureExtractor.from_pretrained),
             ("tokenizer", AutoTokenizer.from_pretrained)]  # fmt: skip
    model, features, tokenizer = load_parts(name, CLAP_HUB_IDS, tiny_clap, parts)
    return Clap(model=model.to(where).eval(), features=features, tokenizer=tokenizer, device=where, name=name)


def _pooled(out: Any) -> torch.Tensor:
    """The projected embedding of a ``get_*_features`` result (a tensor in older transformers)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)

"""``AceStepEditor``: the core's ``Editor`` with ACE-Step 1.5's 48 kHz stereo codec.

waveform (any rate, channel count, length) -> 48 kHz stereo (``stable_audio_editor.to_stereo``:
mono duplicated, stereo kept, more channels folded to two) -> Oobleck latent (C, frames), 25 frames
a second; and back: the VAE decoder -> 48 kHz stereo trimmed to the input's length, resampled to the
input's rate (output "np"), or left at 48 kHz ("native").

A clip of up to ``max_frames`` latent frames (the silence latent's length: 15000 frames, 600 s, in
the diffusers conversion) is one DiT call per step. Longer clips run on overlapping windows of that
length (``image_core.windows``, as for Stable Audio Open), each window denoised as a clip of its own
(the silence context from its first frame).

Defaults, from the ``AceStepPipeline`` call's own: 8 steps (its ``num_inference_steps``; the turbo
checkpoint is made for 8), guidance 1 on the guidance-distilled (turbo) checkpoints, which the
pipeline forces, and 7 on the others (its ``guidance_scale``); the path's shift is its 3.0. The
edit running the last 6 of the 8 steps and source guidance 1 are this project's choice: DDPM
inversion on this model has no published defaults. The pipeline guides base checkpoints with
adaptive projected guidance; the core uses classifier-free guidance with the same null condition.
``defaults_for_name`` gives the same defaults from a model's name before it loads (for the command
line): the hub id and "tiny-acestep" are turbo, a local folder is what its transformer config says.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from typing import Any

import torch

from image_core.errors import InputError
from image_core.frontend import Defaults, Source
from image_core.inversion import Inversion
from image_core.request import EditRequest
from image_core.run import Run
from image_core.windows import windowed_map

from .ace_step import ACE_STEP_ID, TINY_NAME, AceStepModel, hub_name, is_ace_step
from .audio_io import Audio
from .stable_audio_editor import StableAudioCodec, StableAudioEditor, to_stereo

__all__ = ["AceStepCodec", "AceStepEditor", "defaults_for", "defaults_for_name", "is_ace_step", "to_stereo"]

STEPS, T_START, CFG_SRC, CFG_TAR, CFG_TAR_TURBO = 8, 6, 1.0, 7.0, 1.0
VAE_SECONDS = 30  # the VAE's window for long clips (overlap-added)
CONDITIONS = ("duration", "lyrics", "vocal_language")  # the model's settings a prompt is encoded with


def defaults_for(model: AceStepModel) -> Defaults:
    """The defaults of ``model``: target guidance 1 for turbo checkpoints, 7 otherwise."""
    return _defaults(model.is_turbo)


def defaults_for_name(name: str) -> Defaults:
    """The defaults of the ACE-Step model ``name`` without loading it: "tiny-acestep" is a turbo
    checkpoint, a hub id is turbo when its name says "turbo" (acestep-v15-xl-turbo-diffusers; base and
    sft checkpoints are guided); a local folder is turbo when its ``transformer/config.json`` says so
    (``is_turbo``, or ``model_version`` "turbo", as ``AceStepModel.is_turbo`` reads the loaded config)."""
    if name in (ACE_STEP_ID, TINY_NAME):
        return _defaults(True)
    repo = hub_name(name)
    if repo is not None:
        return _defaults("turbo" in repo)
    config: dict[str, Any] = {}
    path = os.path.join(name, "transformer", "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            config = json.load(f)
    return _defaults(bool(config.get("is_turbo", False) or config.get("model_version") == "turbo"))


def _defaults(turbo: bool) -> Defaults:
    return Defaults(STEPS, T_START, CFG_SRC, CFG_TAR_TURBO if turbo else CFG_TAR, "np")


class AceStepCodec(StableAudioCodec):
    """Recordings in, stereo waveforms out, for one ACE-Step 1.5 model (``StableAudioCodec``'s reading,
    resampling and trimming at 48 kHz). Reading a clip sets the duration that prompts are encoded
    with, and records it with the lyrics in the input's facts (``CONDITIONS``), so that an inversion
    is always edited under the conditions it was made with (``AceStepEditor.prepare``).

    The VAE runs on windows of ``VAE_SECONDS`` (overlap a quarter) for longer clips.
    """

    def __init__(self, model: AceStepModel, overlap: int | None = None) -> None:
        super().__init__(model, overlap)  # type: ignore[arg-type]
        self.defaults = defaults_for(model)
        self.vae_frames = max(1, round(VAE_SECONDS * model.sample_rate / model.hop_length))

    def read(self, item: str | os.PathLike[str] | Audio) -> Source:
        source = super().read(item)
        model = self.model
        model.duration = source.meta["num_samples"] / model.sample_rate  # type: ignore[attr-defined]
        source.meta.update({name: getattr(model, name) for name in CONDITIONS})
        return source

    @torch.no_grad()
    def encode(self, source: Source) -> torch.Tensor:
        hop, frames = self.model.hop_length, self.vae_frames
        wave = torch.from_numpy(source.data).unsqueeze(0)
        wave = torch.nn.functional.pad(wave, (0, -wave.shape[-1] % hop))
        return windowed_map(self.model.encode_audio, wave, 2, 2, Fraction(1, hop), frames * hop, frames // 4 * hop, hop).float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        frames = self.vae_frames
        return windowed_map(self.model.decode_latent, latent, 2, 2, Fraction(self.model.hop_length), frames, frames // 4).float()

    def region_mask(self, inv: Inversion, seconds: tuple[float, float] | None = None, hz: Any = None) -> torch.Tensor:
        if hz is not None:
            raise InputError("ACE-Step's latent has no frequency axis: give a time range only")
        return super().region_mask(inv, seconds)

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        raise InputError("mask pictures are not available for ACE-Step: give a time range")

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        raise InputError("mask pictures are not available for ACE-Step: give a time range")


class AceStepEditor(StableAudioEditor):
    """Text-based editing of 48 kHz stereo recordings with ACE-Step 1.5 on the rectified-flow path
    (the core's DDPM steps on x_t = (1 - t) x0 + t ε, each solved for its noise map). Windows,
    overlap and loading as ``StableAudioEditor``'s (``overlap``: a quarter of ``max_frames`` by
    default; ``window_batch``: window rows per DiT call), with ACE-Step's adapter and codec.
    """

    model: AceStepModel  # type: ignore[assignment]
    codec: AceStepCodec
    model_class = AceStepModel
    codec_class = AceStepCodec

    def use_conditions(self, inv: Inversion) -> None:
        """Set the model's caption duration and lyrics to those ``inv`` was made with (recorded by the
        codec), so its source prompt encodes as it did; an inversion that records none (made by
        ``invert_latent``, or an older file) is the clip's length, instrumental. The model keeps them."""
        recorded = {"duration": inv.meta.get("num_samples", 0) / self.model.sample_rate or self.model.duration,
                    "lyrics": "", "vocal_language": "en", **{k: v for k, v in inv.meta.items() if k in CONDITIONS}}  # fmt: skip
        for name in CONDITIONS:
            setattr(self.model, name, recorded[name])

    def use_request_conditions(self, request: EditRequest, inversion: Inversion | None = None) -> None:
        """The request's lyrics on the model (``image_core.runner.use_conditions``), or ``inversion``'s
        own conditions; InputError for lyrics of a source without a description (the empty source
        prompt is the unconditional branch, which takes no lyrics)."""
        if inversion is not None:
            self.use_conditions(inversion)
            return
        if request.lyrics and not request.source.strip() and request.method != "sdedit":
            raise InputError("lyrics condition the source description, and there is none: describe the clip too (e.g. its genre)")
        self.model.lyrics = request.lyrics

    def prepare(self, inv: Inversion) -> Run:
        """``LatentEditor.prepare`` under the conditions ``inv`` was made with (``use_conditions``)."""
        self.use_conditions(inv)
        return super().prepare(inv)

    @classmethod
    def from_pretrained(cls, name: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", **kwargs: Any) -> AceStepEditor:
        """Load ``ACE-Step/acestep-v15-xl-turbo-diffusers`` (cached), a local folder of its layout, or "tiny-acestep"."""
        return super().from_pretrained(name, device, dtype, **kwargs)  # type: ignore[return-value]

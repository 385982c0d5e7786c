"""Text-based editing of real recordings with AudioLDM / AudioLDM2 by edit-friendly DDPM inversion.

The names below are imported on first use, so that ``audio-edit --help`` and the audio I/O do not
wait for the model libraries to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Audio": ".audio_io",
    "load_audio": ".audio_io",
    "save_audio": ".audio_io",
    "AudioEditor": ".editor",
    "EditError": "image_core.errors",
    "InputError": "image_core.errors",
    "ModelLoadError": "image_core.errors",
    "Inversion": "image_core.inversion",
    "Concept": "image_core.methods.sega",
    "PosteriorPCs": "image_core.methods.pcs",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from image_core.errors import EditError, InputError, ModelLoadError
    from image_core.inversion import Inversion
    from image_core.methods.pcs import PosteriorPCs
    from image_core.methods.sega import Concept

    from .audio_io import Audio, load_audio, save_audio
    from .editor import AudioEditor


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)

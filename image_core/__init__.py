"""Edit-friendly DDPM inversion: a modality-agnostic core, its methods, and a Stable Diffusion frontend.

Layers, each importing only those above it in this list:

- the core: ``schedule``, ``batching``, ``guidance`` (guidance objects that own their conditions and
  parameters), ``sampling`` (the one reverse loop and its noise sources), ``inversion`` (the value),
  ``windows``, ``settings``;
- ``methods``: one paper per module (``ddpm``, ``ddim``, ``null_text``, ``sdedit``, ``diffedit``,
  ``sega``, ``pcs``);
- ``conditions`` (prompts to guidance over a run's rows), ``run`` (an inversion prepared for editing)
  and ``editing.LatentEditor``: the methods behind one model adapter, shared by both frontends;
- frontends: ``stable_diffusion`` (images) here, ``audio_edit`` (AudioLDM / AudioLDM2) beside it;
- the command-line tools and the demo.

The names below are imported on first use, so that the command-line tools start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ClassifierFreeGuidance": ".guidance",
    "Denoiser": ".guidance",
    "Guidance": ".guidance",
    "Prompts": ".conditions",
    "Run": ".run",
    "EditError": ".errors",
    "InputError": ".errors",
    "InversionMismatchError": ".errors",
    "ModelLoadError": ".errors",
    "Inversion": ".inversion",
    "InversionSettings": ".inversion",
    "LatentEditor": ".editing",
    "Schedule": ".schedule",
    "GaussianNoise": ".sampling",
    "RecordedNoise": ".sampling",
    "Step": ".sampling",
    "sample": ".sampling",
    "ddpm_edit": ".methods.ddpm",
    "ddpm_invert": ".methods.ddpm",
    "sdedit": ".methods.sdedit",
    "Concept": ".methods.sega",
    "PosteriorPCs": ".methods.pcs",
    "posterior_pcs": ".methods.pcs",
    "SemanticGuidance": ".methods.sega",
    "ddim_invert": ".methods.ddim",
    "null_text_invert": ".methods.null_text",
    "diffedit_mask": ".methods.diffedit",
    "ImageEditor": ".stable_diffusion.editor",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .editing import LatentEditor
    from .errors import EditError, InputError, InversionMismatchError, ModelLoadError
    from .conditions import Prompts
    from .guidance import ClassifierFreeGuidance, Denoiser, Guidance
    from .run import Run
    from .inversion import Inversion, InversionSettings
    from .methods.ddpm import ddpm_edit, ddpm_invert
    from .methods.ddim import ddim_invert
    from .methods.null_text import null_text_invert
    from .methods.diffedit import diffedit_mask
    from .methods.sdedit import sdedit
    from .methods.pcs import PosteriorPCs, posterior_pcs
    from .methods.sega import Concept, SemanticGuidance
    from .sampling import GaussianNoise, RecordedNoise, Step, sample
    from .schedule import Schedule
    from .stable_diffusion.editor import ImageEditor


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)

"""Edit-friendly DDPM inversion: a modality-agnostic core and a Stable Diffusion image editor."""

from .editing import LatentEditor
from .editor import ImageEditor
from .errors import EditError, InputError, InversionMismatchError, ModelLoadError
from .guidance import ClassifierFreeGuidance, Denoiser, guided
from .inversion import Inversion, InversionSettings
from .sampling import ddpm_invert, ddpm_sample, sdedit
from .schedule import Schedule

__all__ = [
    "ClassifierFreeGuidance",
    "Denoiser",
    "EditError",
    "ImageEditor",
    "InputError",
    "Inversion",
    "InversionMismatchError",
    "InversionSettings",
    "LatentEditor",
    "ModelLoadError",
    "Schedule",
    "ddpm_invert",
    "ddpm_sample",
    "guided",
    "sdedit",
]

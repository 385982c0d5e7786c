"""The Stable Diffusion frontend: model adapter, image I/O, ``ImageEditor`` and ``image-edit``."""

from .editor import ImageEditor
from .model import DEFAULT_MODEL, StableDiffusionModel

__all__ = ["DEFAULT_MODEL", "ImageEditor", "StableDiffusionModel"]

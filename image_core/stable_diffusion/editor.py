"""``ImageEditor``: invert a real image and edit it with text, with Stable Diffusion."""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from ..frontend import Editor
from .codec import ImageCodec
from .images import ImageInput
from .model import DEFAULT_MODEL, StableDiffusionModel

__all__ = ["ImageEditor", "ImageInput", "OutputType"]

OutputType = Literal["pil", "np", "pt", "latent"]


class ImageEditor(Editor):
    """Text-based editing of real images by edit-friendly DDPM inversion.

    Defaults are the image paper's (Huberman-Spiegelglas et al., CVPR 2024): 100 steps, the edit
    running the last 64 (skip 36), source guidance 3.5, target guidance 15, eta 1. Inputs: a path or
    a PIL image; outputs "pil" (images at the input's size), "np" ((N, H, W, 3) float in [0, 1]),
    "pt" ((N, 3, H, W) float in [0, 1]) or "latent" ((N, 4, h, w) float64 latents, not decoded).
    Masks and regions are (1, 1, h, w) over the latent grid: ``region_mask(inv, (x0, y0, x1, y1))``.
    """

    model: StableDiffusionModel
    codec: ImageCodec

    def __init__(self, model: StableDiffusionModel, **kwargs: Any) -> None:
        super().__init__(model, ImageCodec(model), **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name: str = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        compile: bool = False,
        **kwargs: Any,
    ) -> ImageEditor:
        """Load a hub id, a local folder (diffusers layout) or "tiny"; ``compile``: denoise with
        ``torch.compile`` of the UNet (the first call of each shape compiles); kwargs go to
        ``LatentEditor``."""
        model = StableDiffusionModel.from_pretrained(name, device, dtype)
        if compile:
            model.compile()
        return cls(model, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save the model in the diffusers layout."""
        self.model.save_pretrained(folder)

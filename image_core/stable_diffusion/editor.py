"""``ImageEditor``: invert a real image and edit it with text, with Stable Diffusion."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ..editing import LatentEditor
from ..errors import InputError
from .images import ImageInput, load_image, model_size, to_pil, to_tensor
from ..inversion import Inversion
from .model import DEFAULT_MODEL, StableDiffusionModel

OutputType = Literal["pil", "np", "pt", "latent"]


class ImageEditor(LatentEditor):
    """Text-based editing of real images by edit-friendly DDPM inversion.

    Defaults are the image paper's (Huberman-Spiegelglas et al., CVPR 2024): 100 steps, the edit
    running the last 64 (skip 36), source guidance 3.5, target guidance 15, eta 1.
    """

    model: StableDiffusionModel

    @classmethod
    def from_pretrained(
        cls,
        name: str = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        **kwargs: Any,
    ) -> ImageEditor:
        """Load a hub id, a local folder (diffusers layout) or "tiny"; kwargs go to ``LatentEditor``."""
        return cls(StableDiffusionModel.from_pretrained(name, device, dtype), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save the model in the diffusers layout."""
        self.model.save_pretrained(folder)

    def invert(
        self,
        image: ImageInput,
        source_prompt: str = "",
        num_steps: int = 100,
        t_start: int = 64,
        cfg_src: float = 3.5,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
    ) -> Inversion:
        """Invert an image (path or PIL); several seeds give several inversions (diverse edits).

        The model sees the image at about its native area (512² for SD 1.x), aspect ratio kept, sides
        multiples of 64; edits come back at the input's size.
        """
        picture = load_image(image)
        size = model_size(*picture.size, self.model.native_size, self.model.pixel_multiple)
        x0 = self.model.encode(to_tensor(picture, size))
        return self.invert_latent(x0, source_prompt, num_steps, t_start, cfg_src, eta, seed, meta={"size": list(picture.size)})

    def edit(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str],
        cfg_tar: float | Sequence[float] = 15.0,
        negative_prompt: str = "",
        output_type: OutputType = "pil",
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Edit with T target prompts; returns T * B results (row i * B + j: target i, inversion j).

        output_type: "pil" (list of images at the input's size), "np" ((N, H, W, 3) float in [0, 1]),
        "pt" ((N, 3, H, W) float in [0, 1]) or "latent" ((N, 4, h, w) float64 latents, not decoded).
        """
        return self._output(self.edit_latent(inv, target_prompt, cfg_tar, negative_prompt), inv, output_type)

    def reconstruct(self, inv: Inversion, output_type: OutputType = "pil") -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Regenerate the inverted image(s) from the noise maps (the input, up to the VAE's error)."""
        return self._output(self.reconstruct_latent(inv), inv, output_type)

    def _output(self, latents: torch.Tensor, inv: Inversion, output_type: OutputType) -> Any:
        if output_type == "latent":
            return latents
        if output_type not in ("pil", "np", "pt"):
            raise InputError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        images = to_pil(self.model.decode(latents), tuple(inv.meta["size"]))
        if output_type == "pil":
            return images
        array = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        return array if output_type == "np" else torch.from_numpy(array).permute(0, 3, 1, 2)

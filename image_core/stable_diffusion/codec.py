"""Pictures to Stable Diffusion latents and back: the image frontend's codec."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..frontend import Defaults, Source
from ..inversion import Inversion
from ..masks import load_mask, save_mask
from .images import ImageInput, load_image, model_size, to_pil, to_tensor
from .model import StableDiffusionModel

# the image paper's (Huberman-Spiegelglas et al., CVPR 2024): 100 steps, skip 36, guidance 3.5 / 15
DEFAULTS = Defaults(num_steps=100, t_start=64, cfg_src=3.5, cfg_tar=15.0, output_type="pil")


class ImageCodec:
    """Pictures in and out, for one Stable Diffusion model.

    The model sees a picture at about its native area (512² for SD 1.x), aspect ratio kept, sides
    multiples of 64; outputs come back at the input's size: "pil" (images), "np" ((N, H, W, 3)
    float in [0, 1]) or "pt" ((N, 3, H, W) float in [0, 1]).
    """

    defaults = DEFAULTS
    output_types = ("pil", "np", "pt")

    def __init__(self, model: StableDiffusionModel) -> None:
        self.model = model

    def read(self, item: ImageInput) -> Source:
        """The picture (path or PIL) at the model's size, with its own size for the outputs."""
        picture = load_image(item)
        size = model_size(*picture.size, self.model.native_size, self.model.pixel_multiple)
        return Source((picture, size), {"size": list(picture.size)})

    def latent_shape(self, source: Source) -> tuple[int, ...]:
        """(4, h, w) of the picture's latent."""
        width, height = source.data[1]
        f = self.model.vae_factor
        return (int(self.model.vae.config.latent_channels), height // f, width // f)

    def encode(self, source: Source) -> torch.Tensor:
        """(1, 4, h, w) float32 latent of the picture."""
        picture, size = source.data
        return self.model.encode(to_tensor(picture, size))

    def write(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str) -> Any:
        """Pictures at the input's size."""
        images = to_pil(self.model.decode(latents), tuple(meta["size"]))
        if output_type == "pil":
            return images
        array = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        return array if output_type == "np" else torch.from_numpy(array).permute(0, 3, 1, 2)

    def region_mask(self, inv: Inversion, box: Any) -> torch.Tensor:
        """(1, 1, h, w) mask of a box (x0, y0, x1, y1) in the input's pixels: the latent cells it touches."""
        W, H = inv.meta["size"]
        h, w = inv.x0.shape[2:]
        if len(box) != 4 or not all(np.isfinite(box)):
            raise InputError(f"a box is x0,y0,x1,y1 in pixels, got {list(box)}")
        x_lo, y_lo, x_hi, y_hi = box
        if not (0 <= x_lo < x_hi <= W and 0 <= y_lo < y_hi <= H):
            raise InputError(f"the box {list(box)} does not lie inside the {W}x{H} image")
        mask = torch.zeros(1, 1, h, w, dtype=torch.float64)
        mask[..., math.floor(y_lo * h / H) : math.ceil(y_hi * h / H), math.floor(x_lo * w / W) : math.ceil(x_hi * w / W)] = 1
        return mask

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """A black and white PNG at the input's size (white = edit); ``load_mask`` reads it back."""
        grid = mask[0, 0]
        picture = Image.fromarray((grid.numpy() * 255).astype(np.uint8), "L").resize(tuple(inv.meta["size"]), Image.NEAREST)
        save_mask(path, grid, picture)

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """(1, 1, h, w) mask from a PNG written by ``save_mask`` or painted (white = edit, any size)."""
        return load_mask(path, tuple(inv.x0.shape[2:]))[None, None]

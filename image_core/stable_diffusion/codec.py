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
from .images import ImageInput, alpha_from_text, alpha_to_text, model_size, read_picture, to_pil, to_tensor, with_alpha
from .model import StableDiffusionModel

# the image paper's (Huberman-Spiegelglas et al., CVPR 2024): 100 steps, skip 36, guidance 3.5 / 15
DEFAULTS = Defaults(num_steps=100, t_start=64, cfg_src=3.5, cfg_tar=15.0, output_type="pil")


class ImageCodec:
    """Pictures in and out, for one Stable Diffusion model.

    The model sees a picture at about its native area (512² for SD 1.x), aspect ratio kept, sides
    multiples of 64; outputs come back at the input's size: "pil" (images), "np" ((N, H, W, 3)
    float in [0, 1]) or "pt" ((N, 3, H, W) float in [0, 1]).

    Modes: the model edits 8-bit sRGB, the input's transparent parts composited on white (see
    ``images.read_picture``). An input with transparency (RGBA, LA, PA, P or grey/RGB with a
    transparent colour) keeps its alpha: "pil" outputs are then RGBA with the input's alpha channel
    (their colours taken out of the white composite, see ``images.with_alpha``), "np" and "pt" stay
    RGB (the composite on white, what the RGBA picture shows on white). Other modes come out as RGB
    (8 bits per channel). ``read`` says in ``meta["converted"]`` how the input's mode was converted
    (absent for opaque 8-bit RGB); ``meta["alpha"]`` keeps the alpha (a PNG in base64).
    """

    defaults = DEFAULTS
    output_types = ("pil", "np", "pt")

    def __init__(self, model: StableDiffusionModel) -> None:
        self.model = model

    def read(self, item: ImageInput) -> Source:
        """The picture (path or PIL) at the model's size, with its own size for the outputs.

        meta: "size" ([W, H] of the input); "converted" (one line: how the input's mode was
        converted for the model, e.g. "RGBA: the RGB channels edited, alpha kept", "16-bit grey:
        edited as 8-bit RGB"; absent for opaque 8-bit RGB); "alpha" (the input's alpha channel as
        base64 PNG text; absent when it has none).
        """
        picture = read_picture(item)
        rgb = picture.rgb
        size = model_size(*rgb.size, self.model.native_size, self.model.pixel_multiple)
        meta: dict[str, Any] = {"size": list(rgb.size)}
        if picture.converted:
            meta["converted"] = picture.converted
        if picture.alpha is not None:
            meta["alpha"] = alpha_to_text(picture.alpha)
        return Source((rgb, size), meta)

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
        """Pictures at the input's size: "pil" RGB images, RGBA with the input's alpha when
        ``meta`` has one (resized to the output when its size differs); "np" / "pt" RGB always."""
        size = tuple(meta["size"])
        images = to_pil(self.model.decode(latents), size)
        if output_type == "pil":
            if meta.get("alpha") is None:
                return images
            alpha = alpha_from_text(meta["alpha"])
            return [with_alpha(image, alpha) for image in images]
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

    def picture(self, inv: Inversion, grids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The input picture (decoded from the inversion's latent, at its size) and ``grids`` as they are."""
        image = to_pil(self.model.decode(inv.x0[:1]), tuple(inv.meta["size"]))[0]
        return np.asarray(image.convert("RGB")), grids.numpy()

"""Reading images and fitting them to a model's size."""

from __future__ import annotations

import math
import os
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

ImageInput = Union[str, os.PathLike, Image.Image]


def load_image(source: ImageInput) -> Image.Image:
    """An RGB image, EXIF rotation applied, transparency composited on white, any mode converted."""
    if isinstance(source, Image.Image):
        image = source
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise InputError(f"input file not found: {path}")
        if os.path.isdir(path):
            raise InputError(f"input is a folder, not an image file: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
                image.info.update(opened.info)
                exif = opened.getexif()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InputError(f"not a readable image: {path} (use PNG, JPEG, WebP, ...)") from None
        if exif:
            image.info["exif"] = exif.tobytes()
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    return image.convert("RGB")


def model_size(width: int, height: int, native: int, multiple: int) -> tuple[int, int]:
    """(W, H) the model sees: about native² pixels, the input's aspect ratio, sides multiples of ``multiple``."""
    scale = math.sqrt(native * native / (width * height))
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (width, height))  # type: ignore[return-value]


def to_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, H, W) float32 in [-1, 1], resized to ``size`` = (W, H) with Lanczos."""
    resized = np.asarray(image.resize(size, Image.LANCZOS), dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(resized).permute(2, 0, 1).unsqueeze(0)


def to_pil(images: torch.Tensor, size: tuple[int, int]) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> B RGB images resized to ``size`` = (W, H)."""
    array = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a).resize(size, Image.LANCZOS) for a in array]

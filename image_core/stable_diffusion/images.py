"""Reading images and fitting them to a model's size."""

from __future__ import annotations

import io
import math
import os
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..errors import InputError

ImageInput = Union[str, os.PathLike, Image.Image]

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def load_image(source: ImageInput) -> Image.Image:
    """An 8-bit sRGB image of the picture a viewer shows.

    EXIF rotation is applied; 16-bit, 32-bit integer and float images are rescaled to 8 bits (see
    ``to_8bit``); an embedded ICC profile is converted to sRGB; transparency is composited on white.
    Raises InputError for missing or unreadable files.
    """
    image = source if isinstance(source, Image.Image) else _open(os.fspath(source))
    image = ImageOps.exif_transpose(image) or image
    profile = image.info.get("icc_profile")
    image = to_8bit(image)
    alpha = _alpha(image)
    colour = _to_srgb(_without_alpha(image), profile)
    if alpha is None:
        return colour
    composed = Image.new("RGB", colour.size, (255, 255, 255))
    composed.paste(colour, mask=alpha)
    return composed


def _open(path: str) -> Image.Image:
    """The image at ``path``, fully read, with its info (ICC profile, EXIF) kept."""
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
    return image


def to_8bit(image: Image.Image) -> Image.Image:
    """Single-channel images of more than 8 bits as mode "L" with values scaled to 0..255.

    * 16-bit ("I;16", "I;16B", ...): v / 257, so 0 -> 0, 65535 -> 255 and 8-bit values stored as
      v * 257 come back exactly.
    * 32-bit integer ("I"): as 16-bit when all values lie in 0..65535 (Pillow reads 16-bit PNG and
      TIFF files into this mode too), else stretched from the data's minimum to its maximum.
    * float ("F"): values in [0, 1] are intensities (x 255); other data are stretched from its
      minimum to its maximum; NaN counts as 0.

    Other modes are returned unchanged.
    """
    if image.mode not in (*SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        in_unit_range = values.size == 0 or (values.min() >= 0 and values.max() <= 1)
        scaled = values * 255 if in_unit_range else _stretch(values)
    elif image.mode in SIXTEEN_BIT_MODES or values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
        scaled = values / 257
    else:
        scaled = _stretch(values)
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L")


def _stretch(values: np.ndarray) -> np.ndarray:
    """``values`` mapped linearly from [min, max] to [0, 255]; all 0 when they are constant."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) * (255 / (high - low))


def _alpha(image: Image.Image) -> Image.Image | None:
    """The transparency of ``image`` as an "L" mask, or None when it is opaque by its mode."""
    if image.mode in ALPHA_MODES:
        return image.convert("RGBA").getchannel("A")
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    if image.mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A")
    return None


def _without_alpha(image: Image.Image) -> Image.Image:
    """The colour channels of ``image`` in a mode an ICC transform takes (RGB, L, CMYK, LAB)."""
    if image.mode in ("RGB", "L", "CMYK", "LAB"):
        return image
    if image.mode in ("LA", "La", "1"):
        return image.convert("L")
    return image.convert("RGB")


def _to_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """``image`` converted to 8-bit sRGB through its ICC profile when it has a usable one; without
    one, or when the profile cannot be read or does not fit the mode, the values are taken as sRGB
    already (as browsers do)."""
    source = _read_profile(profile) if profile else None
    if source is not None:
        try:
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, ValueError, OSError):
            pass
    return image.convert("RGB")


def _read_profile(profile: bytes) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile, or None when it cannot be parsed."""
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError):
        return None


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

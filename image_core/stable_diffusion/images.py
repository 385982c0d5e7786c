"""Reading images and fitting them to a model's size."""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..errors import InputError

ImageInput = Union[str, os.PathLike, Image.Image]

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# keys of the ``info`` of a picture returned by ``load_image``: what ``read_picture`` of it gives back
ALPHA_KEY = "ddpm_edit.alpha"
CONVERTED_KEY = "ddpm_edit.converted"


@dataclass(frozen=True)
class Picture:
    """A picture as the model sees it, with what its outputs need back.

    rgb: 8-bit sRGB ("RGB"), transparent parts composited on white (what a viewer shows on white).
    alpha: the input's transparency ("L", the size of ``rgb``), or None when the input has none.
    converted: one line saying how the input's mode was converted, or None for an opaque 8-bit RGB input.
    """

    rgb: Image.Image
    alpha: Image.Image | None = None
    converted: str | None = None


def load_image(source: ImageInput) -> Image.Image:
    """An 8-bit sRGB image of the picture a viewer shows.

    EXIF rotation is applied; 16-bit, 32-bit integer and float images are rescaled to 8 bits (see
    ``to_8bit``); an embedded ICC profile is converted to sRGB; transparency is composited on white.
    The returned image's ``info`` keeps the input's alpha (``ALPHA_KEY``) and the note of its mode's
    conversion (``CONVERTED_KEY``) when there are any, so that ``read_picture`` (and the editor) of
    it give them back. Raises InputError for missing or unreadable files.
    """
    picture = read_picture(source)
    image = picture.rgb
    if picture.alpha is not None or picture.converted is not None:
        image = image.copy()
        image.info[ALPHA_KEY] = picture.alpha
        image.info[CONVERTED_KEY] = picture.converted
    return image


def read_picture(source: ImageInput) -> Picture:
    """The picture (path or PIL image) as ``load_image`` reads it, with its alpha and a note of its
    mode's conversion kept apart (see ``Picture``).

    Every mode is edited as 8-bit RGB; transparency, where the input has any, is kept as alpha:
    RGBA and LA (their alpha), P and PA (the palette's transparency), L, RGB and 16-bit grey with a
    transparent colour. Grey (L, 1, 16-bit I;16, 32-bit I and F), palette, CMYK and other modes are
    converted to RGB, and ``converted`` says so; it is None only for opaque 8-bit RGB.
    """
    if isinstance(source, Image.Image) and source.mode == "RGB" and CONVERTED_KEY in source.info:
        return _loaded(source)  # already read by ``load_image``
    image = source if isinstance(source, Image.Image) else _open(os.fspath(source))
    image = ImageOps.exif_transpose(image) or image
    profile = image.info.get("icc_profile")
    mode = image.mode
    alpha = _deep_alpha(image)
    image, eight_bit = _eight_bit(image)
    alpha = _alpha(image) if alpha is None else alpha
    colour = _to_srgb(_without_alpha(image), profile)
    converted = _conversion(mode, eight_bit, alpha is not None)
    if alpha is None:
        return Picture(colour, None, converted)
    composed = Image.new("RGB", colour.size, (255, 255, 255))
    composed.paste(colour, mask=alpha)
    return Picture(composed, alpha, converted)


def _loaded(image: Image.Image) -> Picture:
    """The ``Picture`` of an image ``load_image`` returned (its alpha fitted to its size)."""
    info = dict(image.info)
    alpha = info.pop(ALPHA_KEY, None)
    converted = info.pop(CONVERTED_KEY, None)
    rgb = image.copy()
    rgb.info = info
    if isinstance(alpha, Image.Image):
        alpha = alpha.convert("L")
        if alpha.size != rgb.size:
            alpha = alpha.resize(rgb.size, Image.LANCZOS)
    else:
        alpha = None
    return Picture(rgb, alpha, converted if isinstance(converted, str) else None)


def _conversion(mode: str, eight_bit: str | None, has_alpha: bool) -> str | None:
    """One line on how an input of ``mode`` is edited; None for opaque RGB (nothing converted).

    eight_bit: how ``_eight_bit`` scaled a deep image (None when it did not); has_alpha: whether the
    input's transparency is kept as alpha.
    """
    kept = ", transparency kept as alpha" if has_alpha else ""
    if mode in ("RGBA", "RGBa"):
        return "RGBA: the RGB channels edited, alpha kept"
    if mode in ("LA", "La"):
        return "grey with alpha (LA): edited as RGB, alpha kept"
    if mode == "PA":
        return "palette with alpha (PA): edited as RGB, alpha kept"
    if mode == "RGB":
        return f"RGB with a transparent colour: the RGB channels edited{kept}" if has_alpha else None
    if mode == "P":
        return f"palette{' with transparency' if has_alpha else ''} (P): edited as RGB{kept}"
    if mode == "L":
        return f"8-bit grey: edited as RGB{kept}"
    if mode == "1":
        return "1-bit black and white: edited as 8-bit RGB"
    if mode in SIXTEEN_BIT_MODES:
        return f"16-bit grey: edited as 8-bit RGB{kept}"
    if mode == "I":
        depth = "16-bit grey" if eight_bit == "16-bit" else "32-bit integer grey"
        how = "stretched from its range to" if eight_bit == "stretched" else "edited as"
        return f"{depth} ({mode}): {how} 8-bit RGB{kept}"
    if mode == "F":
        how = "stretched from its range to" if eight_bit == "stretched" else "edited as"
        return f"32-bit float grey (F): {how} 8-bit RGB"
    return f"{mode}: converted to RGB"


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
    return _eight_bit(image)[0]


def _eight_bit(image: Image.Image) -> tuple[Image.Image, str | None]:
    """``to_8bit`` of ``image`` and how it was scaled: "16-bit", "unit" (float intensities),
    "stretched", or None when the image was returned unchanged."""
    if image.mode not in (*SIXTEEN_BIT_MODES, "I", "F"):
        return image, None
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        in_unit_range = values.size == 0 or (values.min() >= 0 and values.max() <= 1)
        scaled, how = (values * 255, "unit") if in_unit_range else (_stretch(values), "stretched")
    elif image.mode in SIXTEEN_BIT_MODES or values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
        scaled, how = values / 257, "16-bit"
    else:
        scaled, how = _stretch(values), "stretched"
    return Image.fromarray(np.clip(np.round(scaled), 0, 255).astype(np.uint8), "L"), how


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


def _deep_alpha(image: Image.Image) -> Image.Image | None:
    """The transparent shade of a 16-bit or 32-bit integer grey image ("transparency" in its info)
    as an "L" mask, which its conversion to 8 bits would lose; None for other images."""
    if image.mode not in (*SIXTEEN_BIT_MODES, "I") or not isinstance(image.info.get("transparency"), int):
        return None
    opaque = np.asarray(image).astype(np.int64) != image.info["transparency"]
    return Image.fromarray(opaque.astype(np.uint8) * 255, "L")


def _without_alpha(image: Image.Image) -> Image.Image:
    """The colour channels of ``image`` in a mode an ICC transform takes (RGB, L, CMYK, LAB)."""
    if image.mode in ("RGB", "L", "CMYK", "LAB"):
        return image
    if image.mode in ("LA", "La", "1"):
        return image.convert("L")
    if image.mode in ("P", "PA"):
        return image.convert("RGBA").convert("RGB")  # not straight to RGB: Pillow warns about transparency
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


def with_alpha(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """The RGBA image of an RGB output and the input's ``alpha`` ("L", resized to the image if needed).

    The model saw the input composited on white, so the colours are taken out of that composite:
    c = (rgb - 255 (1 - a)) / a where the alpha a is above 0 (clipped to 0..255), the output's own
    colour where it is 0. Shown on white the RGBA image is the output exactly (up to the clipping
    and rounding), and on any other background there is no white fringe.
    """
    if alpha.size != image.size:
        alpha = alpha.resize(image.size, Image.LANCZOS)
    a = np.asarray(alpha.convert("L"), dtype=np.float64)[..., None] / 255
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    visible = a > 0
    colour = np.where(visible, (rgb - 255 * (1 - a)) / np.where(visible, a, 1), rgb)
    pixels = np.clip(np.round(colour), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels, np.asarray(alpha.convert("L"))]), "RGBA")


def alpha_to_text(alpha: Image.Image) -> str:
    """An "L" alpha channel as JSON-able text (base64 of a PNG), for an inversion's ``meta``."""
    buffer = io.BytesIO()
    alpha.convert("L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def alpha_from_text(text: str) -> Image.Image:
    """The "L" alpha channel ``alpha_to_text`` wrote."""
    with Image.open(io.BytesIO(base64.b64decode(text))) as opened:
        return opened.convert("L")

"""Mask files: a PNG a person can look at (or paint), from which the exact mask reads back.

A mask is a 2-D 0/1 grid over a latent's spatial cells, oriented as the input is seen (an image's
rows and columns; for audio frequency upwards and time to the right). ``save_mask`` writes a picture
(the mask itself, or a picture with the mask drawn over it) and keeps the exact grid in a PNG text
chunk; ``load_mask`` reads that chunk back, or, for any other picture, takes its grey levels resized
to the grid (white = edit) and thresholds them at one half.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import InputError

_KEY = "ddpm-edit-mask"  # PNG text chunk: "H W <hex of the packed bits>"


def save_mask(path: str | os.PathLike[str], grid: torch.Tensor, picture: Image.Image | None = None) -> None:
    """Write ``grid`` (H, W) in {0, 1} as a PNG: ``picture`` if given, else the grid in black and white
    (white = edit), with the exact grid in a text chunk."""
    bits = grid.detach().cpu().numpy() > 0.5
    H, W = bits.shape
    info = PngImagePlugin.PngInfo()
    info.add_text(_KEY, f"{H} {W} {np.packbits(bits.reshape(-1)).tobytes().hex()}")
    image = picture if picture is not None else Image.fromarray((bits * 255).astype(np.uint8), "L")
    image.save(os.fspath(path), format="PNG", pnginfo=info)


def load_mask(path: str | os.PathLike[str], shape: tuple[int, int]) -> torch.Tensor:
    """The (H, W) = ``shape`` float64 0/1 grid of a mask file (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            stored = image.info.get(_KEY) if isinstance(image.info.get(_KEY), str) else None
            grey = np.asarray(image.convert("L").resize(shape[::-1], Image.BILINEAR), dtype=np.float64) / 255
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"not a readable mask picture: {path} (use a PNG, white where to edit)") from None
    if stored:
        H, W, data = stored.split(" ")
        if (int(H), int(W)) != tuple(shape):
            raise InputError(f"the mask in {path} is {H}x{W} cells, this input needs {shape[0]}x{shape[1]}: make it again")
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(data), np.uint8))[: int(H) * int(W)]
        return torch.from_numpy(bits.reshape(shape).astype(np.float64))
    return torch.from_numpy((grey > 0.5).astype(np.float64))

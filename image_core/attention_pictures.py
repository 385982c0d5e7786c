"""Word maps as pictures: one panel per token, the map drawn over the input (a picture, or a
spectrogram with time on x and low frequencies at the bottom), one row per prompt."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

PANEL = 128  # panel height in pixels
OPACITY = 0.6  # of the map over the input


def _colour(values: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8 through the magma colour map."""
    from matplotlib import colormaps

    return (colormaps["magma"](values)[..., :3] * 255).astype(np.uint8)


def panel(background: np.ndarray, grid: np.ndarray, label: str) -> Image.Image:
    """One token: ``grid`` (h, w), normalised to its maximum, over ``background`` (H, W, 3) uint8."""
    height = PANEL
    width = max(1, round(background.shape[1] * height / background.shape[0]))
    base = Image.fromarray(background).convert("RGB").resize((width, height), Image.BILINEAR)
    peak = float(grid.max())
    values = grid / peak if peak > 0 else np.zeros_like(grid)
    heat = Image.fromarray(_colour(values)).resize((width, height), Image.BILINEAR)
    mixed = Image.blend(base, heat, OPACITY)
    out = Image.new("RGB", (width, height + 16), "white")
    out.paste(mixed, (0, 0))
    ImageDraw.Draw(out).text((2, height + 2), label[:max(1, width // 6)], fill="black")
    return out


def draw(
    path: str | os.PathLike[str],
    background: np.ndarray,
    prompts: list[str],
    tokens: list[list[str]],
    maps: np.ndarray,
) -> None:
    """Write a PNG: row p shows prompt p's tokens (``tokens[p]``, the key positions 0.. of its
    condition; a key labelled "" is not drawn), each panel its map ``maps[p, :, :, k]`` over ``background``.

    Args:
        background: (H, W, 3) uint8, the input in display orientation.
        maps: (P, h, w, K) in the same orientation.
    """
    rows = []
    for p, prompt in enumerate(prompts):
        panels = [panel(background, maps[p, :, :, k], token) for k, token in enumerate(tokens[p][: maps.shape[-1]]) if token]
        width = sum(image.width for image in panels)
        row = Image.new("RGB", (max(width, 8 * len(prompt), 8), (panels[0].height if panels else 0) + 18), "white")
        ImageDraw.Draw(row).text((2, 2), prompt, fill="black")
        x = 0
        for image in panels:
            row.paste(image, (x, 18))
            x += image.width
        rows.append(row)
    sheet = Image.new("RGB", (max(row.width for row in rows), sum(row.height for row in rows)), "white")
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    sheet.save(os.fspath(path), format="PNG")

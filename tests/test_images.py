"""Reading images: bit depths above 8, embedded ICC profiles, transparency."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_core.stable_diffusion.images import load_image

# Adobe RGB (1998): its primaries adapted to the D50 connection space (Bradford), columns r, g, b,
# and its gamma 563/256 as the ICC u8Fixed8 number 0x0233
ADOBE_TO_XYZ_D50 = np.array([[0.6097559, 0.2052401, 0.1492240], [0.3111242, 0.6256560, 0.0632197], [0.0194811, 0.0608902, 0.7448387]])
ADOBE_GAMMA = 563 / 256
# sRGB adapted to D50 in the same way, as littleCMS builds its sRGB profile
SRGB_TO_XYZ_D50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]])
D50 = (0.9642, 1.0, 0.8249)


def gradient16(width: int = 256, height: int = 4) -> np.ndarray:
    """(height, width) uint16 ramp from 0 to 65535 across the row."""
    row = np.round(np.linspace(0, 65535, width)).astype(np.uint16)
    return np.tile(row, (height, 1))


def assert_grey(image: Image.Image, expected: np.ndarray) -> None:
    """``image`` is RGB, each channel equal to ``expected`` (uint8, (H, W))."""
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("TIFF", ".tif")])
def test_16_bit_greyscale_files_keep_their_tones(tmp_path: Path, fmt: str, suffix: str) -> None:
    values = gradient16()
    path = tmp_path / f"ramp{suffix}"
    Image.fromarray(values).save(path, format=fmt)
    assert Image.open(path).mode in ("I;16", "I")  # what Pillow reads back, not 8-bit
    assert_grey(load_image(path), np.round(values / 257).astype(np.uint8))


def test_big_endian_16_bit_tiff(tmp_path: Path) -> None:
    values = gradient16()
    image = Image.frombytes("I;16B", (values.shape[1], values.shape[0]), values.astype(">u2").tobytes())
    path = tmp_path / "ramp_be.tif"
    image.save(path)
    assert_grey(load_image(path), np.round(values / 257).astype(np.uint8))


def test_8_bit_values_stored_in_16_bits_come_back_exactly() -> None:
    eight = np.arange(256, dtype=np.uint16).reshape(16, 16)
    assert_grey(load_image(Image.fromarray(eight * 257)), eight.astype(np.uint8))


def test_32_bit_integer_data_beyond_16_bits_are_stretched_to_their_range() -> None:
    values = np.linspace(-1_000_000, 3_000_000, 64).reshape(8, 8).astype(np.int32)
    expected = np.round((values - values.min()) * 255 / (values.max() - values.min())).astype(np.uint8)
    assert_grey(load_image(Image.fromarray(values, "I")), expected)


def test_32_bit_integer_data_within_16_bits_are_read_as_16_bit() -> None:
    values = gradient16().astype(np.int32)
    assert_grey(load_image(Image.fromarray(values, "I")), np.round(values / 257).astype(np.uint8))


def test_float_images(tmp_path: Path) -> None:
    unit = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "unit.tif"
    Image.fromarray(unit, "F").save(path)
    assert_grey(load_image(path), np.round(unit * 255).astype(np.uint8))
    wide = unit * 4000 - 1000  # not intensities in [0, 1]: the data's range is used
    expected = np.round((wide - wide.min()) * 255 / (wide.max() - wide.min())).astype(np.uint8)
    assert_grey(load_image(Image.fromarray(wide, "F")), expected)


# ------------------------------------------------------------------------------------------ colour


def s15fixed16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def xyz_tag(xyz: tuple[float, ...]) -> bytes:
    return b"XYZ " + bytes(4) + s15fixed16(*xyz)


def adobe_like_profile() -> bytes:
    """An ICC v2 RGB display profile with Adobe RGB's primaries and gamma (matrix and curves)."""
    description = b"Adobe RGB (1998) primaries\x00"
    tags = {
        b"desc": b"desc" + bytes(4) + struct.pack(">I", len(description)) + description + bytes(4 + 4 + 2 + 1 + 67),
        b"wtpt": xyz_tag(D50),
        b"rXYZ": xyz_tag(tuple(ADOBE_TO_XYZ_D50[:, 0])),
        b"gXYZ": xyz_tag(tuple(ADOBE_TO_XYZ_D50[:, 1])),
        b"bXYZ": xyz_tag(tuple(ADOBE_TO_XYZ_D50[:, 2])),
        b"rTRC": b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0233) + bytes(2),
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8 + 4)
        + s15fixed16(*D50) + bytes(4 + 16 + 28)
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) 8-bit Adobe RGB -> 8-bit sRGB (float), clipped to the sRGB gamut, by the formulas."""
    linear = (rgb / 255) ** ADOBE_GAMMA
    srgb_linear = np.clip(linear @ ADOBE_TO_XYZ_D50.T @ np.linalg.inv(SRGB_TO_XYZ_D50).T, 0, 1)
    encoded = np.where(srgb_linear <= 0.0031308, 12.92 * srgb_linear, 1.055 * srgb_linear ** (1 / 2.4) - 0.055)
    return encoded * 255


@pytest.fixture
def swatches() -> np.ndarray:
    """(1, 5, 3) uint8: white, mid grey, and three saturated colours."""
    return np.array([[[255, 255, 255], [128, 128, 128], [200, 60, 40], [40, 160, 90], [60, 70, 190]]], dtype=np.uint8)


def test_embedded_icc_profile_is_converted_to_srgb(tmp_path: Path, swatches: np.ndarray) -> None:
    path = tmp_path / "adobe.png"
    Image.fromarray(swatches).save(path, icc_profile=adobe_like_profile())
    assert Image.open(path).info.get("icc_profile")
    pixels = np.asarray(load_image(path)).astype(float)
    np.testing.assert_allclose(pixels, adobe_to_srgb(swatches.astype(float)), atol=3)
    assert np.abs(pixels[0, 2] - swatches[0, 2]).max() > 10  # the conversion did change the colour


def test_icc_profile_of_a_transparent_image(tmp_path: Path, swatches: np.ndarray) -> None:
    alpha = np.array([[255, 255, 255, 255, 0]], dtype=np.uint8)
    path = tmp_path / "adobe_alpha.png"
    Image.fromarray(np.dstack([swatches, alpha]), "RGBA").save(path, icc_profile=adobe_like_profile())
    pixels = np.asarray(load_image(path)).astype(float)
    np.testing.assert_allclose(pixels[0, :4], adobe_to_srgb(swatches[0, :4].astype(float)), atol=3)
    np.testing.assert_array_equal(pixels[0, 4], [255, 255, 255])  # transparent: the white background


def test_unreadable_icc_profile_leaves_the_values(tmp_path: Path, swatches: np.ndarray) -> None:
    path = tmp_path / "broken_profile.png"
    Image.fromarray(swatches).save(path, icc_profile=b"not an ICC profile")
    np.testing.assert_array_equal(np.asarray(load_image(path)), swatches)


def test_16_bit_image_from_memory_and_palette_transparency() -> None:
    buffer = io.BytesIO()
    Image.fromarray(gradient16()).save(buffer, format="PNG")
    assert_grey(load_image(Image.open(buffer)), np.round(gradient16() / 257).astype(np.uint8))
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1
    np.testing.assert_array_equal(np.asarray(load_image(palette)), [[[255, 0, 0], [255, 255, 255]]])

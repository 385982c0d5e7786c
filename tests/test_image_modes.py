"""Image modes: what the model edits of each input mode, the alpha kept on the outputs, the note of
the conversion in the input's meta; and the demo's console line at launch (no Gradio share hint)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from image_core import ImageEditor, Inversion
from image_core.stable_diffusion.images import load_image, read_picture, with_alpha

STEPS, T_START = 10, 4
SIZE = 32


@pytest.fixture(scope="module")
def editor() -> ImageEditor:
    return ImageEditor.from_pretrained("tiny", device="cpu", progress=False)


def colours() -> np.ndarray:
    """(32, 32, 3) uint8 with structure: gradients and a square."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 8, y * 8, ((abs(x - 16) < 8) & (abs(y - 16) < 8)) * 255], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def alpha_ramp() -> np.ndarray:
    """(32, 32) uint8 alpha: transparent left columns, opaque right ones, a ramp between."""
    row = np.clip(np.linspace(-64, 320, SIZE), 0, 255).round().astype(np.uint8)
    return np.tile(row, (SIZE, 1))


def rgba_picture() -> Image.Image:
    return Image.fromarray(np.dstack([colours(), alpha_ramp()]), "RGBA")


def palette_with_transparency() -> Image.Image:
    """A P image whose index 0 (the left half) is transparent."""
    picture = Image.new("P", (SIZE, SIZE), 0)
    picture.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    picture.paste(1, (SIZE // 2, 0, SIZE, SIZE))
    picture.info["transparency"] = 0
    return picture


def grey16() -> Image.Image:
    values = np.round(np.linspace(0, 65535, SIZE * SIZE)).astype(np.uint16).reshape(SIZE, SIZE)
    return Image.fromarray(values)


def test_rgba_in_rgba_out_with_the_input_alpha(editor: ImageEditor, tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    rgba_picture().save(path)
    inv = editor.invert(path, num_steps=STEPS, t_start=T_START)
    assert inv.meta["converted"] == "RGBA: the RGB channels edited, alpha kept"
    edits = editor.edit(inv, ["a dog", "a cat"])
    assert len(edits) == 2
    for image in [*edits, editor.reconstruct(inv)[0]]:
        assert image.mode == "RGBA" and image.size == (SIZE, SIZE)
        np.testing.assert_array_equal(np.asarray(image.getchannel("A")), alpha_ramp())
    # "np" and "pt" stay RGB: the colours on white, which the RGBA picture shows on white
    array = editor.edit(inv, "a dog", output_type="np")
    assert array.shape == (1, SIZE, SIZE, 3)
    assert editor.edit(inv, "a dog", output_type="pt").shape == (1, 3, SIZE, SIZE)
    opaque = alpha_ramp() == 255
    np.testing.assert_array_equal(np.asarray(edits[0].convert("RGB"))[opaque], np.round(array[0] * 255)[opaque])


def test_output_files_of_the_command_line_keep_alpha(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "rgba.png"
    rgba_picture().save(path)
    out = tmp_path / "edit.png"
    cmd = [sys.executable, "-m", "image_core", str(path), "--target", "a dog", "--model", "tiny",
           "--steps", str(STEPS), "--tstart", str(T_START), "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as written:
        assert written.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(written.getchannel("A")), alpha_ramp())


def test_the_alpha_survives_load_image_and_a_saved_inversion(editor: ImageEditor, tmp_path: Path) -> None:
    """The command line reads the picture with ``load_image`` first and may save the inversion."""
    path = tmp_path / "rgba.png"
    rgba_picture().save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB"  # what a viewer shows on white, as before
    inv = editor.invert(loaded, num_steps=STEPS, t_start=T_START)
    assert inv.meta["converted"].startswith("RGBA")
    inv.save(tmp_path / "inv.safetensors")
    again = Inversion.load(tmp_path / "inv.safetensors")
    image = editor.reconstruct(again)[0]
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image.getchannel("A")), alpha_ramp())


@pytest.mark.parametrize(
    "make, words, has_alpha",
    [
        (rgba_picture, "RGBA", True),
        (lambda: rgba_picture().convert("LA"), "LA", True),
        (palette_with_transparency, "palette with transparency", True),
        (grey16, "16-bit grey: edited as 8-bit RGB", False),
        (lambda: Image.fromarray(colours()).convert("CMYK"), "CMYK: converted to RGB", False),
        (lambda: Image.fromarray(colours()).convert("L"), "8-bit grey", False),
        (lambda: Image.fromarray(colours()).convert("P"), "palette (P)", False),
    ],
)
def test_conversions_are_noted(editor: ImageEditor, make: Any, words: str, has_alpha: bool) -> None:
    source = editor.codec.read(make())
    assert words in source.meta["converted"] and "\n" not in source.meta["converted"]
    assert ("alpha" in source.meta) == has_alpha
    assert source.data[0].mode == "RGB"


def test_rgb_input_has_no_conversion_note(editor: ImageEditor, tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(colours()).save(path)
    inv = editor.invert(path, num_steps=STEPS, t_start=T_START)
    assert "converted" not in inv.meta and "alpha" not in inv.meta
    assert editor.edit(inv, "a dog")[0].mode == "RGB"


def test_16_bit_grey_file(editor: ImageEditor, tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    grey16().save(path)
    assert Image.open(path).mode in ("I;16", "I")
    inv = editor.invert(path, num_steps=STEPS, t_start=T_START)
    assert inv.meta["converted"] == "16-bit grey: edited as 8-bit RGB"
    assert editor.edit(inv, "a dog")[0].mode == "RGB"


def test_la_and_palette_transparency_come_back_as_alpha(editor: ImageEditor) -> None:
    la = rgba_picture().convert("LA")
    inv = editor.invert(la, num_steps=STEPS, t_start=T_START)
    image = editor.edit(inv, "a dog")[0]
    assert image.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(image.getchannel("A")), np.asarray(la.getchannel("A")))
    inv = editor.invert(palette_with_transparency(), num_steps=STEPS, t_start=T_START)
    alpha = np.asarray(editor.edit(inv, "a dog")[0].getchannel("A"))
    assert (alpha[:, : SIZE // 2] == 0).all() and (alpha[:, SIZE // 2 :] == 255).all()


def test_transparent_shade_of_a_16_bit_grey_png(tmp_path: Path) -> None:
    path = tmp_path / "grey16_trns.png"
    grey16().save(path, transparency=0)
    picture = read_picture(path)
    assert picture.alpha is not None and np.asarray(picture.alpha)[0, 0] == 0 and np.asarray(picture.alpha).min(initial=255) == 0
    assert (np.asarray(picture.alpha) == 255).sum() == SIZE * SIZE - 1
    assert picture.converted == "16-bit grey: edited as 8-bit RGB, transparency kept as alpha"


def test_with_alpha_takes_the_colours_out_of_the_white_composite() -> None:
    colour, alpha = colours(), alpha_ramp()
    a = alpha[..., None] / 255
    composite = np.round(colour * a + 255 * (1 - a)).astype(np.uint8)
    rgba = np.asarray(with_alpha(Image.fromarray(composite), Image.fromarray(alpha)))
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    opaque = alpha == 255
    np.testing.assert_array_equal(rgba[..., :3][opaque], colour[opaque])
    mostly = alpha >= 64  # the 8-bit composite leaves 0.5 / a of error in the colour
    assert np.abs(rgba[..., :3].astype(int) - colour)[mostly].max() <= 2
    # a smaller alpha is resized to the output
    resized = with_alpha(Image.fromarray(composite), Image.fromarray(alpha).resize((16, 16)))
    assert resized.size == (SIZE, SIZE) and resized.mode == "RGBA"


# ------------------------------------------------------------------------------------------ demo


class FakeApp:
    """Stands in for the Gradio app: records launch()'s arguments."""

    def __init__(self, share_url: str | None = None) -> None:
        self.launched: dict[str, Any] = {}
        self.blocked = False
        self.share_url = share_url
        self.local_url = "http://127.0.0.1:7861/"

    def launch(self, **kwargs: Any) -> None:
        self.launched = kwargs

    def block_thread(self) -> None:
        self.blocked = True


def test_demo_console_suggests_its_own_share_flag(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gradio", reason="the demo needs gradio")
    from audio_edit.demo import cli as demo_cli
    from audio_edit.editor import AudioEditor

    app = FakeApp()
    monkeypatch.setattr(AudioEditor, "from_pretrained", classmethod(lambda cls, *args, **kwargs: object()))
    monkeypatch.setattr(demo_cli, "build_app", lambda *args, **kwargs: app)
    demo_cli.main(["--model", "tiny", "--port", "7861"])
    assert app.launched == {"server_name": "127.0.0.1", "server_port": 7861, "share": False, "quiet": True,
                            "prevent_thread_lock": True}  # fmt: skip
    assert app.blocked
    out = capsys.readouterr().out
    assert "http://127.0.0.1:7861/" in out and "--share" in out and "share=True" not in out
    app = FakeApp(share_url="https://example.gradio.live")
    monkeypatch.setattr(demo_cli, "build_app", lambda *args, **kwargs: app)
    demo_cli.main(["--model", "tiny", "--port", "7861", "--share"])
    assert app.launched["share"] is True and "add --share" not in capsys.readouterr().out


def test_gradio_prints_no_share_hint_when_served_by_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real launch on a free local port: Gradio's own hint does not appear, the demo's line does."""
    gr = pytest.importorskip("gradio", reason="the demo needs gradio")
    import socket

    from audio_edit.demo.cli import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with gr.Blocks(analytics_enabled=False) as app:
        gr.Markdown("hello")
    monkeypatch.setattr(app, "block_thread", lambda: None)
    try:
        serve(app, "127.0.0.1", port, False)
    finally:
        app.close()
    out = capsys.readouterr().out
    assert "share=True" not in out
    assert f"127.0.0.1:{port}" in out and "add --share for a public link" in out

"""The Stable Diffusion frontend on a tiny random-weight model (float32, CPU)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from image_core import ImageEditor, Inversion
from image_core.adapters import eps_from_output
from image_core.stable_diffusion.cli import main
from image_core.errors import ModelLoadError


@pytest.fixture(scope="module")
def editor():
    return ImageEditor.from_pretrained("tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 300x217 picture with structure (gradients and a disc)."""
    y, x = np.mgrid[0:217, 0:300]
    rgb = np.stack([x / 300, y / 217, ((x - 150) ** 2 + (y - 108) ** 2 < 60**2) * 1.0], -1)
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


def test_reconstruction_at_paper_defaults(editor, photo):
    inv = editor.invert(photo, "a photo", num_steps=100, t_start=64, cfg_src=3.5)
    rec = editor.reconstruct(inv, output_type="latent")
    assert rec.shape == inv.x0.shape
    assert ((rec - inv.x0).norm() / inv.x0.norm()).item() <= 1e-4


def test_reconstruction_is_bitwise_exact_with_batch_invariant_calls(photo):
    """The error above is batch-size-dependent UNet kernel rounding, nothing else: with inversion calls
    shaped like the edit's (one x_t, both guidance halves) the frontend's whole path (CLIP prompts,
    guidance, ε of the SD UNet, float64 noise maps) reconstructs to float64 rounding."""
    editor = ImageEditor.from_pretrained("tiny", device="cpu", progress=False, inversion_batch_size=1)
    inv = editor.invert(photo, "a photo", num_steps=50, t_start=32, cfg_src=3.5)
    assert inv.zs.dtype == torch.float64
    assert ((editor.reconstruct(inv, output_type="latent") - inv.x0).norm() / inv.x0.norm()).item() <= 1e-10


def test_edits_have_the_input_size_and_differ(editor, photo):
    inv = editor.invert(photo, "a photo", num_steps=20, t_start=12, seed=[0, 1])
    images = editor.edit(inv, ["a dog", "a lion"], cfg_tar=15.0)
    assert len(images) == 4 and all(image.size == (300, 217) for image in images)
    arrays = editor.edit(inv, ["a dog", "a lion"], output_type="np")
    assert arrays.shape == (4, 217, 300, 3) and 0 <= arrays.min() and arrays.max() <= 1
    assert editor.edit(inv, "a dog", output_type="pt").shape == (2, 3, 217, 300)
    latents = editor.edit(inv, ["a dog", "a lion"], output_type="latent")
    assert not torch.allclose(latents[0], latents[2])  # targets differ
    assert not torch.allclose(latents[0], latents[1])  # seeds differ


def test_odd_inputs(editor, tmp_path):
    """RGBA, grayscale, palette and EXIF-rotated images are accepted; rotation is applied."""
    rgba = Image.new("RGBA", (40, 24), (255, 0, 0, 128))
    gray = Image.new("L", (24, 40), 128)
    rotated = Image.new("RGB", (40, 24), (0, 128, 255))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° when displayed
    rotated.save(tmp_path / "rot.jpg", exif=exif)
    for source, size in [(rgba, (40, 24)), (gray, (24, 40)), (gray.convert("P"), (24, 40)), (tmp_path / "rot.jpg", (24, 40))]:
        inv = editor.invert(source, num_steps=4, t_start=2)
        assert editor.reconstruct(inv)[0].size == size


def test_v_prediction_conversion():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    a = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64)
    sa, s1a = a.sqrt().float().unsqueeze(1), (1 - a).sqrt().float().unsqueeze(1)
    x_t = sa * x0 + s1a * eps
    assert torch.allclose(eps_from_output(sa * eps - s1a * x0, x_t, a, "v_prediction"), eps, atol=1e-5)
    assert torch.allclose(eps_from_output(x0, x_t, a, "sample"), eps, atol=1e-4)


def test_save_and_load_model_folder(editor, tmp_path):
    editor.save_pretrained(tmp_path / "sd")
    loaded = ImageEditor.from_pretrained(str(tmp_path / "sd"), device="cpu", dtype="float32")
    assert loaded.model.fingerprint() == editor.model.fingerprint()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    cond = editor.model.encode_prompts(["a cat", ""])
    assert torch.allclose(loaded.model.predict_eps(x, t, cond), editor.model.predict_eps(x, t, cond), atol=1e-6)
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.from_pretrained(str(tmp_path / "sd"))  # a real diffusers layout


def test_model_load_errors_are_one_line(tmp_path):
    for name in [str(tmp_path / "missing"), "nobody/no-such-model"]:
        with pytest.raises(ModelLoadError) as info:
            ImageEditor.from_pretrained(name, device="cpu")
        assert "\n" not in str(info.value) and "save_pretrained" in str(info.value)


def test_inversion_file_round_trip(editor, photo, tmp_path):
    inv = editor.invert(photo, "a photo", num_steps=10, t_start=6, seed=[5, 6])
    inv.save(tmp_path / "photo.inv")
    back = Inversion.load(tmp_path / "photo.inv")
    assert back.meta == {"size": [300, 217]} and back.settings.seeds == (5, 6)
    assert torch.equal(editor.edit(back, "a dog", output_type="latent"), editor.edit(inv, "a dog", output_type="latent"))


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_cli_end_to_end(photo, tmp_path):
    out = tmp_path / "edit.png"
    cmd = [sys.executable, "-m", "image_core", str(photo), "--target", "a dog", "--model", "tiny",
           "--steps", "10", "--tstart", "6", "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert Image.open(out).size == (300, 217)


def test_cli_several_outputs(photo, tmp_path, capsys):
    argv = [str(photo), "--target", "a dog", "--target", "a lion", "--num-outputs", "2", "--model", "tiny",
            "--steps", "6", "--tstart", "3", "--out", str(tmp_path / "e.png"), "--device", "cpu"]  # fmt: skip
    code, out, _ = run_cli(argv, capsys)
    names = sorted(p.name for p in tmp_path.glob("e_*.png"))
    assert code == 0 and names == ["e_a-dog_s0.png", "e_a-dog_s1.png", "e_a-lion_s0.png", "e_a-lion_s1.png"]
    assert len(out.split()) == 4
    code, _, err = run_cli(argv, capsys)  # outputs exist now
    assert code == 2 and "--overwrite" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tstart", "20", "--steps", "10"], "tstart"),
        (["--steps", "0"], "steps"),
        (["--cfg-tar", "-1"], "guidance"),
        (["--cfg-src", "-3"], "guidance"),
        (["--eta", "0"], "eta"),
        (["--steps", "ten"], "invalid int"),
    ],
)
def test_cli_bad_settings(photo, tmp_path, capsys, extra, message):
    out = tmp_path / "o.png"
    code, stdout, err = run_cli([str(photo), "--target", "a dog", "--model", "tiny", "--out", str(out), *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_bad_inputs(tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    cases = [tmp_path / "missing.png", text, tmp_path]
    for path in cases:
        before = path.read_bytes() if path.is_file() else None
        code, _, err = run_cli([str(path), "--target", "a dog", "--model", "tiny", "--out", str(tmp_path / "o.png")], capsys)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o.png").exists()
        if before is not None:
            assert path.read_bytes() == before
    code, _, err = run_cli([str(text), "--target", "  ", "--model", "tiny"], capsys)
    assert code == 2 and "--target" in err


def test_fingerprint_sees_one_changed_entry_of_a_text_embedding():
    """Every weight counts: one number in one row of the CLIP token embedding changes the fingerprint."""
    from image_core.stable_diffusion.model import StableDiffusionModel
    from image_core.stable_diffusion.tiny import tiny_stable_diffusion

    parts = tiny_stable_diffusion()
    original = StableDiffusionModel("tiny", **parts).fingerprint()
    embedding = parts["text_encoder"].get_input_embeddings().weight
    with torch.no_grad():
        embedding[7, 3] = torch.nextafter(embedding[7, 3], torch.tensor(float("inf")))
    assert StableDiffusionModel("tiny", **parts).fingerprint() != original

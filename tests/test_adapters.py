"""Devices, model names that are local paths, and weight checksums (image_core.adapters)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from audio_edit.cli import main as audio_main
from audio_edit.editor import AudioEditor
from audio_edit.models import AudioModel
from image_core import ImageEditor, adapters
from image_core.errors import InputError, ModelLoadError
from image_core.stable_diffusion.cli import main as image_main

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has cuda")
no_mps = pytest.mark.skipif(adapters._mps_available(), reason="this machine has mps")

# ------------------------------------------------------------------------------------------ devices


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_missing_cuda_is_an_input_error(device: str | torch.device) -> None:
    with pytest.raises(InputError, match="^cuda is not available on this machine: use --device cpu or auto$"):
        adapters.resolve_device(device)


@no_mps
def test_missing_mps_is_an_input_error() -> None:
    with pytest.raises(InputError, match="^mps is not available on this machine"):
        adapters.resolve_device("mps")


def test_auto_and_cpu_devices() -> None:
    assert adapters.resolve_device("cpu") == torch.device("cpu")
    assert adapters.resolve_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(InputError, match="unknown device"):
        adapters.resolve_device("gpu")


@no_cuda
@pytest.mark.parametrize("load", [ImageEditor.from_pretrained, AudioEditor.from_pretrained, AudioModel.from_pretrained])
def test_editors_refuse_a_missing_device_before_loading(load) -> None:
    with pytest.raises(InputError, match="cuda is not available"):
        load("tiny", device="cuda")


def run(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stderr) of a command-line ``main`` run in this process."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
        raise SystemExit(0)
    return int(exited.value.code or 0), capsys.readouterr().err


@no_cuda
def test_both_commands_report_a_missing_device_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture, sound = tmp_path / "in.png", tmp_path / "in.wav"
    Image.new("RGB", (64, 64), (90, 120, 200)).save(picture)
    sf.write(sound, 0.1 * np.sin(np.arange(16000, dtype=np.float32) * 0.05), 16000)
    for main, source in ((image_main, picture), (audio_main, sound)):
        argv = [str(source), "--target", "x", "--model", "tiny", "--device", "cuda", "--out", str(tmp_path / f"o{source.suffix}")]
        code, err = run(main, argv, capsys)
        assert code == 2 and err == "error: cuda is not available on this machine: use --device cpu or auto\n"


# ------------------------------------------------------------------------------------ local paths


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working folder is an empty tmp folder, with a subfolder "checkpoints"."""
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


PATH_LIKE = ["./missing", "../missing", "~/no-such-model-folder", "checkpoints/missing", "a/b/c", "models/", "C:\\models\\x"]


@pytest.mark.parametrize("name", PATH_LIKE)
def test_names_that_can_only_be_paths_fail_at_once(in_tmp: Path, name: str) -> None:
    with pytest.raises(ModelLoadError, match=f"^no such folder: {name.replace(chr(92), chr(92) * 2)} "):
        adapters.local_folder(name)


def test_absolute_missing_path_and_file_instead_of_folder(in_tmp: Path) -> None:
    with pytest.raises(ModelLoadError, match="^no such folder: "):
        adapters.local_folder(str(in_tmp / "missing"))
    (in_tmp / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="^not a folder: model.safetensors"):
        adapters.local_folder("model.safetensors")


def test_hub_ids_and_existing_folders(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for hub_id in ("cvssp/audioldm2-music", "CompVis/stable-diffusion-v1-4", "gpt2"):
        assert adapters.local_folder(hub_id) is None
    assert adapters.local_folder("checkpoints") == "checkpoints"
    monkeypatch.setenv("HOME", str(in_tmp))
    assert adapters.local_folder("~/checkpoints") == str(in_tmp / "checkpoints")


@pytest.mark.parametrize("load", [ImageEditor.from_pretrained, AudioEditor.from_pretrained])
@pytest.mark.parametrize("name", ["./checkpoints/audioldm2", "checkpoints/audioldm2", "~/no-such-model-folder/"])
def test_mistyped_model_folder_fails_at_once(in_tmp: Path, load, name: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load(name, device="cpu")
    assert time.perf_counter() - start < 0.5
    message = str(caught.value)
    assert message.startswith(f"no such folder: {name} ") and "\n" not in message and "network" not in message


# ---------------------------------------------------------------------------------------- checksums


def reference_checksum(tensor: torch.Tensor) -> int:
    """``tensor_checksum`` by its definition, entry by entry with Python integers."""
    unsigned = {1: (torch.uint8, np.uint8), 2: (torch.int16, np.uint16), 4: (torch.int32, np.uint32)}
    torch_type, numpy_type = unsigned.get(tensor.element_size(), (torch.int64, np.uint64))
    bits = tensor.detach().reshape(-1).contiguous().view(torch_type).numpy().view(numpy_type).tolist()

    def weight(index: int) -> int:
        return int(adapters._mix(np.array([index], dtype=np.uint64))[0])

    chunk = adapters._CHUNK
    return sum(b * weight(i % chunk) * weight(i // chunk) for i, b in enumerate(bits)) % 2**64


@pytest.mark.parametrize(
    "tensor",
    [
        torch.randn(3, 50),
        torch.randn(7, 5, dtype=torch.float64).t(),  # not contiguous: row-major order of the view
        torch.randn(33).half(),
        torch.randn(33).bfloat16(),
        torch.randint(0, 256, (40,), dtype=torch.uint8),
        torch.tensor([True, False, True]),
        torch.randn(4, dtype=torch.complex128),
        torch.zeros(0),
    ],
)
def test_tensor_checksum_follows_its_definition(tensor: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "_CHUNK", 16)  # several chunks even for small tensors
    monkeypatch.setattr(adapters, "_position_weights", lambda: adapters._mix(np.arange(16, dtype=np.uint64)))
    assert adapters.tensor_checksum(tensor) == reference_checksum(tensor)


def test_one_changed_entry_anywhere_changes_the_checksum() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3 * adapters._CHUNK + 5, generator=generator)  # several chunks at the real size
    before = adapters.tensor_checksum(values)
    for index in torch.randint(0, values.numel(), (6,), generator=generator).tolist() + [values.numel() - 1]:
        changed = values.clone()
        changed[index] = torch.nextafter(changed[index], torch.tensor(float("inf")))  # one ulp
        assert adapters.tensor_checksum(changed) != before, index


def test_module_checksum_covers_buffers_and_names() -> None:
    module = torch.nn.BatchNorm1d(4)
    before = adapters._weight_checksum(module)
    with torch.no_grad():
        module.running_mean[2] = 1e-6
    assert adapters._weight_checksum(module) != before
    renamed = torch.nn.Sequential(torch.nn.BatchNorm1d(4))
    assert adapters._weight_checksum(renamed) != adapters._weight_checksum(torch.nn.BatchNorm1d(4))


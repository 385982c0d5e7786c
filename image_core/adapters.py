"""Small pieces every model adapter needs: device and dtype choice, ε from any prediction type,
fingerprints, and loading diffusers / transformers components with one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch

from .errors import InputError, ModelLoadError

T = TypeVar("T")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu."""
    if str(device) != "auto":
        try:
            return torch.device(device)
        except RuntimeError:
            raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" -> float16 on cuda (the weights' own precision is enough there), float32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def available_memory(device: str | torch.device = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``, or None where that cannot be read.

    CUDA: the driver's free memory; CPU: MemAvailable of /proc/meminfo (Linux only).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(needed: int, device: str | torch.device, what: str, remedy: str) -> None:
    """InputError before work that would need more memory than ``device`` has available.

    Args:
        needed: bytes the work will hold at once.
        what: the work, e.g. "the inversion's noise maps".
        remedy: what the user can change, e.g. "use a lower tstart".
    """
    free = available_memory(device)
    if free is not None and needed > free:
        raise InputError(
            f"{what} need about {_size(needed)} but only {_size(free)} are free on {torch.device(device).type}: {remedy}"
        )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def eps_from_output(
    output: torch.Tensor, x_t: torch.Tensor, alphas: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Convert a model output to ε.

    Args:
        output, x_t: (B, ...) the model's prediction and its input.
        alphas: (B,) ᾱ_t of each row.
        prediction_type: "epsilon", "v_prediction" (ε = sqrt(ᾱ) v + sqrt(1 - ᾱ) x_t) or "sample"
            (ε = (x_t - sqrt(ᾱ) x0) / sqrt(1 - ᾱ)).
    """
    if prediction_type == "epsilon":
        return output
    a = alphas.to(device=x_t.device, dtype=x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * output) / (1 - a).sqrt()
    raise ModelLoadError(f"unsupported prediction_type {prediction_type!r}")


def fingerprint(family: str, configs: Mapping[str, Mapping[str, Any]], modules: Mapping[str, torch.nn.Module], dtype: torch.dtype) -> str:
    """A short stable id of a model, e.g. "audioldm2-1f0c...": family, configs (private "_" keys left
    out), the denoiser's dtype (it changes the noise estimates) and a checksum of the weights.

    Equal for the same weights loaded from a hub id, the cache or a local folder, on any device.
    """
    payload = {
        "family": family,
        "dtype": str(dtype),
        "configs": {name: {k: v for k, v in dict(c).items() if not k.startswith("_")} for name, c in configs.items()},
        "weights": {name: _weight_checksum(module) for name, module in modules.items()},
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{family}-{digest[:16]}"


def _weight_checksum(module: torch.nn.Module) -> str:
    """Sum of up to 64 evenly spaced entries of every parameter, in float64, 12 significant digits:
    cheap (one small gather per tensor) yet changed by anything that touches most entries of a tensor,
    such as fine-tuning or merged adapters."""
    total = torch.zeros((), dtype=torch.float64)
    for parameter in module.parameters():
        flat = parameter.detach().reshape(-1)
        total = total.to(flat.device) + flat[:: max(1, flat.numel() // 64)].double().sum()
    return f"{total.item():.12g}"


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters, for one-line messages."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def load_component(name: str, what: str, load: Callable[[], T]) -> T:
    """Run a component's ``from_pretrained``; any failure becomes a one-line ``ModelLoadError``."""
    try:
        return load()
    except Exception as error:
        reason = first_line(error)
        where = "folder" if os.path.isdir(name) else "model"
        raise ModelLoadError(
            f"cannot load the {what} of {where} {name!r} ({reason}). Download it once with network "
            "access (it is then cached in ~/.cache/huggingface) or pass a local folder saved with "
            "save_pretrained"
        ) from None


def model_class_name(name: str) -> str | None:
    """The pipeline class named in a model's model_index.json (local folder or hub cache), or None."""
    path = os.path.join(name, "model_index.json")
    if not os.path.isdir(name):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(name, "model_index.json")
        except Exception:
            return None
    try:
        with open(path) as f:
            return json.load(f).get("_class_name")
    except (OSError, ValueError):
        return None


def scheduler_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A scheduler config as ``DDIMScheduler`` reads it (defaults filled in, private keys dropped)."""
    from diffusers import DDIMScheduler

    return {k: v for k, v in DDIMScheduler.from_config(dict(config)).config.items() if not k.startswith("_")}

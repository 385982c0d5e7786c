"""Small pieces every model adapter needs: device and dtype choice, ε from any prediction type,
fingerprints, and loading diffusers / transformers components with one-line errors."""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from .batching import append_dims
from .errors import InputError, ModelLoadError

T = TypeVar("T")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps if available, else cpu.

    Raises InputError (one line) for an unknown name and for cuda or mps (or a cuda index) that this
    machine does not have.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda or mps") from None
    _check_available(resolved)
    return resolved


def _mps_available() -> bool:
    """Whether Apple's Metal backend can run here."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _check_available(device: torch.device) -> None:
    """InputError unless ``device`` (cuda, cuda:N or mps) exists on this machine; other types pass."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError("cuda is not available on this machine: use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise InputError(f"{device} is not available on this machine ({count} cuda devices): use cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not _mps_available():
        raise InputError("mps is not available on this machine: use --device cpu or auto")


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" -> on cuda bfloat16 where the GPU supports it (float16's range without its overflows;
    the core's own arithmetic stays float32 / float64 either way), float16 on older GPUs; float32
    elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        native = torch.cuda.get_device_capability(device)[0] >= 8  # Ampere on: bfloat16 in hardware, not emulated
        return torch.bfloat16 if native else torch.float16
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
    a = append_dims(alphas, x_t)
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * output) / (1 - a).sqrt()
    raise ModelLoadError(f"unsupported prediction_type {prediction_type!r}")


PREDICTIONS = ("epsilon", "v_prediction", "sample", "flow")


def eps_from_prediction(
    output: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Convert a model output to ε on the path x_t = α x0 + σ ε, so that the core sees one
    parametrisation whatever the model predicts (as k-diffusion's and EDM's wrappers do).

    Args:
        output, x_t: (B, ...) the model's prediction and its input (in the path's own scaling).
        alpha, sigma: (B,) α_t and σ_t of each row.
        prediction_type: "epsilon"; "sample" (x0: ε = (x_t - α x0) / σ); "v_prediction" (v = α ε - σ x0
            on a variance-preserving path, α² + σ² = 1: ε = σ x_t + α v); "flow" (the rectified-flow
            velocity u = ε - x0 with α = 1 - t, σ = t: ε = x_t + α u).
    """
    if prediction_type == "epsilon":
        return output
    a, s = append_dims(alpha, x_t), append_dims(sigma, x_t)
    if prediction_type == "v_prediction":
        return s * x_t + a * output
    if prediction_type == "sample":
        return (x_t - a * output) / s
    if prediction_type == "flow":
        return x_t + a * output
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


_CHUNK = 1 << 20  # entries weighted at once: 8 MiB of uint64 products
_MASK64 = (1 << 64) - 1
_UNSIGNED = {1: (torch.uint8, np.uint8), 2: (torch.int16, np.uint16), 4: (torch.int32, np.uint32), 8: (torch.int64, np.uint64)}


def _weight_checksum(module: torch.nn.Module) -> str:
    """A checksum of every entry of every tensor of ``module.state_dict()`` (parameters and persistent
    buffers) with its name, dtype and shape: 16 hex digits of a SHA-256 over the tensors' checksums.

    Exact, and the same on any device (see ``tensor_checksum``), so a change of any one entry, such as
    one number in one row of a text embedding, changes it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|{tensor_checksum(tensor):016x};".encode())
    return digest.hexdigest()[:16]


def tensor_checksum(tensor: torch.Tensor) -> int:
    """Σ_i bits_i · w_i mod 2^64 over the entries of ``tensor`` in row-major order, in [0, 2^64).

    bits_i is the entry's bit pattern as an unsigned integer of its size (16-byte entries count as two
    8-byte ones); w_i = ``_position_weights()[i mod _CHUNK]`` · ``_mix(i div _CHUNK)`` mod 2^64, an odd
    pseudo-random weight of the position. The arithmetic is unsigned 64-bit integer arithmetic,
    which wraps modulo 2^64: exact, so the result is the same on every device and in every summation
    order, and as every weight is odd (invertible modulo 2^64), changing any one entry changes it.

    Runs on the CPU in numpy, ``_CHUNK`` entries at a time (tensors elsewhere are copied over chunk by
    chunk), one multiply-add per entry: measured 0.5 s per GB of float32 weights on an idle x86 core,
    1.3 to 1.5 s per GB on a busy one (the 1.39 GB AudioLDM2 UNet: 1.8 to 2.1 s).
    """
    flat = tensor.detach().reshape(-1)
    size = flat.element_size()
    torch_type, numpy_type = _UNSIGNED[size] if size in _UNSIGNED else _UNSIGNED[8]
    entries = flat.contiguous().view(torch_type)  # the same bits, read as integers
    weights = _position_weights()
    products = np.empty(min(_CHUNK, entries.numel()), dtype=np.uint64)
    total = 0
    for chunk, start in enumerate(range(0, entries.numel(), _CHUNK)):
        part = entries[start : start + _CHUNK].cpu().numpy().view(numpy_type)
        out = products[: part.size]
        np.multiply(part, weights[: part.size], out=out)  # zero-extended to uint64, wraps mod 2^64
        total += _chunk_weight(chunk) * int(out.sum(dtype=np.uint64))
    return total & _MASK64


@functools.lru_cache(maxsize=1)
def _position_weights() -> np.ndarray:
    """(_CHUNK,) uint64 odd weights ``_mix(j)`` of the positions j within a chunk (computed once)."""
    return _mix(np.arange(_CHUNK, dtype=np.uint64))


@functools.lru_cache(maxsize=4096)
def _chunk_weight(chunk: int) -> int:
    """``_mix(chunk)`` as a Python int: the factor of the position weights of chunk number ``chunk``."""
    return int(_mix(np.array([chunk], dtype=np.uint64))[0])


def _mix(index: np.ndarray) -> np.ndarray:
    """Odd 64-bit weights of uint64 ``index``: splitmix64's finaliser with the low bit set (wraps mod 2^64)."""
    with np.errstate(over="ignore"):
        z = (index + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) | np.uint64(1)


_DIFFUSERS_MODELS_LOGGER = "diffusers.models.modeling_utils"  # where ModelMixin.to logs its casting warning


class _EmptyFp32ListFilter(logging.Filter):
    """Drops diffusers' "There are modules in X that should be kept in float32: []" warning, which
    ``ModelMixin.to(dtype)`` logs on every cast even when no module must stay in float32 (the empty
    list); every other record, that warning with a non-empty list included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in ") and "that should be kept in float32: []." in message)


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(dtype)`` without diffusers' empty "should be kept in float32: []" warning."""
    logger = logging.getLogger(_DIFFUSERS_MODELS_LOGGER)
    quiet = _EmptyFp32ListFilter()
    logger.addFilter(quiet)
    try:
        return module.to(dtype)
    finally:
        logger.removeFilter(quiet)


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


def local_folder(name: str) -> str | None:
    """The folder ``name`` names (``~`` expanded), or None when it is a hub id such as "owner/model".

    A name that looks like a path and is not a folder raises ModelLoadError at once, rather than after
    the hub client's retries. It looks like a path when it is absolute, starts with "." or "~", holds
    a backslash or more than one "/", ends with "/", or is "owner/model" where "owner" is a local folder.
    """
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ModelLoadError(f"not a folder: {name} (pass the folder saved with save_pretrained, not a file in it)")
    if _looks_like_path(name):
        raise ModelLoadError(f"no such folder: {name} (check the path, or pass a folder saved with save_pretrained)")
    return None


def check_hub_id(name: str, builtins: Sequence[str], hub_ids: Sequence[str]) -> str:
    """``name`` if it can be a hub id "owner/name"; else ModelLoadError at once, without asking the hub.

    For a name that is neither a local folder (see ``local_folder``, called first) nor "owner/name",
    such as a mistyped built-in name ("tiy"): the message names the closest of ``builtins`` and
    ``hub_ids`` (difflib) and lists what can be given.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") == 1:
        try:
            validate_repo_id(name)
            return name
        except HFValidationError:
            pass
    choices = [*builtins, *hub_ids]
    by_lower = {choice.lower(): choice for choice in choices}
    close = [by_lower[match] for match in difflib.get_close_matches(name.strip().lower(), list(by_lower), n=3, cutoff=0.6)]
    quoted = [repr(choice) for choice in close]
    listed = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else "".join(quoted)
    guess = f" did you mean {listed}?" if close else ""
    raise ModelLoadError(
        f"unknown model {name!r}:{guess} give a hub id (owner/name, e.g. {', '.join(hub_ids)}), "
        f"a local folder, or {' / '.join(builtins)}"
    )


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` can only be meant as a local path (hub ids are "model" or "owner/model")."""
    if os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.endswith("/"):
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0]))


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


def compiled(module: torch.nn.Module, backend: str = "inductor") -> Any:
    """``torch.compile`` of a UNet (or transformer): its kernels fused for the shapes it sees. The
    first call at each new shape compiles (tens of seconds); edits reuse the few shapes they have."""
    return torch.compile(module, backend=backend)


def pick_unet(x: torch.Tensor, eager: torch.nn.Module, compiled_module: Any | None) -> Any:
    """The compiled module, except for forward-mode products (compiled graphs have no forward
    derivatives): an input carrying a tangent runs the eager module."""
    import torch.autograd.forward_ad as fwAD

    if compiled_module is None or fwAD.unpack_dual(x).tangent is not None:
        return eager
    return compiled_module


UNET_ACTIVATIONS = 20_000  # peak activation bytes of a UNet call per byte of its latent input (SD-class UNets
# with PyTorch's fused attention; an estimate with headroom: benchmarks/bench_gpu.py measures the real figure)
MEMORY_SHARE = 0.5  # of the free memory a batch of rows may take (the rest: fragmentation, other buffers)
MAX_ROWS = 256  # rows per call at most, however much memory there is
CPU_ROWS = 16  # on a CPU larger batches are not faster, only bigger


def rows_in_memory(device: torch.device, input_bytes: int) -> int:
    """Rows per model call that fit the free memory of a GPU, for rows of ``input_bytes`` of latent
    input each (all guidance branches counted): ``MEMORY_SHARE`` of the free memory over
    ``UNET_ACTIVATIONS`` x ``input_bytes``, at least 1 and at most ``MAX_ROWS``; ``CPU_ROWS`` where
    the free memory is not a GPU's."""
    free = available_memory(device) if torch.device(device).type == "cuda" else None
    if free is None:
        return CPU_ROWS
    return max(1, min(MAX_ROWS, int(free * MEMORY_SHARE // (UNET_ACTIVATIONS * max(1, input_bytes)))))

"""The inversion cache: its keys, its entries (an inversion with what the page shows of it and its
principal components) and the LRU bounded in bytes that holds them; the byte accounting of
inversions in host and device memory, and the first seed's part of an inversion of several."""

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from image_core.inversion import Inversion
from image_core.methods.pcs import PosteriorPCs
from image_core.request import EditRequest

from ..audio_io import Audio

KEPT_COMPONENT_SETS = 4
"""Sets of components (per count, time range and iterations) kept with one cached inversion."""

DEFAULT_CACHE_MB = 2048.0
"""Host memory the inversion cache may hold, in MiB (``--cache-mb``).

An inversion holds float64 x0, x_t and z_t: (2 t_start + 1) latents of 8 x 25 frames/s x 16 bins per
seed, 148 MiB for a 30 s clip at the paper's t_start 100. 2 GiB keeps 13 of those, or the largest the
page makes at the default cap with t_start up to 200 (30 s, four variations: 1.2 GiB)."""

MIB = 2**20


@dataclass(frozen=True)
class InversionKey:
    """Everything an inversion depends on: the same key gives the same inversion."""

    session: str
    digest: str  # SHA-256 of the uploaded file's bytes
    source_prompt: str
    steps: int
    t_start: int
    cfg_src: float
    seed: int
    variations: int
    method: str = "ddpm"  # one of INVERSION_METHODS: each inverts differently
    lyrics: str = ""  # what the clip sings (ACE-Step): part of the source's condition

    @classmethod
    def of(cls, session: str, digest: str, request: EditRequest) -> "InversionKey":
        """The key of the inversion ``request`` makes of the upload with SHA-256 ``digest`` (its guidance
        is the request's ``inversion_cfg``: a null-text one is optimised for the target's)."""
        r = request
        return cls(session, digest, r.source, r.steps, r.tstart, r.inversion_cfg, r.seed, r.num_outputs, r.method, r.lyrics)


@dataclass(frozen=True)
class ComponentsKey:
    """What principal components of one inversion depend on besides it."""

    n: int
    seconds: tuple[float, float] | None  # the time range they are restricted to, None for the whole clip
    max_iterations: int


@dataclass(frozen=True)
class CachedInversion:
    """An inversion (its tensors on the CPU) with what the page shows of it that does not depend on the
    target, and the principal components found for it (at most :data:`KEPT_COMPONENT_SETS` sets, oldest first)."""

    inversion: Inversion
    original: np.ndarray  # mono downmix of the input, (num_frames,) at sample_rate
    reconstruction: np.ndarray  # regenerated from the first seed's noise maps, same shape
    sample_rate: int
    components: Mapping[ComponentsKey, PosteriorPCs] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held: every tensor of the inversion and of its components plus the two waveforms."""
        held = sum(_pcs_bytes(pcs) for pcs in self.components.values())
        return tensor_bytes(self.inversion) + self.original.nbytes + self.reconstruction.nbytes + held

    def with_components(self, key: ComponentsKey, pcs: PosteriorPCs) -> "CachedInversion":
        """This entry with ``pcs`` added under ``key`` (the oldest set dropped beyond the bound)."""
        kept = {k: v for k, v in self.components.items() if k != key}
        kept[key] = pcs
        while len(kept) > KEPT_COMPONENT_SETS:
            del kept[next(iter(kept))]
        return dataclasses.replace(self, components=kept)


def _pcs_bytes(pcs: PosteriorPCs) -> int:
    tensors = [pcs.vectors, pcs.values, pcs.point] + ([] if pcs.region is None else [pcs.region])
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def _tensor_fields(inversion: Inversion) -> dict[str, torch.Tensor]:
    """The inversion's tensor fields by name (x0, xts, zs, timesteps and any other, such as a residual)."""
    fields = ((field.name, getattr(inversion, field.name)) for field in dataclasses.fields(inversion))
    return {name: value for name, value in fields if isinstance(value, torch.Tensor)}


def _first_latent(inversion: Inversion) -> Inversion:
    """The inversion of the first seed alone (the reconstruction needs one, not one per seed): every
    tensor field but the (K,) timesteps is per latent, (B, ...), and keeps its first row."""
    if inversion.num_latents == 1:
        return inversion
    settings = dataclasses.replace(inversion.settings, seeds=inversion.settings.seeds[:1])
    rows = {name: tensor[:1] for name, tensor in _tensor_fields(inversion).items() if name != "timesteps"}
    uncond = None if inversion.uncond is None else {key: value[:1] for key, value in inversion.uncond.items()}
    return dataclasses.replace(inversion, **rows, settings=settings, uncond=uncond)


def tensor_bytes(inversion: Inversion) -> int:
    """Bytes of all the inversion's tensors."""
    return sum(tensor.numel() * tensor.element_size() for tensor in inversion.tensors().values())


def inversion_bytes(editor: Any, audio: Audio, t_start: int, seeds: int, method: str = "ddpm") -> int | None:
    """Bytes an inversion of ``audio`` will hold: x0 and, per step, x_t (and with "ddpm" z_t) of every
    seed. None when ``editor`` is not an ``AudioEditor`` (a stand-in of the tests)."""
    try:
        shape = editor.latent_shape(round(audio.num_frames * editor.model.sample_rate / audio.sample_rate))
        return editor.inversion_bytes(shape, seeds, t_start, method) + editor.inversion_bytes(shape, seeds, 1, "ddim")
    except (AttributeError, TypeError):
        return None


def _release_device_cache(editor: Any) -> None:
    """Give the CUDA allocator's freed blocks back to the driver, whose free memory the next
    inversion's memory check reads (the inversion just moved to host memory)."""
    device = getattr(getattr(editor, "model", None), "device", None)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class InversionCache:
    """A thread-safe LRU of inversions holding at most ``max_bytes`` (0 keeps none).

    An entry larger than the whole budget is not kept (the run that made it still edits with it).
    """

    def __init__(self, max_bytes: int = round(DEFAULT_CACHE_MB * MIB)) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[InversionKey, CachedInversion] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: InversionKey) -> CachedInversion | None:
        """The entry for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: InversionKey, entry: CachedInversion) -> bool:
        """Store ``entry`` as the most recently used, dropping the least recently used ones beyond the
        budget; False (and nothing stored) when ``entry`` alone is larger than the budget."""
        with self._lock:
            self._remove(key)
            if entry.nbytes > self.max_bytes:
                return False
            self._entries[key] = entry
            self._nbytes += entry.nbytes
            while self._nbytes > self.max_bytes:
                self._remove(next(iter(self._entries)))
            return True

    def evict_oldest(self) -> int:
        """Drop the least recently used entry; the bytes it held (0 when the cache is empty)."""
        with self._lock:
            return self._remove(next(iter(self._entries))) if self._entries else 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes the entries hold."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _remove(self, key: InversionKey) -> int:
        """Drop ``key`` if present (lock held); the bytes freed."""
        entry = self._entries.pop(key, None)
        freed = 0 if entry is None else entry.nbytes
        self._nbytes -= freed
        return freed

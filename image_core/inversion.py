"""The Inversion value: everything an edit needs, returned by ``invert`` and saved without pickle."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from .errors import InputError, InversionMismatchError
from .schedule import Schedule

FORMAT = "ddpm-inversion/2"
_FORMAT_1 = "ddpm-inversion/1"  # the residual, if any, stored as the last noise map
_TENSORS = ("x0", "xts", "zs", "timesteps", "residual")  # zs and residual may be absent
METHODS = ("ddpm", "ddim", "null-text")  # edit-friendly DDPM; deterministic DDIM; DDIM + optimised unconditional branch
_UNCOND = "uncond."  # prefix of the tensors of the per-step unconditional condition in a file


def check_inversion_method(method: str) -> None:
    """Refuse an inversion method that does not exist."""
    if method not in METHODS:
        raise InputError(f"unknown inversion method {method!r}: use {' or '.join(METHODS)}")


def check_inversion_eta(method: str, eta: float) -> None:
    """Refuse a sampler noise other than the default for a deterministic inversion (it cannot act)."""
    if method != "ddpm" and eta != 1.0:
        raise InputError(f"{method} inversion is deterministic (no sampler noise), so eta cannot act: leave it out")


@dataclass(frozen=True)
class InversionSettings:
    """How an inversion was made; an edit must use the same model and schedule."""

    model: str  # fingerprint of the model (family, configs, weight checksum)
    num_steps: int  # N, steps of the full chain
    t_start: int  # steps the edit runs (the inversion covers only these)
    eta: float  # noise level of the sampler: in (0, 1] for "ddpm", 0 for "ddim"
    cfg_src: float  # guidance scale of the source prompt during inversion (null-text: the one optimised for)
    source_prompt: str
    seeds: tuple[int, ...]  # one per inverted latent
    method: str = "ddpm"  # one of METHODS
    inner_steps: int = 0  # null-text: Adam steps per step (0 for the other methods)
    early_stop: float = 0.0  # null-text: the loss below which a step stopped early


@dataclass(frozen=True)
class Inversion:
    """Noise maps of B inverted latents (tensors in the latent dtype: float64, float32 on MPS).

    Attributes:
        x0: (B, ...) clean latents.
        xts: (B, K, ...) x_t at the K = t_start timesteps the edit runs, xts[:, 0] = x_{t_start}.
        zs: (B, K, ...) noise maps z ~ N(0, I); sampling from xts[:, 0] with them regenerates x0.
            None for DDIM and null-text inversions (deterministic: xts is their trajectory).
        timesteps: (K,) descending: int64 on the VP path, float64 (EDM noise levels, flow times)
            on the others (see ``schedule``).
        settings: how it was made.
        meta: JSON-able facts of the input a frontend needs to write outputs (size, sample rate...).
        residual: (B, ...) x0 - μ of the chain's last step where σ is zero there (a scheduler whose
            final alpha is one), added back at that step; None otherwise (SD, AudioLDM).
        uncond: a null-text inversion's unconditional condition of every step, each tensor
            (B, K, ...) (row [:, j]: the j-th step's); None for the other methods.
    """

    x0: torch.Tensor
    xts: torch.Tensor
    zs: torch.Tensor | None
    timesteps: torch.Tensor
    settings: InversionSettings
    meta: dict[str, Any] = field(default_factory=dict)
    residual: torch.Tensor | None = None
    legacy_last_map: bool = False  # read from a format-1 file: a residual may still sit in zs[:, -1]
    uncond: dict[str, torch.Tensor] | None = None

    @property
    def num_latents(self) -> int:
        """B, the number of inverted latents (one per seed)."""
        return self.x0.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor it holds, by its name in a file (``uncond.<key>`` for the per-step conditions)."""
        found = {name: getattr(self, name) for name in _TENSORS if getattr(self, name) is not None}
        found.update({_UNCOND + key: value for key, value in (self.uncond or {}).items()})
        return found

    def to(self, device: str | torch.device) -> Inversion:
        """This inversion with every tensor on ``device`` (itself where all are there already)."""
        target = torch.device(device)
        if all(t.device.type == target.type and target.index in (None, t.device.index) for t in self.tensors().values()):
            return self
        def move(tensor: torch.Tensor) -> torch.Tensor:  # MPS has no float64: float32 there, cast before the move
            return (tensor.float() if target.type == "mps" and tensor.dtype == torch.float64 else tensor).to(device)

        moved = {name: move(getattr(self, name)) for name in _TENSORS if getattr(self, name) is not None}
        uncond = None if self.uncond is None else {key: move(value) for key, value in self.uncond.items()}
        return replace(self, **moved, uncond=uncond)

    def fit(self, model: str, schedule: Schedule) -> Inversion:
        """This inversion, checked to be made with ``model`` and ``schedule`` (else
        ``InversionMismatchError``); a format-1 file's residual is moved out of its last noise map
        where the schedule's last σ is zero."""
        self.check_fits(model, schedule)
        if not self.legacy_last_map or self.zs is None:
            return self
        if float(schedule.alphas_prev[-1]) < 1:
            return replace(self, legacy_last_map=False)
        zs = self.zs.clone()
        residual = zs[:, -1].clone()
        zs[:, -1] = 0
        return replace(self, zs=zs, residual=residual, legacy_last_map=False)

    def check_fits(self, model: str, schedule: Schedule) -> None:
        """Raise ``InversionMismatchError`` unless this inversion was made with ``model`` and ``schedule``."""
        if model != self.settings.model:
            raise InversionMismatchError(
                "this inversion was made with another model or window setting "
                f"({self.settings.model}, not {model}): invert the input again with this editor"
            )
        expected = schedule.timesteps[schedule.last(self.settings.t_start)]
        if not torch.equal(expected, self.timesteps.cpu()):
            raise InversionMismatchError(
                "this inversion's timesteps do not fit the model's scheduler "
                f"(steps={self.settings.num_steps}, tstart={self.settings.t_start}): invert again"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a safetensors file (tensors) with the settings and meta as JSON metadata."""
        from safetensors.torch import save_file

        tensors = self.tensors()
        metadata = {
            "format": _FORMAT_1 if self.legacy_last_map else FORMAT,
            "settings": json.dumps(self._settings_record()),
            "meta": json.dumps(self.meta),
        }
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, os.fspath(path), metadata)

    def _settings_record(self) -> dict[str, Any]:
        """The settings as saved: without the null-text fields for the other methods, so that their
        files stay readable where those fields are unknown."""
        record = asdict(self.settings)
        if self.settings.method != "null-text":
            del record["inner_steps"], record["early_stop"]
        return record

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Inversion:
        """Read a file written by ``save``; a file of another kind gives an ``InputError``."""
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
                metadata = f.metadata() or {}
                if metadata.get("format") not in (FORMAT, _FORMAT_1):
                    raise InputError(f"{path} is not an inversion file (format {metadata.get('format')!r})")
                tensors = {key: f.get_tensor(key) for key in _TENSORS if key in f.keys()}
                tensors.setdefault("zs", None)
                uncond = {key[len(_UNCOND):]: f.get_tensor(key) for key in f.keys() if key.startswith(_UNCOND)}
            settings = json.loads(metadata["settings"])
            settings["seeds"] = tuple(settings["seeds"])
            legacy = metadata["format"] == _FORMAT_1
            meta = json.loads(metadata["meta"])
            inv = cls(
                **tensors, settings=InversionSettings(**settings), meta=meta, legacy_last_map=legacy, uncond=uncond or None
            )
        except InputError:
            raise
        except Exception as error:  # any decoding problem is the file's
            raise InputError(f"cannot read inversion file {path}: {error}".replace("\n", " ")) from None
        B, K = inv.num_latents, inv.settings.t_start
        method = inv.settings.method
        consistent = (
            method in METHODS
            and (inv.zs is None) == (method != "ddpm")
            and (inv.uncond is None) == (method != "null-text")
            and all(value.shape[:2] == (B, K) for value in (inv.uncond or {}).values())
            and (inv.zs is None or inv.xts.shape == inv.zs.shape)
            and inv.xts.shape[:2] == (B, K)
            and inv.x0.shape == (B, *inv.xts.shape[2:])
            and len(inv.timesteps) == K
            and len(inv.settings.seeds) == B
            and (inv.residual is None or inv.residual.shape == inv.x0.shape)
        )
        if not consistent:
            raise InputError(f"inversion file {path} is inconsistent (tensor shapes do not match its settings)")
        return inv

"""The Inversion value: everything an edit needs, returned by ``invert`` and saved without pickle."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .errors import InputError, InversionMismatchError
from .schedule import Schedule

FORMAT = "ddpm-inversion/1"


@dataclass(frozen=True)
class InversionSettings:
    """How an inversion was made; an edit must use the same model and schedule."""

    model: str  # fingerprint of the model (family, configs, weight checksum)
    num_steps: int  # N, steps of the full chain
    t_start: int  # steps the edit runs (the inversion covers only these)
    eta: float  # noise level of the sampler, in (0, 1]
    cfg_src: float  # guidance scale of the source prompt during inversion
    source_prompt: str
    seeds: tuple[int, ...]  # one per inverted latent


@dataclass(frozen=True)
class Inversion:
    """Noise maps of B inverted latents (tensors in the latent dtype: float64, float32 on MPS).

    Attributes:
        x0: (B, ...) clean latents.
        xts: (B, K, ...) x_t at the K = t_start timesteps the edit runs, xts[:, 0] = x_{t_start}.
        zs: (B, K, ...) noise maps; sampling from xts[:, 0] with them regenerates x0.
        timesteps: (K,) int64, descending.
        settings: how it was made.
        meta: JSON-able facts of the input a frontend needs to write outputs (size, sample rate...).
    """

    x0: torch.Tensor
    xts: torch.Tensor
    zs: torch.Tensor
    timesteps: torch.Tensor
    settings: InversionSettings
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_latents(self) -> int:
        """B, the number of inverted latents (one per seed)."""
        return self.x0.shape[0]

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

        tensors = {"x0": self.x0, "xts": self.xts, "zs": self.zs, "timesteps": self.timesteps}
        metadata = {
            "format": FORMAT,
            "settings": json.dumps(asdict(self.settings)),
            "meta": json.dumps(self.meta),
        }
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, os.fspath(path), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Inversion:
        """Read a file written by ``save``; a file of another kind gives an ``InputError``."""
        from safetensors import safe_open

        try:
            with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise InputError(f"{path} is not an inversion file (format {metadata.get('format')!r})")
                tensors = {key: f.get_tensor(key) for key in ("x0", "xts", "zs", "timesteps")}
            settings = json.loads(metadata["settings"])
            settings["seeds"] = tuple(settings["seeds"])
            inv = cls(**tensors, settings=InversionSettings(**settings), meta=json.loads(metadata["meta"]))
        except InputError:
            raise
        except Exception as error:  # any decoding problem is the file's
            raise InputError(f"cannot read inversion file {path}: {error}".replace("\n", " ")) from None
        B, K = inv.num_latents, inv.settings.t_start
        consistent = (
            inv.xts.shape == inv.zs.shape
            and inv.xts.shape[:2] == (B, K)
            and inv.x0.shape == (B, *inv.xts.shape[2:])
            and len(inv.timesteps) == K
            and len(inv.settings.seeds) == B
        )
        if not consistent:
            raise InputError(f"inversion file {path} is inconsistent (tensor shapes do not match its settings)")
        return inv

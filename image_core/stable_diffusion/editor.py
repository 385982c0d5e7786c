"""``ImageEditor``: invert a real image and edit it with text, with Stable Diffusion."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from ..editing import LatentEditor
from ..errors import InputError
from ..inversion import Inversion
from ..masks import load_mask, save_mask
from ..methods import null_text
from ..methods.pcs import AMOUNT, PosteriorPCs
from ..methods.sega import Concept
from .images import ImageInput, load_image, model_size, to_pil, to_tensor
from .model import DEFAULT_MODEL, StableDiffusionModel

OutputType = Literal["pil", "np", "pt", "latent"]


class ImageEditor(LatentEditor):
    """Text-based editing of real images by edit-friendly DDPM inversion.

    Defaults are the image paper's (Huberman-Spiegelglas et al., CVPR 2024): 100 steps, the edit
    running the last 64 (skip 36), source guidance 3.5, target guidance 15, eta 1.
    """

    model: StableDiffusionModel

    @classmethod
    def from_pretrained(
        cls,
        name: str = DEFAULT_MODEL,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        **kwargs: Any,
    ) -> ImageEditor:
        """Load a hub id, a local folder (diffusers layout) or "tiny"; kwargs go to ``LatentEditor``."""
        return cls(StableDiffusionModel.from_pretrained(name, device, dtype), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save the model in the diffusers layout."""
        self.model.save_pretrained(folder)

    def invert(
        self,
        image: ImageInput,
        source_prompt: str = "",
        num_steps: int = 100,
        t_start: int = 64,
        cfg_src: float = 3.5,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        method: str = "ddpm",
        inner_steps: int = null_text.INNER_STEPS,
        early_stop: float = null_text.EARLY_STOP,
    ) -> Inversion:
        """Invert an image (path or PIL); several seeds give several inversions (diverse edits).

        The model sees the image at about its native area (512² for SD 1.x), aspect ratio kept, sides
        multiples of 64; edits come back at the input's size. ``method``: "ddpm" (edit-friendly),
        "ddim" (the deterministic baseline; one seed) or "null-text" (DDIM with an unconditional
        branch optimised per step for guidance ``cfg_src``, the scale edits will use; see
        ``LatentEditor.invert_latent`` for ``inner_steps`` and ``early_stop``).
        """
        x0, meta = self._encode(image)
        return self.invert_latent(x0, source_prompt, num_steps, t_start, cfg_src, eta, seed, meta, method, inner_steps, early_stop)

    def _encode(self, image: ImageInput) -> tuple[torch.Tensor, dict[str, Any]]:
        picture = load_image(image)
        size = model_size(*picture.size, self.model.native_size, self.model.pixel_multiple)
        return self.model.encode(to_tensor(picture, size)), {"size": list(picture.size)}

    def sdedit(
        self,
        image: ImageInput,
        target_prompt: str | Sequence[str],
        num_steps: int = 100,
        t_start: int = 64,
        cfg_tar: float | Sequence[float] = 15.0,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        negative_prompt: str = "",
        output_type: OutputType = "pil",
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """SDEdit (the baseline): noise the image to ``t_start`` and sample the target with fresh noise.
        T targets x S seeds, item i * S + j: target i, seed j."""
        x0, meta = self._encode(image)
        latents = self.sdedit_latent(x0, target_prompt, num_steps, t_start, cfg_tar, eta, seed, negative_prompt)
        return self._output(latents, meta, output_type)

    def mask(self, inv: Inversion, target_prompt: str, source_prompt: str | None = None, **options: Any) -> torch.Tensor:
        """The DiffEdit mask (1, 1, h, w) over the latent grid where the target and source descriptions
        disagree; options: strength, draws, threshold, seed (see ``LatentEditor.mask_latent``)."""
        return self.mask_latent(inv, target_prompt, source_prompt, **options)

    def region_mask(self, inv: Inversion, box: Sequence[float]) -> torch.Tensor:
        """(1, 1, h, w) mask of a box (x0, y0, x1, y1) in the input's pixels: the latent cells it touches."""
        W, H = inv.meta["size"]
        h, w = inv.x0.shape[2:]
        if len(box) != 4 or not all(np.isfinite(box)):
            raise InputError(f"a box is x0,y0,x1,y1 in pixels, got {list(box)}")
        x_lo, y_lo, x_hi, y_hi = box
        if not (0 <= x_lo < x_hi <= W and 0 <= y_lo < y_hi <= H):
            raise InputError(f"the box {list(box)} does not lie inside the {W}x{H} image")
        mask = torch.zeros(1, 1, h, w, dtype=torch.float64)
        mask[..., math.floor(y_lo * h / H) : math.ceil(y_hi * h / H), math.floor(x_lo * w / W) : math.ceil(x_hi * w / W)] = 1
        return mask

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """Write a mask as a black and white PNG at the input's size (white = edit); ``load_mask`` reads it."""
        grid = self.check_mask(mask, inv.x0)[0, 0]
        picture = Image.fromarray((grid.numpy() * 255).astype(np.uint8), "L").resize(tuple(inv.meta["size"]), Image.NEAREST)
        save_mask(path, grid, picture)

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """(1, 1, h, w) mask from a PNG written by ``save_mask`` or painted (white = edit, any size)."""
        return self.check_mask(load_mask(path, tuple(inv.x0.shape[2:]))[None, None], inv.x0)

    def edit(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str] | None,
        cfg_tar: float | Sequence[float] = 15.0,
        negative_prompt: str = "",
        output_type: OutputType = "pil",
        mask: torch.Tensor | None = None,
        concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None = None,
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Edit with T target prompts; returns T * B results (row i * B + j: target i, inversion j).

        output_type: "pil" (list of images at the input's size), "np" ((N, H, W, 3) float in [0, 1]),
        "pt" ((N, 3, H, W) float in [0, 1]) or "latent" ((N, 4, h, w) float64 latents, not decoded).
        mask: (1, 1, h, w) from ``mask``/``region_mask``/``load_mask``: the edit keeps the rest.
        concepts: LEDITS semantic guidance, ``Concept("glasses", scale=10, remove=False)`` values (or
            K sets of them: K * T * B results); ``target_prompt`` None keeps the source prompt.
        """
        latents = self.edit_latent(inv, target_prompt, cfg_tar, negative_prompt, mask=mask, concepts=concepts)
        return self._output(latents, inv.meta, output_type)

    def edit_pc(
        self,
        inv: Inversion,
        pcs: PosteriorPCs,
        pc: int | Sequence[int] = 1,
        amount: float | Sequence[float] = AMOUNT,
        output_type: OutputType = "pil",
    ) -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Prompt-free edits: the input moved along principal components of the posterior (from
        ``principal_components(inv, n, step, region)``) by amounts in standard deviations; all
        (pc, amount) pairs in one batch, item (i * len(amount) + a) * B + j."""
        return self._output(self.edit_pc_latent(inv, pcs, pc, amount), inv.meta, output_type)

    def reconstruct(self, inv: Inversion, output_type: OutputType = "pil") -> list[Image.Image] | np.ndarray | torch.Tensor:
        """Regenerate the inverted image(s) from the noise maps (the input, up to the VAE's error)."""
        return self._output(self.reconstruct_latent(inv), inv.meta, output_type)

    def _output(self, latents: torch.Tensor, meta: dict[str, Any], output_type: OutputType) -> Any:
        if output_type == "latent":
            return latents
        if output_type not in ("pil", "np", "pt"):
            raise InputError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        images = to_pil(self.model.decode(latents), tuple(meta["size"]))
        if output_type == "pil":
            return images
        array = np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images])
        return array if output_type == "np" else torch.from_numpy(array).permute(0, 3, 1, 2)

"""A frontend is a codec: inputs to latents and latents back to outputs, composed into one ``Editor``.

Everything between (prompts, guidance, inversions, the methods) is ``LatentEditor``'s and the
same for every modality; a frontend adds only what its inputs and outputs need: reading and
checking an input, encoding it, decoding latents into outputs, its regions and mask pictures, and
the paper defaults of its model family. Both editors (``ImageEditor``, ``AudioEditor``) are this
``Editor`` with their codec; a third frontend is a codec and a model adapter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from .editing import LatentEditor, LatentModel
from .errors import InputError
from .guidance import Denoiser
from .inversion import Inversion, check_inversion_eta, check_inversion_method
from .methods import flowedit as flowedit_method
from .methods import null_text
from .methods.pcs import AMOUNT, PosteriorPCs
from .methods.sega import Concept
from .p2p import AttentionMaps, P2POptions, prompt_to_prompt
from .settings import check_settings, seed_list, targets_and_scales


@dataclass(frozen=True)
class Defaults:
    """The paper defaults of a frontend's edits (every ``None`` argument of ``Editor`` takes these)."""

    num_steps: int  # N, steps of the chain
    t_start: int  # steps the edit runs
    cfg_src: float  # guidance of the source prompt during inversion
    cfg_tar: float  # guidance of the target prompts
    output_type: str  # what edits return unless asked otherwise


@dataclass(frozen=True)
class Source:
    """An input read and checked by a codec: its decoded data and the facts its outputs need."""

    data: Any
    meta: dict[str, Any] = field(default_factory=dict)


class Codec(Protocol):
    """What a frontend provides."""

    defaults: Defaults
    output_types: tuple[str, ...]  # besides "latent"

    def read(self, item: Any) -> Source:
        """Decode and check an input (a path, or the frontend's in-memory value); InputError if bad."""
        ...

    def latent_shape(self, source: Source) -> tuple[int, ...]:
        """(C, ...) of the input's latent, known before encoding (for the memory check)."""
        ...

    def encode(self, source: Source) -> torch.Tensor:
        """(1, C, ...) float32 latent of the input."""
        ...

    def write(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str) -> Any:
        """(N, C, ...) latents -> N outputs of ``output_type`` (one of ``output_types``)."""
        ...

    def region_mask(self, inv: Inversion, *args: Any, **kwargs: Any) -> torch.Tensor:
        """A mask over the latent grid from the frontend's own description of a region."""
        ...

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """Write a checked mask as a picture that ``load_mask`` reads back."""
        ...

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """A mask from a picture (written by ``save_mask`` or painted)."""
        ...

    def picture(self, inv: Inversion, grids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The input as an (H, W, 3) uint8 picture, and ``grids`` (..., h, w) over the latent grid
        turned to the picture's orientation (for drawing maps over the input)."""
        ...


class Editor(LatentEditor):
    """Inversion and editing of a frontend's inputs: ``LatentEditor`` with a codec around it.

    Args:
        model: the model adapter; codec: the frontend's inputs and outputs.
        denoiser, kwargs: ``LatentEditor`` options (denoiser, inversion_batch_size, progress).
    """

    def __init__(self, model: LatentModel, codec: Codec, denoiser: Denoiser | None = None, **kwargs: Any) -> None:
        super().__init__(model, denoiser, **kwargs)
        self.codec = codec

    def invert(
        self,
        item: Any,
        source_prompt: str = "",
        num_steps: int | None = None,
        t_start: int | None = None,
        cfg_src: float | None = None,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        method: str = "ddpm",
        inner_steps: int = null_text.INNER_STEPS,
        early_stop: float = null_text.EARLY_STOP,
    ) -> Inversion:
        """Invert an input; several seeds give several inversions (diverse edits).

        ``num_steps``, ``t_start``, ``cfg_src``: the frontend's defaults when None. ``method``:
        "ddpm" (edit-friendly), "ddim" (the deterministic baseline; one seed) or "null-text" (DDIM
        with an unconditional branch optimised per step for guidance ``cfg_src``, the scale edits
        will use; see ``LatentEditor.invert_latent`` for ``inner_steps`` and ``early_stop``).
        ``inv.meta`` keeps what the outputs need of the input (its size, rate, length, loudness).
        """
        d = self.codec.defaults
        num_steps = d.num_steps if num_steps is None else num_steps
        t_start = d.t_start if t_start is None else t_start
        cfg_src = d.cfg_src if cfg_src is None else cfg_src
        seeds = seed_list(seed)
        check_inversion_method(method)
        check_inversion_eta(method, eta)
        check_settings(num_steps, t_start, eta if method == "ddpm" else 1.0, cfg_src)  # before the input is decoded
        source = self.codec.read(item)
        self.check_inversion_memory(self.codec.latent_shape(source), len(seeds), t_start, method)
        x0 = self.codec.encode(source)
        return self.invert_latent(x0, source_prompt, num_steps, t_start, cfg_src, eta, seeds, source.meta, method, inner_steps, early_stop)

    def edit(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str] | None,
        cfg_tar: float | Sequence[float] | None = None,
        negative_prompt: str = "",
        output_type: str | None = None,
        mask: torch.Tensor | None = None,
        concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None = None,
    ) -> Any:
        """Edit with T target prompts: T * B results, item i * B + j is target i, inversion j.

        cfg_tar: one scale or one per target (the frontend's default when None). output_type: one of
        the codec's, or "latent" (the (N, C, ...) float64 latents, not decoded). mask: from ``mask``,
        ``region_mask`` or ``load_mask``: the edit keeps the input elsewhere. concepts: LEDITS
        semantic guidance, ``Concept(...)`` values (or K sets of them: K * T * B results);
        ``target_prompt`` None keeps the source prompt.
        """
        cfg_tar = self.codec.defaults.cfg_tar if cfg_tar is None else cfg_tar
        latents = self.edit_latent(inv, target_prompt, cfg_tar, negative_prompt, mask=mask, concepts=concepts)
        return self.output(latents, inv.meta, output_type)

    def edit_pc(
        self,
        inv: Inversion,
        pcs: PosteriorPCs,
        pc: int | Sequence[int] = 1,
        amount: float | Sequence[float] = AMOUNT,
        output_type: str | None = None,
        steps: range | None = None,
    ) -> Any:
        """Prompt-free edits: the input moved along principal components of the posterior (from
        ``principal_components(inv, n, step, region)``) by amounts in standard deviations; all
        (pc, amount) pairs in one batch, item (i * len(amount) + a) * B + j. ``steps``: where the
        drift acts (``LatentEditor.edit_pc_latent``)."""
        return self.output(self.edit_pc_latent(inv, pcs, pc, amount, steps), inv.meta, output_type)

    def edit_p2p(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str],
        mode: str = "replace",
        cross_steps: float | None = None,
        self_steps: float | None = None,
        reweight: dict[str, float] | None = None,
        blend: Sequence[str] = (),
        cfg_tar: float | Sequence[float] | None = None,
        negative_prompt: str = "",
        output_type: str | None = None,
        return_attention: bool = False,
    ) -> Any:
        """Prompt-to-Prompt: T targets edited with the source row's attention (Hertz et al., 2022),
        on a DDPM (any eta, several seeds), DDIM or null-text inversion; T * B results, item
        i * B + j target i, inversion j, the source row and all targets in one batch per step.

        mode: "replace" (a word swap; prompts of equal token length) or "refine" (words added or
        changed). cross_steps, self_steps: fractions of the N steps with cross- / self-attention
        injected (None: the inversion's default, ``image_core.p2p``). reweight: word -> factor of
        its attention. blend: words whose attention masks the edit (local blend; the rest of the
        input is kept). return_attention: also return the word maps (``AttentionMaps``; draw them
        with ``draw_attention``).
        """
        cfg_tar = self.codec.defaults.cfg_tar if cfg_tar is None else cfg_tar
        targets, cfgs = targets_and_scales(target_prompt, cfg_tar)
        s = inv.settings
        check_settings(s.num_steps, s.t_start, s.eta if s.method == "ddpm" else 1.0, *cfgs)
        options = P2POptions(mode, cross_steps, self_steps, dict(reweight or {}), tuple(blend))
        with torch.no_grad():
            latents, maps = prompt_to_prompt(self, inv, targets, cfgs, negative_prompt, options, return_attention)
        outputs = self.output(latents[inv.num_latents :], inv.meta, output_type)
        return (outputs, maps) if return_attention else outputs

    def draw_attention(self, maps: AttentionMaps, inv: Inversion, path: str | os.PathLike[str]) -> None:
        """Write the word maps of ``edit_p2p(..., return_attention=True)`` as a PNG: one row per
        prompt, one panel per token, drawn over the input (``attention_pictures``)."""
        from . import attention_pictures

        background, grids = self.codec.picture(inv, maps.maps.permute(0, 3, 1, 2))
        attention_pictures.draw(path, background, maps.prompts, maps.tokens, np.moveaxis(np.asarray(grids), 1, -1))

    def reconstruct(self, inv: Inversion, output_type: str | None = None) -> Any:
        """Regenerate the inverted input(s) from the inversion (the input, up to the codec's error)."""
        return self.output(self.reconstruct_latent(inv), inv.meta, output_type)

    def sdedit(
        self,
        item: Any,
        target_prompt: str | Sequence[str],
        num_steps: int | None = None,
        t_start: int | None = None,
        cfg_tar: float | Sequence[float] | None = None,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        negative_prompt: str = "",
        output_type: str | None = None,
    ) -> Any:
        """SDEdit (the baseline): noise the input to ``t_start`` and sample the targets with fresh
        noise. T targets x S seeds, item i * S + j: target i, seed j."""
        d = self.codec.defaults
        num_steps = d.num_steps if num_steps is None else num_steps
        t_start = d.t_start if t_start is None else t_start
        cfg_tar = d.cfg_tar if cfg_tar is None else cfg_tar
        check_settings(num_steps, t_start, eta)
        source = self.codec.read(item)
        latents = self.sdedit_latent(self.codec.encode(source), target_prompt, num_steps, t_start, cfg_tar, eta, seed, negative_prompt)
        return self.output(latents, source.meta, output_type)

    def flowedit(
        self,
        item: Any,
        target_prompt: str | Sequence[str],
        source_prompt: str = "",
        num_steps: int = flowedit_method.NUM_STEPS,
        n_max: int = flowedit_method.N_MAX,
        n_min: int = flowedit_method.N_MIN,
        n_avg: int = flowedit_method.N_AVG,
        cfg_src: float = flowedit_method.CFG_SRC,
        cfg_tar: float | Sequence[float] = flowedit_method.CFG_TAR,
        seed: int | Sequence[int] = 0,
        negative_prompt: str = "",
        output_type: str | None = None,
    ) -> Any:
        """FlowEdit (Kulikov et al., ICCV 2025): no inversion; from ``n_max`` steps before the end the
        edit moves by the difference of the target's and the source's denoising steps at freshly
        noised copies of the input, then samples the last ``n_min`` steps. T targets x S seeds, item
        i * S + j. Defaults: the paper's SD3 settings (50 steps, n_max 33, n_min 0, n_avg 1, guidance
        3.5 / 13.5); on this model's path it is the same construction on its probability-flow ODE
        (``methods.flowedit``)."""
        from .flowedit_edit import flowedit_latents

        source = self.codec.read(item)
        latents = flowedit_latents(
            self, self.codec.encode(source), source_prompt, target_prompt, num_steps, n_max, n_min, n_avg, cfg_src, cfg_tar,
            seed, negative_prompt,
        )  # fmt: skip
        return self.output(latents, source.meta, output_type)

    def output(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str | None = None) -> Any:
        """Latents as the codec's outputs of ``output_type`` (its default when None), or as they are
        for "latent"."""
        output_type = self.codec.defaults.output_type if output_type is None else output_type
        if output_type == "latent":
            return latents
        if output_type not in self.codec.output_types:
            *first, last = [*self.codec.output_types, "latent"]
            raise InputError(f"output_type must be {', '.join(first)} or {last}, got {output_type!r}")
        return self.codec.write(latents, meta, output_type)

    # -------------------------------------------------------------------------------------------- masks

    def mask(self, inv: Inversion, target_prompt: str, source_prompt: str | None = None, **options: Any) -> torch.Tensor:
        """The DiffEdit mask (1, 1, ...) over the latent grid where the target and source descriptions
        disagree; options: strength, draws, threshold, seed (``LatentEditor.mask_latent``)."""
        return self.mask_latent(inv, target_prompt, source_prompt, **options)

    def region_mask(self, inv: Inversion, *args: Any, **kwargs: Any) -> torch.Tensor:
        """(1, 1, ...) mask of a region in the frontend's terms (see its codec's ``region_mask``)."""
        return self.check_mask(self.codec.region_mask(inv, *args, **kwargs), inv.x0)

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """Write a mask as a picture (see the codec's ``save_mask``); ``load_mask`` reads it back."""
        self.codec.save_mask(self.check_mask(mask, inv.x0), path, inv)

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """(1, 1, ...) mask from a picture written by ``save_mask`` or painted (white = edit)."""
        return self.check_mask(self.codec.load_mask(path, inv), inv.x0)

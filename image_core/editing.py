"""The methods behind one model adapter, in latent space: shared by the image and audio editors.

A frontend turns its input into latents x0 and a model adapter into a ``LatentModel``; everything
between (schedule, guidance, the methods of ``methods/`` and the one reverse loop) happens here,
once. The entry points run without gradients; the denoisers below them stay differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from . import adapters, batching
from .batching import Cond
from .errors import EditError, InputError
from .guidance import ClassifierFreeGuidance, Denoiser, guided
from .inversion import METHODS, Inversion, InversionSettings
from .methods.ddim import ddim_invert
from .methods.ddpm import ddpm_edit, ddpm_invert
from .methods.null_text import EARLY_STOP, INNER_STEPS, LEARNING_RATE, check_null_text_settings, null_text_invert
from .methods.diffedit import DRAWS, STRENGTH, THRESHOLD, diffedit_mask, keep_outside
from .methods.sdedit import sdedit
from .methods import pcs as pcs_method
from .methods.sega import Concept, SemanticGuidance, check_concepts, semantic
from .sampling import Callback, CondArg, sample
from .schedule import Schedule
from .settings import check_seeds, check_settings


class LatentModel(Protocol):
    """What the editing loops need of a model adapter."""

    scheduler_config: Mapping[str, Any]
    device: torch.device  # where latents and noise maps are sampled
    null_text_keys: tuple[str, ...]  # the tensors of an unconditional row null-text inversion optimises

    def encode_prompts(self, prompts: list[str]) -> Cond:
        """One condition row per prompt; "" is the unconditional branch."""
        ...

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The ``Denoiser`` contract over the model's latents."""
        ...

    def fingerprint(self) -> str:
        """A string that identifies the model's configs and weights."""
        ...


def latent_dtype(device: torch.device) -> torch.dtype:
    """The dtype of latents, noise maps and sampler arithmetic: float64 (float32 on MPS, which has no
    float64), whatever the model's dtype. The sampler then retraces the inverted x_t to ~1e-16, so a
    float16 UNet sees the very same inputs when reconstructing; float32 latents put one float32 ulp
    between them, enough to flip float16 roundings (4e-2 reconstruction error with the tiny audio model)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise InputError(f"give at least one {what}")
    for text in values:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
    return values


def check_method(method: str) -> None:
    """Refuse an inversion method that does not exist."""
    if method not in METHODS:
        raise InputError(f"unknown inversion method {method!r}: use {' or '.join(METHODS)}")


def check_mask_settings(strength: float, draws: int, threshold: float) -> None:
    """Refuse DiffEdit mask settings outside their ranges."""
    if not (isinstance(strength, (int, float)) and 0 < strength <= 1):
        raise InputError(f"mask strength must be in (0, 1], got {strength}")
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 100:
        raise InputError(f"mask draws must be a whole number from 1 to 100, got {draws}")
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
        raise InputError(f"mask threshold must be in [0, 1), got {threshold}")


def _concept_sets(concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None) -> list[list[Concept]]:
    """K sets of concepts (one empty set without concepts), each checked."""
    if not concepts:
        return [[]]
    sets = [list(concepts)] if isinstance(concepts[0], Concept) else [list(cs) for cs in concepts]
    for concept_set in sets:
        check_concepts(concept_set)
    return sets


def _then(first: Callback | None, second: Callback) -> Callback:
    """A callback running ``first`` (if any), then ``second`` on its result."""
    if first is None:
        return second
    return lambda step: second(replace(step, x_s=first(step)))


def _finite(latents: torch.Tensor, cfgs: Sequence[float]) -> torch.Tensor:
    if not torch.isfinite(latents).all():
        raise EditError(f"the edit diverged (NaN or Inf in the result): use a lower guidance scale than {max(cfgs)}")
    return latents


class LatentEditor:
    """Edit-friendly DDPM inversion and editing of latents with one model.

    Args:
        model: the model adapter.
        denoiser: the ε-predictor to sample with; the model's own ``predict_eps`` by default (the
            audio frontend passes a windowed one for long inputs).
        inversion_batch_size: (x_t, t) rows per model call during inversion; bounds its memory.
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        model: LatentModel,
        denoiser: Denoiser | None = None,
        inversion_batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.denoiser = denoiser or model.predict_eps
        self.guided_denoiser = ClassifierFreeGuidance(self.denoiser)
        self.inversion_batch_size = inversion_batch_size
        self.progress = progress
        self._uncond_bytes: int | None = None  # float32 bytes of one unconditional row (null-text), once known

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """(x_t, t) rows per denoiser call of the inversion of latents like ``x0``."""
        return self.inversion_batch_size

    def fingerprint(self) -> str:
        """What an inversion must have been made with to be edited here: the model's fingerprint
        (frontends add whatever else changes the noise estimates, such as a window overlap)."""
        return self.model.fingerprint()

    def inversion_bytes(self, latent_shape: Sequence[int], num_seeds: int, t_start: int, method: str = "ddpm") -> int:
        """Bytes an inversion holds: the x_t and noise maps of ``num_seeds`` latents of ``latent_shape``
        = (C, ...) at ``t_start`` steps, in the latent dtype (DDIM and null-text keep no noise maps;
        null-text keeps a float32 unconditional condition per step instead)."""
        element = torch.finfo(latent_dtype(self.model.device)).bits // 8
        per_step = (2 if method == "ddpm" else 1) * math.prod(latent_shape) * element
        if method == "null-text":
            if self._uncond_bytes is None:  # the model's condition shapes: encoded once per editor
                self._uncond_bytes = sum(value[0].numel() * 4 for value in batching.leaves(self.model.encode_prompts([""])))
            per_step += self._uncond_bytes
        return num_seeds * t_start * per_step

    def check_inversion_memory(self, latent_shape: Sequence[int], num_seeds: int, t_start: int, method: str = "ddpm") -> None:
        """Refuse, before any encoding, an inversion that would not fit in free memory (``inversion_bytes``)."""
        adapters.check_memory(
            self.inversion_bytes(latent_shape, num_seeds, t_start, method), self.model.device,
            "the inversion's x_t and noise maps", "use a lower tstart, fewer seeds or a shorter input",
        )

    def _condition(self, prompts: list[str], negative: str, cfgs: list[float], repeats: int, learned: bool = False) -> Cond:
        """Guided condition of len(prompts) * repeats rows (prompt-major), prompts encoded once.

        Evaluates the model once per sample instead of twice when guidance is a no-op for every
        row (scale 1, or the prompt is the unconditional one, unless the unconditional branch is
        ``learned``: a null-text inversion's, which ``_per_step`` puts in).
        """
        single = all(cfg == 1 or (prompt == negative and not learned) for prompt, cfg in zip(prompts, cfgs))
        encoded = self.model.encode_prompts(prompts if single else [*prompts, negative])
        rows = torch.arange(len(prompts)).repeat_interleave(repeats)
        cond = batching.take(encoded, rows)
        if single:
            return guided(cond)
        uncond = batching.take(encoded, torch.full_like(rows, len(prompts)))
        return guided(cond, uncond, torch.tensor(cfgs, dtype=torch.float64)[rows])

    def _per_step(self, inv: Inversion | None, cond: Cond, first: int = 0) -> CondArg:
        """``cond`` as it is, or, for a null-text inversion, a function of the run's step j giving
        ``cond`` with the unconditional rows of the inversion's step ``first + j`` (inversion b at the
        rows i * B + b, in the dtype of the rows they replace)."""
        if inv is None or inv.uncond is None or "uncond" not in cond:  # type: ignore[operator]
            return cond
        stored, replaced = inv.uncond, cond["uncond"]  # type: ignore[index]
        times = batching.batch_size(replaced) // inv.num_latents

        def at(j: int) -> Cond:
            rows = {key: value[:, first + j].to(self.model.device, replaced[key].dtype) for key, value in stored.items()}
            return {**cond, "uncond": batching.tile(rows, times)}  # type: ignore[dict-item]

        return at

    @torch.no_grad()
    def invert_latent(
        self,
        x0: torch.Tensor,
        source_prompt: str = "",
        num_steps: int = 100,
        t_start: int = 64,
        cfg_src: float = 3.5,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        meta: Mapping[str, Any] | None = None,
        method: str = "ddpm",
        inner_steps: int = INNER_STEPS,
        early_stop: float = EARLY_STOP,
    ) -> Inversion:
        """Invert latents; several seeds give several inversions (different noise maps) of one input.

        Args:
            x0: (1, ...) one latent, or (B, ...) with one seed per latent.
            cfg_src: the guidance scale of the source prompt during inversion; for "null-text", the
                scale its unconditional conditions are optimised for, i.e. the scale edits will use
                (the paper's 7.5; its pivot is DDIM inversion at scale 1).
            eta: sampler noise of a DDPM inversion (its edits use the same); DDIM's is 0.
            seed: one seed, or a sequence of seeds (DDIM and null-text inversion are deterministic: one).
            method: "ddpm" (edit-friendly, exact at any guidance), "ddim" (deterministic baseline) or
                "null-text" (DDIM inversion with an unconditional condition optimised per step, see
                ``methods.null_text``).
            inner_steps, early_stop: null-text: Adam steps per step (the paper's 10) and the loss below
                which a step stops early (the paper's 1e-5, growing along the run; 0: never).
        Returns:
            An ``Inversion`` of max(B, len(seeds)) latents.
        """
        seeds = self._seeds(seed)
        check_method(method)
        check_settings(num_steps, t_start, eta if method == "ddpm" else 1.0, cfg_src)
        check_null_text_settings(inner_steps, LEARNING_RATE, early_stop)
        if method != "ddpm" and (len(seeds) > 1 or x0.shape[0] > 1):
            raise InputError(f"{method} inversion is deterministic and inverts one latent: give one seed and one latent")
        x0 = x0.to(self.model.device, latent_dtype(self.model.device))
        if x0.shape[0] == 1 and len(seeds) > 1:
            x0 = x0.expand(len(seeds), *x0.shape[1:])
        schedule = Schedule.from_config(self.model.scheduler_config, num_steps)
        self.check_inversion_memory(x0.shape[1:], len(seeds), t_start, method)
        zs = residual = uncond = None
        if method == "null-text":
            encoded = self.model.encode_prompts([source_prompt])
            start = self.model.encode_prompts([""])
            rows = torch.zeros(x0.shape[0], dtype=torch.long)
            result = null_text_invert(
                self.denoiser, schedule, x0, batching.take(encoded, rows), batching.take(start, rows),  # type: ignore[arg-type]
                tuple(self.model.null_text_keys), t_start, cfg_src, inner_steps, early_stop=early_stop, progress=self.progress,
            )
            xts, uncond = result.xts, result.uncond
        else:
            cond = self._condition([source_prompt], "", [cfg_src], len(seeds))
            if method == "ddpm":
                xts, zs, residual = ddpm_invert(
                    self.guided_denoiser, schedule, x0, cond, t_start, eta, seeds, self.inversion_rows(x0), self.progress
                )
            else:
                xts = ddim_invert(self.guided_denoiser, schedule, x0, cond, t_start, self.progress)
        settings = InversionSettings(
            self.fingerprint(), num_steps, t_start, float(eta) if method == "ddpm" else 0.0, float(cfg_src),
            source_prompt, tuple(seeds), method, *((inner_steps, early_stop) if method == "null-text" else (0, 0.0)),
        )  # fmt: skip
        timesteps = schedule.timesteps[schedule.last(t_start)]
        return Inversion(x0.clone(), xts, zs, timesteps, settings, dict(meta or {}), residual, uncond=uncond)

    @staticmethod
    def _seeds(seed: int | Sequence[int]) -> list[int]:
        seeds = list(seed) if isinstance(seed, Sequence) else [seed]
        check_seeds(seeds)
        return [int(s) for s in seeds]

    @torch.no_grad()
    def edit_latent(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str] | None,
        cfg_tar: float | Sequence[float] = 15.0,
        negative_prompt: str = "",
        callback: Callback | None = None,
        mask: torch.Tensor | None = None,
        concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None = None,
    ) -> torch.Tensor:
        """Regenerate the inverted latents with other prompts, all targets and seeds in one batch.

        Args:
            target_prompt: T prompts (or one); None keeps the inversion's source prompt (editing by
                concepts alone, as LEDITS does).
            cfg_tar: one guidance scale, or one per target.
            negative_prompt: the prompt of the unconditional branch ("" as the models were trained).
            callback: called after every step of the edit with its ``sampling.Step``; returns x_s.
            mask: broadcastable to the latents (e.g. (1, 1, ...) from ``mask_latent``), 1 where the
                edit may change them; elsewhere every step keeps the inverted trajectory, so the
                output equals the input there (bitwise with a DDPM inversion).
            concepts: semantic guidance (LEDITS): ``Concept`` values to add or remove, or K sets
                of them (each set edits every target and inversion).
        Returns:
            (K * T * B, ...) latents; row k * T * B + i * B + j is concept set k (K = 1 without
            concepts), target i, inversion j.
        """
        sets = _concept_sets(concepts)
        if target_prompt is None and not any(sets):
            raise InputError("give a target prompt, or concepts to add or remove")
        targets, cfgs = self._targets(inv.settings.source_prompt if target_prompt is None else target_prompt, cfg_tar)
        s = inv.settings
        check_settings(s.num_steps, s.t_start, s.eta if s.method == "ddpm" else 1.0, *cfgs)
        schedule = Schedule.from_config(self.model.scheduler_config, s.num_steps)
        inv = inv.fit(self.fingerprint(), schedule)
        B, T = inv.num_latents, len(targets)
        learned = inv.uncond is not None
        if learned and negative_prompt != "":
            raise InputError("a null-text inversion brings its own unconditional branch (optimised from \"\"): leave out the negative prompt")
        if any(c.scale > 0 for concept_set in sets for c in concept_set):
            cond: Cond = self._semantic_condition(targets, negative_prompt, cfgs, B, sets)
            denoiser: Denoiser = SemanticGuidance(self.denoiser, channel_axis=1 if inv.x0.dim() > 2 else None)
        else:  # no concept guides: the plain edit (of each set, all equal)
            cond = batching.tile(self._condition(targets, negative_prompt, cfgs, B, learned), len(sets))
            denoiser = self.guided_denoiser
        if mask is not None:
            callback = _then(callback, keep_outside(self.check_mask(mask, inv.x0), inv.xts, inv.x0))
        x_t = inv.xts[:, 0].to(self.model.device).repeat(len(sets) * T, *([1] * (inv.x0.dim() - 1)))
        return _finite(self._regenerate(inv, schedule, x_t, cond, denoiser, callback), cfgs)

    def _regenerate(
        self, inv: Inversion, schedule: Schedule, x_t: torch.Tensor, cond: Cond, denoiser: Denoiser, callback: Callback | None
    ) -> torch.Tensor:
        """Sample the inversion's steps from ``x_t``: with its noise maps (DDPM), or deterministically
        (DDIM; null-text with its unconditional rows of each step)."""
        s = inv.settings
        cond = self._per_step(inv, cond)
        if s.method == "ddpm":
            return ddpm_edit(denoiser, schedule, x_t, inv.zs, cond, s.eta, inv.residual, callback, self.progress)
        return sample(denoiser, schedule, x_t, cond, schedule.last(s.t_start), 0.0, None, None, callback, self.progress, "editing")

    def _semantic_condition(
        self, targets: list[str], negative: str, cfgs: list[float], B: int, sets: list[list[Concept]]
    ) -> Cond:
        """The ``SemanticGuidance`` condition of K sets x T targets x B inversions, set-major, every
        prompt encoded once; sets with fewer concepts are padded with concepts of scale 0."""
        C = max(len(concept_set) for concept_set in sets)
        prompts = list(dict.fromkeys([*targets, negative, *(c.prompt for cs in sets for c in cs)]))
        encoded = self.model.encode_prompts(prompts)
        index = {prompt: i for i, prompt in enumerate(prompts)}
        rows = torch.tensor([index[t] for t in targets]).repeat_interleave(B).repeat(len(sets))
        scale = torch.tensor(cfgs, dtype=torch.float64).repeat_interleave(B).repeat(len(sets))
        guided_cond = guided(batching.take(encoded, rows), batching.take(encoded, torch.full_like(rows, index[negative])), scale)
        never = 2**62
        padded = [[*cs, *[Concept(negative, scale=0.0, warmup=never)] * (C - len(cs))] for cs in sets]
        per_row = [cs for cs in padded for _ in range(len(targets) * B)]  # (N, C) concepts
        concept_rows = torch.tensor([[index[c.prompt] for c in cs] for cs in per_row])
        concepts = batching.tree_map(lambda v: v[concept_rows], encoded)  # (N, C, ...)
        settings = {
            "scale": torch.tensor([[c.scale * c.weight * (-1 if c.remove else 1) for c in cs] for cs in per_row], dtype=torch.float64),
            "threshold": torch.tensor([[c.threshold for c in cs] for cs in per_row], dtype=torch.float64),
            "warmup": torch.tensor([[c.warmup for c in cs] for cs in per_row]),
            "cooldown": torch.tensor([[never if c.cooldown is None else c.cooldown for c in cs] for cs in per_row]),
        }
        return semantic(guided_cond, concepts, settings)

    def principal_components(
        self,
        inv: Inversion,
        n: int = 3,
        step: int = 0,
        region: torch.Tensor | None = None,
        max_iterations: int = pcs_method.MAX_ITERATIONS,
        tolerance: float = pcs_method.TOLERANCE,
        seed: int = 0,
    ) -> pcs_method.PosteriorPCs:
        """The top ``n`` principal components of the posterior at one step of an inversion (of its
        first latent), for prompt-free edits with ``edit_pc``.

        Args:
            step: which of the inversion's steps, 0 = x_{t_start} (the default: the edit's first
                step; sampling with the source prompt retraces the inverted x_t, so they are the
                points the edit passes). Steps above t_start are not in the inversion: invert with a
                higher tstart to reach them.
            region: 0/1 mask broadcastable to a latent restricting the components (a time range /
                band of a clip, a box of a picture), or None.
            max_iterations, tolerance: the subspace iteration's bound and stop (radians).
        """
        K = inv.settings.t_start
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < K:
            raise InputError(f"the step of the components must be between 0 and {K - 1} (the inversion covers {K} steps), got {step}")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise InputError(f"the number of components must be between 1 and 64, got {n}")
        schedule = Schedule.from_config(self.model.scheduler_config, inv.settings.num_steps)
        inv = inv.fit(self.fingerprint(), schedule)
        if region is not None:
            region = self.check_mask(region, inv.x0)
        k = schedule.last(K)[step]
        s = inv.settings
        per_step = self._per_step(inv, self._condition([s.source_prompt], "", [s.cfg_src], 1, inv.uncond is not None), step)
        cond = per_step(0) if callable(per_step) else per_step
        x_t = inv.xts[:1, step].to(self.model.device)
        with torch.no_grad():
            vectors, values, info = pcs_method.posterior_pcs(
                self.guided_denoiser, float(schedule.alphas[k]), int(schedule.timesteps[k]), x_t, cond, n, region,
                max_iterations, tolerance, seed=seed, progress=self.progress,
            )
            later = list(schedule.last(K)[step:])  # the variance along each vector at every later step
            conds = batching.cat([per_step(j) for j in range(len(later))]) if callable(per_step) else batching.repeat(per_step, len(later))
            variances = pcs_method.variances_along(
                self.guided_denoiser, schedule.alphas[later], schedule.timesteps[later], inv.xts[0, step:].to(self.model.device),
                conds, vectors, self.inversion_rows(x_t), self.progress,
            )  # fmt: skip
        info = {**info, "source_prompt": s.source_prompt, "cfg_src": s.cfg_src, "tolerance": tolerance}
        return pcs_method.PosteriorPCs(vectors.cpu(), values.cpu(), x_t[0].cpu(), step, int(schedule.timesteps[k]),
                                       None if region is None else region.cpu(), info, variances)  # fmt: skip

    @torch.no_grad()
    def edit_pc_latent(
        self,
        inv: Inversion,
        pcs: pcs_method.PosteriorPCs,
        pc: int | Sequence[int] = 1,
        amount: float | Sequence[float] = pcs_method.AMOUNT,
        steps: range | None = None,
    ) -> torch.Tensor:
        """Move the inverted latents along principal components: at each step of ``steps`` x0_hat
        moves by amount · σ_t(v_k) · v_k, σ_t(v_k) the posterior standard deviation along v_k at that
        step (``pcs.variances``), the rest of the step as in the reconstruction (source prompt, its
        guidance, the noise maps).

        Args:
            pc: component(s), counting from 1; amount: amount(s), in standard deviations.
            steps: the inversion's steps the drift acts at (0 = x_{t_start}); default: from the
                components' step to the end, all steps ``pcs.variances`` covers.
        Returns:
            (len(pc) * len(amount) * B, ...) latents, row (i * len(amount) + a) * B + j: component
            pc[i], amount[a], inversion j, all in one batch.
        """
        pcs_list = [pc] if isinstance(pc, int) else list(pc)
        amounts = [amount] if isinstance(amount, (int, float)) else list(amount)
        for k in pcs_list:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= pcs.count:
                raise InputError(f"pc must be between 1 and {pcs.count} (the components computed), got {k}")
        if not amounts or not all(isinstance(a, (int, float)) and math.isfinite(a) and abs(a) <= 1000 for a in amounts):
            raise InputError(f"amounts must be finite numbers of standard deviations (at most 1000), got {amounts}")
        pcs.check_fits(inv.xts[0])
        s = inv.settings
        if pcs.variances is None:
            raise InputError("these principal components carry no per-step variances: compute them again")
        covered = range(pcs.step, pcs.step + pcs.variances.shape[1])
        steps = covered if steps is None else steps
        if not (len(steps) and steps.step == 1 and steps.start >= covered.start and steps.stop <= covered.stop):
            raise InputError(f"the drift's steps must lie in {covered.start}..{covered.stop - 1} (where the components were measured), got {steps}")
        schedule = Schedule.from_config(self.model.scheduler_config, s.num_steps)
        inv = inv.fit(self.fingerprint(), schedule)
        B, rows = inv.num_latents, len(pcs_list) * len(amounts)
        moves, component = pcs_method.directions(pcs, pcs_list, [float(a) for a in amounts])
        sd = pcs.variances[component][:, steps.start - pcs.step : steps.stop - pcs.step].sqrt()
        callback = pcs_method.drift(moves.repeat_interleave(B, 0), sd.repeat_interleave(B, 0), steps)
        cond = self._condition([s.source_prompt], "", [s.cfg_src], B * rows, inv.uncond is not None)
        x_t = inv.xts[:, 0].to(self.model.device).repeat(rows, *([1] * (inv.x0.dim() - 1)))
        return _finite(self._regenerate(inv, schedule, x_t, cond, self.guided_denoiser, callback), [s.cfg_src])

    @torch.no_grad()
    def sdedit_latent(
        self,
        x0: torch.Tensor,
        target_prompt: str | Sequence[str],
        num_steps: int = 100,
        t_start: int = 64,
        cfg_tar: float | Sequence[float] = 15.0,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        negative_prompt: str = "",
    ) -> torch.Tensor:
        """SDEdit: noise ``x0`` to the ``t_start``-th last step and sample with fresh noise.

        Args:
            x0: (1, ...) one latent.
        Returns:
            (T * S, ...) latents; row i * S + j is target i with seed j.
        """
        targets, cfgs = self._targets(target_prompt, cfg_tar)
        seeds = self._seeds(seed)
        check_settings(num_steps, t_start, eta, *cfgs)
        schedule = Schedule.from_config(self.model.scheduler_config, num_steps)
        S, T = len(seeds), len(targets)
        x0 = x0.to(self.model.device, latent_dtype(self.model.device)).expand(S * T, *x0.shape[1:])
        cond = self._condition(targets, negative_prompt, cfgs, S)
        latents = sdedit(self.guided_denoiser, schedule, x0, cond, t_start, eta, seeds * T, None, self.progress)
        return _finite(latents, cfgs)

    @torch.no_grad()
    def mask_latent(
        self,
        inv: Inversion,
        target_prompt: str,
        source_prompt: str | None = None,
        strength: float = STRENGTH,
        draws: int = DRAWS,
        threshold: float = THRESHOLD,
        seed: int = 0,
    ) -> torch.Tensor:
        """The DiffEdit mask of an inverted latent: where the target and source descriptions disagree.

        Args:
            source_prompt: the description of the input; the inversion's own by default.
            strength, draws, threshold: see ``methods.diffedit`` (paper defaults 0.5, 10, 0.5).
        Returns:
            (1, 1, ...) float mask in {0, 1} over the latent grid (channels averaged).
        """
        check_mask_settings(strength, draws, threshold)
        self._seeds(seed)
        source = inv.settings.source_prompt if source_prompt is None else source_prompt
        if not isinstance(target_prompt, str) or target_prompt == source:
            raise InputError("the mask needs a target description that differs from the source")
        schedule = Schedule.from_config(self.model.scheduler_config, inv.settings.num_steps)
        inv = inv.fit(self.fingerprint(), schedule)
        encoded = self.model.encode_prompts([target_prompt, source])  # conditional rows: guidance would only scale
        target, source_cond = (guided(batching.take(encoded, slice(i, i + 1))) for i in (0, 1))  # their difference
        x0 = inv.x0[:1].to(self.model.device)
        return diffedit_mask(
            self.guided_denoiser, schedule, x0, target, source_cond, strength, draws, threshold, seed,
            channel_axis=1 if x0.dim() > 2 else None, batch_size=self.inversion_rows(x0),
        )

    @staticmethod
    def check_mask(mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``mask`` as a float tensor broadcastable to latents like ``x0`` (B, C, ...), else InputError."""
        mask = torch.as_tensor(mask)
        spatial = tuple(x0.shape[2:]) if x0.dim() > 2 else tuple(x0.shape[1:])
        if mask.dim() != x0.dim() or tuple(mask.shape[-len(spatial):]) != spatial or any(
            n not in (1, x0.shape[i]) for i, n in enumerate(mask.shape[: x0.dim() - len(spatial)])
        ):
            raise InputError(f"a mask of shape {tuple(mask.shape)} does not fit latents of shape {tuple(x0.shape)}")
        if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise InputError("mask values must lie in [0, 1]")
        if not (mask > 0).any():
            raise InputError("the mask is empty, so the edit would change nothing: mark where to edit")
        return mask.to(torch.float64)

    def _targets(self, target_prompt: str | Sequence[str], cfg_tar: float | Sequence[float]) -> tuple[list[str], list[float]]:
        targets = _as_list(target_prompt, "target prompt")
        cfgs = [float(cfg_tar)] * len(targets) if isinstance(cfg_tar, (int, float)) else [float(c) for c in cfg_tar]
        if len(cfgs) != len(targets):
            raise InputError(f"give one cfg_tar per target: {len(targets)} targets, {len(cfgs)} scales")
        return targets, cfgs

    def reconstruct_latent(self, inv: Inversion) -> torch.Tensor:
        """Sample with the inversion's own prompt and scale: (B, ...) equal to ``inv.x0`` up to rounding."""
        return self.edit_latent(inv, inv.settings.source_prompt, inv.settings.cfg_src)

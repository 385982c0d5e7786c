"""The methods behind one model adapter, in latent space: shared by the image and audio editors.

A frontend turns its input into latents x0 and a model adapter into a ``LatentModel``; everything
between (schedule, guidance, the methods of ``methods/`` and the one reverse loop) happens here,
once. The entry points run without gradients; the denoisers below them stay differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from . import adapters, batching
from .batching import Cond
from .conditions import Prompts
from .errors import EditError, InputError
from .guidance import ClassifierFreeGuidance, Denoiser, Guidance
from .inversion import Inversion, InversionSettings, check_inversion_eta, check_inversion_method
from .methods import pcs as pcs_method
from .methods.ddim import ddim_invert
from .methods.ddpm import ddpm_invert
from .methods.diffedit import DRAWS, STRENGTH, THRESHOLD, diffedit_mask
from .methods.null_text import EARLY_STOP, INNER_STEPS, LEARNING_RATE, check_null_text_settings, null_text_invert
from .methods.sdedit import sdedit
from .methods.sega import Concept, concept_sets
from .run import Run
from .sampling import Callback, then
from .schedule import Schedule
from .settings import check_mask, check_mask_settings, check_settings, seed_list, targets_and_scales


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
        inversion_batch_size: (x_t, t) rows per model call during inversion, which bounds its memory;
            None (the default): as many as fit half the free memory of a GPU (``adapters.rows_in_memory``),
            16 on a CPU.
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        model: LatentModel,
        denoiser: Denoiser | None = None,
        inversion_batch_size: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.denoiser = denoiser or model.predict_eps
        self.prompts = Prompts(model, self.denoiser)
        self.inversion_batch_size = inversion_batch_size
        self.progress = progress
        self._uncond_bytes: int | None = None  # float32 bytes of one unconditional row (null-text), once known

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """(x_t, t) rows per denoiser call of the inversion of latents like ``x0`` (B, ...)."""
        if self.inversion_batch_size is not None:
            return self.inversion_batch_size
        element = torch.finfo(getattr(self.model, "dtype", torch.float32)).bits // 8
        return adapters.rows_in_memory(self.model.device, 2 * x0[0].numel() * element)  # both guidance branches

    def product_rows(self, x0: torch.Tensor) -> int:
        """Rows per call of the forward-mode products (posterior components): a third of
        ``inversion_rows``, as each row carries a tangent beside every activation and attention runs
        on the reference kernel for them."""
        return max(1, self.inversion_rows(x0) // 3)

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

    def prepare(self, inv: Inversion) -> Run:
        """``inv`` checked against this editor's model and moved to its device, with its schedule."""
        return Run.prepare(inv, self.fingerprint(), self.model.scheduler_config, self.model.device)

    def source_guidance(self, run: Run, copies: int, first: int = 0) -> ClassifierFreeGuidance:
        """The inversion's own guidance (source prompt, its scale; null-text's per-step rows from the
        inversion's step ``first``) over ``copies`` * B rows: sampling with it reconstructs."""
        s = run.inversion.settings
        return self.prompts.guidance([s.source_prompt], "", [s.cfg_src], copies * run.inversion.num_latents, run.uncond_steps, first)

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
        seeds = seed_list(seed)
        check_inversion_method(method)
        check_settings(num_steps, t_start, eta if method == "ddpm" else 1.0, cfg_src)
        check_null_text_settings(inner_steps, LEARNING_RATE, early_stop)
        check_inversion_eta(method, eta)
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
            guidance = self.prompts.guidance([source_prompt], "", [cfg_src], len(seeds))
            if method == "ddpm":
                xts, zs, residual = ddpm_invert(guidance, schedule, x0, t_start, eta, seeds, self.inversion_rows(x0), self.progress)
            else:
                xts = ddim_invert(guidance, schedule, x0, t_start, self.progress)
        settings = InversionSettings(
            self.fingerprint(), num_steps, t_start, float(eta) if method == "ddpm" else 0.0, float(cfg_src),
            source_prompt, tuple(seeds), method, *((inner_steps, early_stop) if method == "null-text" else (0, 0.0)),
        )  # fmt: skip
        timesteps = schedule.timesteps[schedule.last(t_start)]
        return Inversion(x0.clone(), xts, zs, timesteps, settings, dict(meta or {}), residual, uncond=uncond)

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
        sets = concept_sets(concepts)
        if target_prompt is None and not any(sets):
            raise InputError("give a target prompt, or concepts to add or remove")
        late = [c for cs in sets for c in cs if c.scale > 0 and c.warmup >= inv.settings.t_start]
        if late:
            raise InputError(f"concept {late[0].prompt!r} warms up for {late[0].warmup} steps, but the edit runs "
                             f"{inv.settings.t_start}: it would never act; give a smaller warm-up")
        targets, cfgs = targets_and_scales(inv.settings.source_prompt if target_prompt is None else target_prompt, cfg_tar)
        s = inv.settings
        check_settings(s.num_steps, s.t_start, s.eta if s.method == "ddpm" else 1.0, *cfgs)
        run = self.prepare(inv)
        B, T = inv.num_latents, len(targets)
        if run.uncond_steps is not None and negative_prompt != "":
            raise InputError("a null-text inversion brings its own unconditional branch (optimised from \"\"): leave out the negative prompt")
        guidance: Guidance
        if any(c.scale > 0 for concept_set in sets for c in concept_set):
            channel_axis = 1 if inv.x0.dim() > 2 else None
            guidance = self.prompts.semantic(targets, negative_prompt, cfgs, B, sets, channel_axis, run.uncond_steps)
        else:  # no concept guides: the plain edit (of each set, all equal)
            plain = self.prompts.guidance(targets, negative_prompt, cfgs, B, run.uncond_steps)
            guidance = plain.take(torch.arange(T * B).repeat(len(sets)))
        if mask is not None:
            callback = then(callback, run.keep_outside(self.check_mask(mask, inv.x0)))
        return _finite(run.regenerate(guidance, len(sets) * T, callback, self.progress), cfgs)

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
        run = self.prepare(inv).first_latent()
        if region is not None:
            region = self.check_mask(region, inv.x0)
        schedule, s = run.schedule, inv.settings
        later = list(run.steps[step:])  # the schedule's steps from the components' step to the end
        guidance = self.source_guidance(run, 1, step)
        x_t = run.inversion.xts[:, step]
        with torch.no_grad():
            vectors, values, info = pcs_method.posterior_pcs(
                guidance, float(schedule.alphas[later[0]]), schedule.timesteps[later[0]].item(), x_t, n, region,
                max_iterations, tolerance, seed=seed, progress=self.progress, batch_size=self.product_rows(x_t),
                v_t=float(schedule.variances[later[0]]),
            )
            variances = pcs_method.variances_along(  # the variance along each vector at every later step
                guidance.at_steps(torch.arange(len(later))), schedule.alphas[later], schedule.timesteps[later],
                run.inversion.xts[0, step:], vectors, self.product_rows(x_t), self.progress, schedule.variances[later],
            )  # fmt: skip
        info = {**info, "max_iterations": max_iterations, "tolerance": tolerance, "source_prompt": s.source_prompt, "cfg_src": s.cfg_src}
        return pcs_method.PosteriorPCs(vectors.cpu(), values.cpu(), x_t[0].cpu(), step, schedule.timesteps[later[0]].item(),
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
        run = self.prepare(inv)
        B, rows = inv.num_latents, len(pcs_list) * len(amounts)
        moves, component = pcs_method.directions(pcs, pcs_list, [float(a) for a in amounts])
        sd = pcs.variances[component][:, steps.start - pcs.step : steps.stop - pcs.step].sqrt()
        callback = pcs_method.drift(moves.repeat_interleave(B, 0), sd.repeat_interleave(B, 0), steps)
        return _finite(run.regenerate(self.source_guidance(run, rows), rows, callback, self.progress), [s.cfg_src])

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
        targets, cfgs = targets_and_scales(target_prompt, cfg_tar)
        seeds = seed_list(seed)
        check_settings(num_steps, t_start, eta, *cfgs)
        schedule = Schedule.from_config(self.model.scheduler_config, num_steps)
        S, T = len(seeds), len(targets)
        x0 = x0.to(self.model.device, latent_dtype(self.model.device)).expand(S * T, *x0.shape[1:])
        guidance = self.prompts.guidance(targets, negative_prompt, cfgs, S)
        latents = sdedit(guidance, schedule, x0, t_start, eta, seeds * T, None, self.progress)
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
        seed_list(seed)
        source = inv.settings.source_prompt if source_prompt is None else source_prompt
        if not isinstance(target_prompt, str) or target_prompt == source:
            raise InputError("the mask needs a target description that differs from the source")
        run = self.prepare(inv)
        encoded = self.model.encode_prompts([target_prompt, source])  # conditional rows: guidance would only scale
        target, source_cond = (batching.take(encoded, slice(i, i + 1)) for i in (0, 1))  # their difference
        x0 = run.inversion.x0[:1]
        return diffedit_mask(
            self.denoiser, run.schedule, x0, target, source_cond, strength, draws, threshold, seed,
            channel_axis=1 if x0.dim() > 2 else None, batch_size=self.inversion_rows(x0),
        )

    @staticmethod
    def check_mask(mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``mask`` as a float tensor broadcastable to latents like ``x0`` (B, C, ...), else InputError."""
        return check_mask(mask, x0)

    def reconstruct_latent(self, inv: Inversion) -> torch.Tensor:
        """Sample with the inversion's own prompt and scale: (B, ...) equal to ``inv.x0`` up to rounding."""
        return self.edit_latent(inv, inv.settings.source_prompt, inv.settings.cfg_src)

"""Reference implementations that ``bench_methods.py`` compares this package's editors with.

Each one is written from its paper and from the official (or, where the authors published none,
the reference) implementation named in the comment above it, WITHOUT this package's methods: nothing
here imports ``image_core.methods`` or ``image_core.sampling``. They use only the model adapter
(``encode_prompts``, ``predict_eps``), diffusers' schedulers (timesteps and ᾱ) and
``common.ReferenceLoop`` (the edit-friendly DDPM step of the official DDPM_inversion code). An
``Inversion`` made by this package supplies the inverted x_t and noise maps where the reference
method starts from an edit-friendly DDPM inversion (LEDITS, PCs): the inversion is shared, the
methods built on it are not.

Where an official implementation does something a reader might not expect, the docstring says so;
where the reference departs from it (to make a comparison possible), it says that too.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

try:
    from .common import ReferenceLoop
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import ReferenceLoop

from image_core import batching
from image_core.inversion import Inversion

# ------------------------------------------------------------------------------------- DiffEdit

# diffusers StableDiffusionDiffEditPipeline.generate_mask: mask_thresholding_ratio=3.0,
# mask_encode_strength=0.5, num_maps_per_mask=10; the binarisation at 0.5 is fixed in the code.
DIFFEDIT_THRESHOLDING_RATIO = 3.0
DIFFEDIT_BLENDS = ("paper", "diffusers")


# Follows diffusers pipelines/stable_diffusion_diffedit/pipeline_stable_diffusion_diffedit.py
# (now pipelines/deprecated/stable_diffusion_diffedit/), StableDiffusionDiffEditPipeline:
# generate_mask (the mask), invert (DDIM inversion with DDIMInverseScheduler, get_inverse_timesteps)
# and __call__ (masked DDIM sampling, get_timesteps); the blend outside the mask per Couairon et al.,
# "DiffEdit", ICLR 2023, Sec. 3.2 step 3 (blend="paper") or as __call__ codes it (blend="diffusers").
class DiffEditReference:
    """DiffEdit as the diffusers pipeline runs it, on any model adapter; latents in the model's
    dtype, as the pipeline keeps them.

    - ``generate_mask``: the input noised ``draws`` times to the first timestep of
      get_timesteps(steps, mask_strength) (``scheduler.add_noise``), ONE model call of 4 x draws rows
      [source negative, source, target negative, target] with guidance (2 x draws rows [source,
      target] at a guidance of 1), |ε_tar - ε_src| averaged over the draws and the latent channels,
      clamped at 3 times its mean, rescaled by that clamp and binarised (> threshold, 0.5 in the
      pipeline).
    - ``invert``: DDIM inversion with ``DDIMInverseScheduler`` over the first t_start inverse
      timesteps, one call per step (batch 2 at a guidance above 1), the latents collected largest
      timestep first.
    - ``edit``: DDIM sampling (eta 0) of the last t_start steps from the most inverted latent,
      unconditional and target branches in one call of batch 2 per step; after step i the result
      outside the mask is replaced by an inverted latent:
        blend="paper": the one of the timestep the step lands on, the input latent after the last
          step (the paper: y_{t-1} = M y_{t-1} + (1 - M) x_{t-1});
        blend="diffusers": ``image_latents[i]``, the inverted latent of the timestep the step
          STARTS from (what __call__ does: one step behind the paper, and the last step blends with
          the latent of the smallest inverse timestep, not the input).

    The mask's noise draws are NOT diffusers' (``randn_tensor`` with the pipeline's generator): they
    are drawn as ``mask_latent`` draws them (a CPU generator seeded with ``seed``, float32, one
    (draws, ...) tensor), so that the two masks can be compared cell by cell.

    Args:
        model: the adapter (``StableDiffusionModel`` or ``AudioModel``).
        steps, t_start: the chain and the steps the edit runs (inpaint_strength = t_start / steps).
        cfg_src: guidance of the inversion (``invert``'s guidance_scale), cfg_tar: of the mask and
            the edit (``generate_mask``'s and ``__call__``'s).
        mask_strength, draws, threshold, seed: of the mask (mask_encode_strength, num_maps_per_mask).
        blend: "paper" or "diffusers" (above).
    """

    def __init__(
        self, model: Any, steps: int, t_start: int, cfg_src: float, cfg_tar: float,
        mask_strength: float = 0.5, draws: int = 10, threshold: float = 0.5, seed: int = 0, blend: str = "paper",
    ) -> None:
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        if blend not in DIFFEDIT_BLENDS:
            raise ValueError(f"blend must be one of {DIFFEDIT_BLENDS}, got {blend!r}")
        config = {**dict(model.scheduler_config), "prediction_type": "epsilon", "clip_sample": False}  # ε from predict_eps
        self.scheduler = DDIMScheduler.from_config(config)
        inverse_keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
        self.inverse_scheduler = DDIMInverseScheduler.from_config({k: v for k, v in config.items() if k in inverse_keys})
        self.model, self.steps, self.t_start = model, steps, t_start
        self.cfg_src, self.cfg_tar = cfg_src, cfg_tar
        self.mask_strength, self.draws, self.threshold, self.seed = mask_strength, draws, threshold, seed
        self.blend = blend

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.model.predict_eps(x, t.reshape(1).expand(len(x)).to(torch.int64), cond)

    def _first(self, init: int) -> int:
        """get_timesteps / get_inverse_timesteps: the index where a run of ``init`` steps starts
        (init = int(num_inference_steps * strength))."""
        return max(self.steps - min(init, self.steps), 0)

    @torch.no_grad()
    def generate_mask(self, x0: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """(1, 1, ...) mask in {0, 1}: one model call of (4 or 2) x draws rows."""
        guide = self.cfg_tar > 1
        n = self.draws
        enc = self.model.encode_prompts([source, target, ""])  # padded together: rows can be concatenated
        src, tar, neg = (batching.take(enc, slice(i, i + 1)) for i in range(3))
        branches = [neg, src, neg, tar] if guide else [src, tar]
        cond = batching.cat([batching.repeat(b, n) for b in branches])
        self.scheduler.set_timesteps(self.steps)
        t = self.scheduler.timesteps[self._first(int(self.steps * self.mask_strength))]
        noise = torch.randn((n, *x0.shape[1:]), generator=torch.Generator().manual_seed(self.seed))
        x0 = x0.to(self.model.dtype).cpu()
        x_t = self.scheduler.add_noise(x0.expand(n, *x0.shape[1:]), noise.to(x0.dtype), t).to(self.model.device)
        eps = self.eps(torch.cat([x_t] * len(branches)), t, cond).float()
        if guide:
            neg_src, e_src, neg_tar, e_tar = eps.chunk(4)
            e_src = neg_src + self.cfg_tar * (e_src - neg_src)
            e_tar = neg_tar + self.cfg_tar * (e_tar - neg_tar)
        else:
            e_src, e_tar = eps.chunk(2)
        guidance_map = (e_tar - e_src).abs().mean(0, keepdim=True)  # over the draws
        if x0.dim() > 2:
            guidance_map = guidance_map.mean(1, keepdim=True)  # over the latent channels
        clamp = guidance_map.mean() * DIFFEDIT_THRESHOLDING_RATIO
        return (guidance_map.clamp(0, clamp) / clamp > self.threshold).float()

    @torch.no_grad()
    def invert(self, x0: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, (t_start, ...) inverted latents, largest timestep first): one call per step."""
        guide = self.cfg_src > 1
        enc = self.model.encode_prompts([source, ""])
        cond = batching.cat([batching.take(enc, slice(1, 2)), batching.take(enc, slice(0, 1))]) if guide else batching.take(enc, slice(0, 1))
        self.inverse_scheduler.set_timesteps(self.steps)
        first = self._first(self.t_start)  # get_inverse_timesteps
        timesteps = self.inverse_scheduler.timesteps if first == 0 else self.inverse_scheduler.timesteps[:-first]
        x0 = x0.to(self.model.device, self.model.dtype)
        latents, inverted = x0, []
        for t in timesteps:
            eps = self.eps(torch.cat([latents] * 2) if guide else latents, t, cond)
            if guide:
                uncond, text = eps.chunk(2)
                eps = uncond + self.cfg_src * (text - uncond)
            latents = self.inverse_scheduler.step(eps, t, latents).prev_sample
            inverted.append(latents)
        return x0, torch.cat(inverted[::-1])

    @torch.no_grad()
    def edit(self, state: tuple[torch.Tensor, torch.Tensor], target: str, mask: torch.Tensor) -> torch.Tensor:
        """Masked DDIM sampling of the last t_start steps with guidance: one call of batch 2 per step."""
        x0, inverted = state
        guide = self.cfg_tar > 1
        enc = self.model.encode_prompts([target, ""])
        cond = batching.cat([batching.take(enc, slice(1, 2)), batching.take(enc, slice(0, 1))]) if guide else batching.take(enc, slice(0, 1))
        self.scheduler.set_timesteps(self.steps)
        timesteps = self.scheduler.timesteps[self._first(self.t_start) :]
        mask = mask.to(x0.device, x0.dtype)
        if self.blend == "paper":
            outside = [*inverted[1:].split(1), x0]  # the latent of the timestep each step lands on
        else:
            outside = list(inverted.split(1))  # image_latents[i]: the one of the step's own timestep
        latents = inverted[:1].clone()
        for i, t in enumerate(timesteps):
            eps = self.eps(torch.cat([latents] * 2) if guide else latents, t, cond)
            if guide:
                uncond, text = eps.chunk(2)
                eps = uncond + self.cfg_tar * (text - uncond)
            latents = self.scheduler.step(eps, t, latents, eta=0.0).prev_sample
            latents = latents * mask + outside[i] * (1 - mask)
        return latents


# --------------------------------------------------------------------------------------- LEDITS

# The LEDITS demo (Tsaban & Passos, 2023; Hugging Face space editing-images/ledits, app.py, whose
# SEGA call passes edit_momentum_scale=0.5, edit_mom_beta=0.6, edit_threshold 0.95, warm-up 1).
# SEGA's own pipeline defaults are 0.1 / 0.4, threshold 0.9, warm-up 10.
LEDITS_MOMENTUM_SCALE = 0.5
LEDITS_MOMENTUM_BETA = 0.6


@dataclass(frozen=True)
class SegaConcept:
    """One editing concept, in the terms of diffusers' SemanticStableDiffusionPipeline.__call__."""

    prompt: str  # editing_prompt
    scale: float = 10.0  # edit_guidance_scale
    reverse: bool = False  # reverse_editing_direction (remove the concept)
    threshold: float = 0.95  # edit_threshold: the quantile of |γ| below which cells are dropped
    warmup: int = 1  # edit_warmup_steps
    cooldown: int | None = None  # edit_cooldown_steps (None: never)
    weight: float = 1.0  # edit_weights


# Follows diffusers pipelines/semantic_stable_diffusion/pipeline_semantic_stable_diffusion.py
# (now pipelines/deprecated/semantic_stable_diffusion/), SemanticStableDiffusionPipeline.__call__
# (semantic guidance: per-channel quantile masks, warm-up / cool-down, concept weights, momentum
# update), with the edit-friendly DDPM step on an inversion's noise maps of the LEDITS demo
# (editing-images/ledits modified_pipeline_semantic_stable_diffusion.py, __call__ with
# use_ddpm=True; mirrored as camenduru/ledits-hf). diffusers'
# pipelines/ledits_pp/pipeline_leditspp_stable_diffusion.py (LEDITS++) documents
# edit_momentum_scale / edit_mom_beta in old docstrings but its __call__ has no momentum and masks
# by the channel-summed |γ|: it is not this method.
class LeditsReference:
    """A LEDITS edit (DDPM-inverted input, then SEGA) written from the SEGA pipeline, per branch:
    the unconditional, target and every concept branch each in a call of batch 1 through the
    adapter's ``predict_eps`` (``batched``: all of them in ONE call of 2 + C rows per step, in the
    SEGA pipeline's order [unconditional, target, concepts]), timesteps and ᾱ from a diffusers
    ``DDIMScheduler`` (``common.ReferenceLoop``). At step i, with ε_u, ε_tar, ε_c the branches:

        ψ    = s_g (ε_tar - ε_u)
        γ_c  = ±s_e,c (ε_c - ε_u), zero where |γ_c| is below its edit_threshold quantile over the
               cells of each latent channel (torch.quantile); γ_c = 0 from the concept's cool-down on
        e    = Σ_c w_c γ_c + s_m v                  (every concept, warmed up or not; w_c >= 0)
        v    ← β v + (1 - β) e                      (v = 0 before the first step: the momentum
                                                     builds up during the warm-up)
        ψ   += e                                    once every concept is past its warm-up;
        ψ   += Σ_{c warm} w_c / Σ_{warm} w · γ_c    while only some are (no momentum then)
        ε    = ε_u + ψ

    then the DDPM step of the inversion's step (its noise map z_i).
    """

    def __init__(
        self, model: Any, num_steps: int, batched: bool = False,
        momentum_scale: float = LEDITS_MOMENTUM_SCALE, momentum_beta: float = LEDITS_MOMENTUM_BETA,
    ) -> None:
        self.model, self.batched = model, batched
        self.loop = ReferenceLoop(model.scheduler_config, num_steps, self.eps)
        self.momentum_scale, self.momentum_beta = momentum_scale, momentum_beta
        self._conds: dict[str, Any] = {}

    def cond(self, prompt: str) -> Any:
        if prompt not in self._conds:  # each prompt encoded once, as the pipeline does
            self._conds[prompt] = self.model.encode_prompts([prompt])
        return self._conds[prompt]

    def eps(self, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        return self.model.predict_eps(x, t.reshape(1).to(torch.int64), self.cond(prompt)).double()

    def branches(self, x: torch.Tensor, t: torch.Tensor, prompts: list[str]) -> list[torch.Tensor]:
        if not self.batched:
            return [self.eps(x, t, p) for p in prompts]
        n = len(prompts)
        key = "\n".join(prompts)
        if key not in self._conds:  # encoded together: padded alike, so their rows can share a batch
            self._conds[key] = self.model.encode_prompts(prompts)
        eps = self.model.predict_eps(x.expand(n, *x.shape[1:]), t.reshape(1).expand(n).to(torch.int64), self._conds[key])
        return list(eps.double().split(1))

    @staticmethod
    def masked(gamma: torch.Tensor, threshold: float) -> torch.Tensor:
        """γ where |γ| reaches its ``threshold`` quantile over the cells of each channel (rows (B, C, ...));
        over all cells of a row for latents without a channel axis."""
        cells = gamma.abs().flatten(2) if gamma.dim() > 2 else gamma.abs().unsqueeze(1)
        cut = torch.quantile(cells, threshold, dim=-1, keepdim=True)
        return torch.where((cells >= cut).view_as(gamma), gamma, torch.zeros_like(gamma))

    @torch.no_grad()
    def edit(self, inv: Inversion, target: str, cfg_tar: float, concepts: Sequence[SegaConcept]) -> torch.Tensor:
        s = inv.settings
        timesteps = self.loop.scheduler.timesteps[s.num_steps - s.t_start :].to(inv.xts.device)
        x, zs = inv.xts[:1, 0], inv.zs[:1]
        momentum: torch.Tensor | None = None
        for i, t in enumerate(timesteps):
            eps_u, eps_tar, *eps_c = self.branches(x, t, ["", target, *(c.prompt for c in concepts)])
            guidance = cfg_tar * (eps_tar - eps_u)
            if momentum is None:
                momentum = torch.zeros_like(guidance)
            gammas, weights, warm = [], [], []
            for concept, e in zip(concepts, eps_c):
                if i >= concept.warmup:
                    warm.append(len(gammas))
                if concept.cooldown is not None and i >= concept.cooldown:
                    gammas.append(torch.zeros_like(e))  # cooled down: no guidance, nothing into the momentum
                    weights.append(0.0)
                    continue
                gamma = (e - eps_u) * (-1 if concept.reverse else 1) * concept.scale
                gammas.append(self.masked(gamma, concept.threshold))
                weights.append(max(concept.weight, 0.0))
            if 0 < len(warm) < len(concepts):  # some concepts warmed up: their normalised sum, no momentum
                total = sum(weights[c] for c in warm)
                if total > 0:
                    guidance = guidance + sum(weights[c] / total * gammas[c] for c in warm)
            semantic = sum((w * g for w, g in zip(weights, gammas)), torch.zeros_like(guidance)) + self.momentum_scale * momentum
            momentum = self.momentum_beta * momentum + (1 - self.momentum_beta) * semantic
            if concepts and len(warm) == len(concepts):
                guidance = guidance + semantic
            mu, sigma = self.loop.step_terms(x, int(t), eps_u + guidance, s.eta)
            x = mu + sigma * zs[:, i] if sigma > 0 else mu + (inv.residual if inv.residual is not None else 0)
        return x


# -------------------------------------------------------------------------------- posterior PCs

# AudioEditingCode code/main_pc_extract_inv.py defaults: --const 1e-3, --iters 50, --corr_to_swap 0.8.
PC_CONST = 1e-3
PC_ITERATIONS = 50
PC_CORR_TO_SWAP = 0.8


# Follows HilaManor/AudioEditingCode (Manor & Michaeli, ICML 2024): code/pc_drift.py, get_eigenvectors
# (extraction) and forward_directional (the guided x0_hat, both branches at the probe), as
# code/main_pc_extract_inv.py runs them at every step of a range (with its sign alignment across
# steps); code/pc_drift.py, apply_drift, as code/main_pc_apply_drift.py applies it (use_specific_ts_pc
# None, or the first step's; evals None, i.e. the extracted eigenvalues, the images script's default;
# sub_iters None; use_shifted_x0_for_noisepred True; no --combine_evs). Departures, for comparability
# only: x_t read from the inversion instead of regenerated from its noise maps (the same points up to
# rounding), arithmetic outside the model in float64, the random start from a CPU generator seeded
# with ``seed``, and the first step's signs fixed (below).
class PCReference:
    """Posterior PCs and their drift as the official code computes them.

    Extraction (``get_eigenvectors``) at each step j of ``steps``, at the inversion's x_t of that
    step (the trajectory the official extraction regenerates from the same noise maps), with
    x0_hat(x) the guided posterior mean (source prompt and its guidance, unconditional and
    conditional branches each in a call of batch n, as ``forward_directional`` makes them):

        b    = x0_hat(x_t)                                    (2 calls of batch 1)
        P    = c · N(0, I)  (n, d), c = ``const``             (NOT normalised: the first probes are
                                                               c sqrt(d) long)
        repeat ``iterations`` times:
            A_k  = x0_hat(x_t + sqrt(ᾱ_t) P_k) - b            (2 calls of batch n)
            V_k  = A_k / ||A_k||; Q R = qr([V_1 ... V_n]); Q = -Q if prod(diag R) < 0
            V    = columns of Q, reordered by decreasing ||A_k||
            P    = c V
        λ_k  = ||A_k|| / c · (1 - ᾱ_t) / ᾱ_t                 (the last iteration's, in the order
                                                               of its INPUT vectors: not reordered
                                                               with V, as in the official code)

    so each λ is the norm of Cov·v (not a Rayleigh quotient), the vectors are orthonormalised in
    order (Gram-Schmidt by QR: a deflated power iteration, no Rayleigh-Ritz, exactly n directions,
    no early stop), and the finite-difference step is c sqrt(ᾱ_t), absolute. Across steps, a
    vector whose correlation with the previous step's is <= -``corr_to_swap`` is flipped (the
    official extraction's alignment); at the first step the sign of each vector is set so that its
    entries sum to >= 0 (this package's convention: the official sign is whatever the random start
    gives, and the ± amounts compared row by row need one convention).

    Drift (``apply_drift``, per component, one sampling loop per amount with the components in one
    batch, as main_pc_apply_drift runs ``--evs 1 2 3`` without ``--combine_evs``): at each step i
    of the edit, after the DDPM step with the source prompt and the inversion's noise map,

        x_{t-1} ← sqrt(ᾱ_{t-1}) (x0_hat + s) + sqrt(1 - ᾱ_{t-1} - σ²) (ε - sqrt(ᾱ_t / (1 - ᾱ_t)) s) + σ z,
        s = amount · sqrt(λ_k(t)) · v_k(t)

    ONLY at the steps in ``steps`` (drift_start / drift_end), with the eigenvalue AND the vector
    extracted at that same step (each step its own PCs: the official defaults; ``edit(specific=j)``
    takes every step's vectors from step j, as use_specific_ts_pc does, the eigenvalues still each
    step's own), and the plain reconstruction step elsewhere.
    """

    def __init__(
        self, model: Any, num_steps: int, iterations: int = PC_ITERATIONS, seed: int = 0,
        const: float = PC_CONST, corr_to_swap: float = PC_CORR_TO_SWAP,
    ) -> None:
        self.model, self.iterations, self.seed = model, iterations, seed
        self.const, self.corr_to_swap = const, corr_to_swap
        self.loop = ReferenceLoop(model.scheduler_config, num_steps, self.eps)
        self._conds: dict[str, Any] = {}
        self.turn = float("nan")  # largest principal angle between the last two iterates (first step)

    def eps(self, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        """One call of batch len(x) for one prompt ("": the unconditional branch)."""
        if prompt not in self._conds:
            self._conds[prompt] = self.model.encode_prompts([prompt])
        cond = batching.repeat(self._conds[prompt], len(x)) if len(x) > 1 else self._conds[prompt]
        return self.model.predict_eps(x, t.reshape(1).expand(len(x)).to(torch.int64), cond).double()

    def timesteps(self, inv: Inversion) -> torch.Tensor:
        s = inv.settings
        return self.loop.scheduler.timesteps[s.num_steps - s.t_start :].to(inv.xts.device)

    def x0_hat(self, x: torch.Tensor, t: torch.Tensor, inv: Inversion) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided ε, x0_hat) at rows x: an unconditional and a conditional call, each of batch len(x)."""
        s = inv.settings
        a = self.loop.alpha_bar(int(t))
        eps = self.loop.noise_pred(x, t, s.source_prompt, s.cfg_src)
        return eps, (x - (1 - a) ** 0.5 * eps) / a**0.5

    @torch.no_grad()
    def extract(self, inv: Inversion, n: int, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
        """((n, ...) unit vectors, (n,) eigenvalues, last turn in radians) at the inversion's ``step``."""
        t = self.timesteps(inv)[step]
        a = self.loop.alpha_bar(int(t))
        sigma2 = 1 / a - 1  # get_sigma(t) ** 2
        x_t = inv.xts[:1, step]
        _, base = self.x0_hat(x_t, t, inv)
        points = x_t.expand(n, *x_t.shape[1:])
        probes = torch.randn(points.shape, generator=generator, dtype=points.dtype).to(points.device) * self.const
        vectors, norms, turn = probes / self.const, torch.zeros(n, dtype=torch.float64), float("nan")
        for _ in range(self.iterations):
            _, moved = self.x0_hat(points + probes * a**0.5, t, inv)
            A = (moved - base).flatten(1)
            norms = A.norm(dim=1)
            previous = vectors
            if n > 1:
                Q, R = torch.linalg.qr((A / norms[:, None]).T, mode="reduced")
                if torch.prod(torch.linalg.diagonal(R)) < 0:
                    Q = -Q
                Q = Q / Q.norm(dim=0)
                order = torch.sort(norms / self.const * sigma2, descending=True, stable=True).indices
                vectors = Q.T[order].reshape(points.shape)
            else:
                vectors = (A / norms[:, None]).reshape(points.shape)
            turn = float(torch.arccos(torch.linalg.svdvals(_orthonormal(previous) @ _orthonormal(vectors).T).clamp(max=1).min()))
            probes = vectors * self.const
        return vectors, (norms / self.const * sigma2).cpu(), turn

    @torch.no_grad()
    def components(self, inv: Inversion, n: int, steps: range) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{step: ((n, ...) vectors, (n,) eigenvalues)} at every step of ``steps`` (drift_start to
        drift_end), the vectors' signs aligned step to step; ``turn`` is the first step's."""
        generator = torch.Generator().manual_seed(self.seed)  # one stream for the whole run, as a seeded global RNG
        found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        previous: torch.Tensor | None = None
        for j in steps:
            vectors, values, turn = self.extract(inv, n, j, generator)
            if previous is None:
                self.turn = turn
                signs = torch.where(vectors.flatten(1).sum(1) < 0, -1.0, 1.0).to(vectors.dtype)
            else:
                corr = (previous.flatten(1) * vectors.flatten(1)).sum(1)
                signs = torch.where(corr <= -self.corr_to_swap, -1.0, 1.0).to(vectors.dtype)
            vectors = vectors * signs.view(-1, *[1] * (vectors.dim() - 1))
            found[j] = (vectors, values)
            previous = vectors
        return found

    @torch.no_grad()
    def edit(
        self, inv: Inversion, found: dict[int, tuple[torch.Tensor, torch.Tensor]], pcs: list[int], amounts: list[float],
        specific: int | None = None,
    ) -> torch.Tensor:
        """(len(pcs) * len(amounts), ...) edits, rows PC-major as ``edit_pc_latent``'s: one sampling
        loop per amount, its rows the components (batch 1 until the first drifted step). ``specific``:
        the step whose vectors every drifted step uses (apply_drift's use_specific_ts_pc; the
        eigenvalues stay each step's own, as there); None: each step its own (the default)."""
        s = inv.settings
        gap = self.loop.scheduler.config.num_train_timesteps // s.num_steps
        by_amount = []
        for amount in amounts:
            x = inv.xts[:1, 0]
            for i, t in enumerate(self.timesteps(inv)):
                a_t, a_prev = self.loop.alpha_bar(int(t)), self.loop.alpha_bar(int(t) - gap)
                eps, x0 = self.x0_hat(x, t, inv)
                std = s.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
                z = inv.zs[:1, i] if std > 0 else torch.zeros_like(x[:1])
                direction = max(0.0, 1 - a_prev - std**2) ** 0.5
                x_next = a_prev**0.5 * x0 + direction * eps + std * z  # forward_directional's scheduler step
                if std == 0 and inv.residual is not None:
                    x_next = x_next + inv.residual[:1]
                if i in found:
                    vectors, values = found[i] if specific is None else (found[specific][0], found[i][1])
                    rows = []
                    for r, k in enumerate(pcs):  # apply_drift with ev_nums=[k], one row each
                        shift = amount * float(values[k - 1]) ** 0.5 * vectors[k - 1].to(x.device, x.dtype)
                        row = min(r, len(x_next) - 1)
                        xr, x0r = x_next[row : row + 1], x0[row : row + 1]
                        recovered = (xr - std * z - a_prev**0.5 * x0r) / direction if direction > 0 else eps[row : row + 1]
                        recovered = recovered - (a_t / (1 - a_t)) ** 0.5 * shift
                        rows.append(a_prev**0.5 * (x0r + shift) + direction * recovered + std * z)
                    x_next = torch.cat(rows)
                x = x_next
            if len(x) == 1:  # no step drifted: every component's row is the reconstruction
                x = x.expand(len(pcs), *x.shape[1:])
            by_amount.append(x)
        return torch.stack(by_amount, 1).flatten(0, 1)  # (pcs, amounts, ...) -> PC-major rows


def _orthonormal(rows: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (as rows) of the span of the rows of (n, ...) ``rows``."""
    q, _ = torch.linalg.qr(rows.flatten(1).T.double())
    return q.T


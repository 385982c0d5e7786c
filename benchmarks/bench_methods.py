"""Cost of three editing methods (DiffEdit, LEDITS, posterior PCs): this package's editors against
loops of the kind their reference pipelines run (``--benchmarks diffedit,ledits,pcs``, default all).

DiffEdit (automatic mask, then a masked edit), against diffusers' ``StableDiffusionDiffEditPipeline``.
The edit is DiffEdit's default (Couairon et al., ICLR 2023, and the diffusers pipeline): 50 steps,
edit strength 0.5 (the last 25 steps, t_start 25), target guidance 7.5, the mask from 10 noise draws
at strength 0.5, clamped at 3 times its mean and binarised at 0.5. Three stages are counted and timed
on their own: mask, inversion, masked edit.

- reference: the three calls of the diffusers pipeline, written with the model adapter's
  ``predict_eps`` and diffusers' schedulers, batched as the pipeline batches:
  ``generate_mask`` (ONE call of 4 x 10 rows: source and target each with classifier-free
  guidance, i.e. negative and conditional branches, 10 noise draws each; 2 x 10 rows without
  guidance), ``invert`` (DDIM inversion with ``DDIMInverseScheduler``, one call per step, batch 1,
  or batch 2 at a source guidance above 1) and ``__call__`` (masked DDIM sampling with
  ``DDIMScheduler``, unconditional and target branches in one call of batch 2 per step; after every
  step the result is blended outside the mask with the inverted latent of the timestep it lands on,
  and with the input latent after the last step). The mask's noise draws are ours (same seed), so
  the two masks can be compared.
- ours (DDIM): ``invert_latent(method="ddim")``, ``mask_latent`` (target and source conditional
  only: with a shared guidance scale g and a shared unconditional branch the guided difference is
  g times the conditional one, which the normalisation by its mean removes; all 20 rows batched,
  ``--inversion-batch-size`` rows per call) and ``edit_latent(mask=...)``. With the same draws it
  computes the reference's edit (up to float32 against float64 rounding).
- ours (DDPM): the same with edit-friendly DDPM inversion (``--eta``, x_t drawn independently and
  batched across timesteps) and its noise maps in the masked edit: a different edit, same mask.

Columns: UNet calls and sample-evals (rows of the batches) per stage, wall time per stage, speedup
(reference total / method total), mask IoU against the reference's mask, the mask's share of the
latent grid, the largest |edit - input| outside the mask (0: the input is kept there), and the
relative difference of the edit from the reference's.

Models: "tiny" (the package's random-weight test SD at its native size), "mid" (the SD-like
random-weight UNet of ``bench_image.py``, ``--channels`` / ``--size``) and "audio" (the tiny
random-weight AudioLDM2 on a 10 s synthetic clip, as ``bench_audio.py`` makes one). The VAE is not
timed (every method shares it); prompt encoding is, inside the stage that needs it.

LEDITS (DDPM inversion, then semantic guidance with a target prompt and 2 concepts, one added, one
removed; 100 steps / t_start 64, guidance 3.5 / 15 for images, 200 / 100 and 3 / 12 for audio). Ours
(``edit_latent(concepts=...)``) evaluates the unconditional, target and every concept branch in ONE
model call per step. ``LeditsReference`` applies the same rule (``methods.sega``: per-channel 0.95
quantile masks, warm-up, momentum) with one call of batch 1 per branch, and once more with the
branches batched into one call of 2 + C rows per step (what diffusers' LEDITS++ pipeline does). All
three edit the same inversion (ours, not timed), so the edits agree up to float rounding.

Posterior PCs (3 components at the inversion's first step, then every component applied at amounts
-2, -1, 1, 2, the drift of x0_hat at every step; 50 steps / t_start 20 for images, 100 / 20 for audio:
the reference's edits are 12 full sampling loops). ``PCReference``: a fixed 50 power iterations on
the 3 directions, each finite-difference product through separate unconditional and conditional calls
of batch 1, then one edit per (component, amount) with separate calls. Ours: ``principal_components``
(one call per iteration with the base point and 3 + 2 directions) run twice, at the same 50 iterations
(tolerance 0) and with the convergence stop ``--pc-tolerance``, then ``edit_pc_latent`` (all 12 edits
in one batch per step). Random-weight models have nearly flat posterior spectra, on which subspace
iteration hardly converges, so the "gaussian" model (an exact denoiser of a Gaussian prior with a
decaying spectrum, ``GaussianModel``) is added: its true components are known.

    python benchmarks/bench_methods.py                          # everything: about 9 CPU minutes (12 wall on a busy 2-core machine)
    python benchmarks/bench_methods.py --benchmarks ledits,pcs --models tiny --pc-models tiny,gaussian   # about a minute
    python benchmarks/bench_methods.py --benchmarks diffedit --models tiny,audio --repeats 3
    python benchmarks/bench_methods.py --benchmarks pcs --pc-models mid,gaussian
    python benchmarks/bench_methods.py --cfg-src 7.5            # DiffEdit inversion with guidance (diffusers' invert() default)
    python benchmarks/bench_methods.py --device cuda --models mid --size 64
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

import torch

try:
    from . import bench_audio, bench_image
    from .common import ReferenceLoop, count_unet_calls, edit_parser, print_table, relative_error, timed
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_audio
    import bench_image
    from common import ReferenceLoop, count_unet_calls, edit_parser, print_table, relative_error, timed

from image_core import ImageEditor, batching
from image_core.editing import LatentEditor, latent_dtype
from image_core.inversion import Inversion
from image_core.methods import pcs as pcs_method
from image_core.methods.diffedit import CLAMP_RATIO
from image_core.methods.sega import MOMENTUM_BETA, MOMENTUM_SCALE, Concept
from image_core.sampling import gaussian, generators

STAGES = ("mask", "inv", "edit")


# ------------------------------------------------------------------------------ reference loop


class DiffEditReference:
    """DiffEdit as the diffusers pipeline runs it, on any model adapter (``encode_prompts`` and
    ``predict_eps``); latents in the model's dtype, as the pipeline keeps them.

    Args:
        model: the adapter (``StableDiffusionModel`` or ``AudioModel``).
        steps, t_start: the chain and the steps the edit runs (inpaint_strength = t_start / steps).
        cfg_src: guidance of the inversion (``invert``'s guidance_scale), cfg_tar: of the mask and
            the edit (``generate_mask``'s and ``__call__``'s).
        mask_strength, draws, threshold, seed: of the mask (mask_encode_strength, num_maps_per_mask).
    """

    def __init__(
        self, model: Any, steps: int, t_start: int, cfg_src: float, cfg_tar: float,
        mask_strength: float = 0.5, draws: int = 10, threshold: float = 0.5, seed: int = 0,
    ) -> None:
        from diffusers import DDIMInverseScheduler, DDIMScheduler

        config = {**dict(model.scheduler_config), "prediction_type": "epsilon", "clip_sample": False}  # ε from predict_eps
        self.scheduler = DDIMScheduler.from_config(config)
        inverse_keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
        self.inverse_scheduler = DDIMInverseScheduler.from_config({k: v for k, v in config.items() if k in inverse_keys})
        self.model, self.steps, self.t_start = model, steps, t_start
        self.cfg_src, self.cfg_tar = cfg_src, cfg_tar
        self.mask_strength, self.draws, self.threshold, self.seed = mask_strength, draws, threshold, seed

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.model.predict_eps(x, t.reshape(1).expand(len(x)).to(torch.int64), cond)

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
        first = self.steps - min(int(self.steps * self.mask_strength), self.steps)  # get_timesteps
        t = self.scheduler.timesteps[first]
        noise = gaussian(generators([self.seed]), (n, *x0.shape[1:]))[0]  # ours' draws
        x0 = x0.to(self.model.dtype).cpu()
        x_t = self.scheduler.add_noise(x0.expand(n, *x0.shape[1:]), noise.to(x0.dtype), t).to(self.model.device)
        eps = self.eps(torch.cat([x_t] * len(branches)), t, cond).float()
        if guide:
            neg_src, e_src, neg_tar, e_tar = eps.chunk(4)
            e_src = neg_src + self.cfg_tar * (e_src - neg_src)
            e_tar = neg_tar + self.cfg_tar * (e_tar - neg_tar)
        else:
            e_src, e_tar = eps.chunk(2)
        guidance_map = (e_tar - e_src).abs().mean(0, keepdim=True)
        if x0.dim() > 2:
            guidance_map = guidance_map.mean(1, keepdim=True)  # channels
        limit = guidance_map.mean() * CLAMP_RATIO
        return (guidance_map.clamp(0, limit) / limit > self.threshold).float()

    @torch.no_grad()
    def invert(self, x0: torch.Tensor, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, (t_start, ...) inverted latents, largest timestep first): one call per step."""
        guide = self.cfg_src > 1
        enc = self.model.encode_prompts([source, ""])
        cond = batching.cat([batching.take(enc, slice(1, 2)), batching.take(enc, slice(0, 1))]) if guide else batching.take(enc, slice(0, 1))
        self.inverse_scheduler.set_timesteps(self.steps)
        timesteps = self.inverse_scheduler.timesteps[: self.t_start]  # get_inverse_timesteps
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
        timesteps = self.scheduler.timesteps[self.steps - self.t_start :]  # get_timesteps
        mask = mask.to(x0.device, x0.dtype)
        keep = [*inverted[1:].split(1), x0]  # where each step lands
        latents = inverted[:1].clone()
        for i, t in enumerate(timesteps):
            eps = self.eps(torch.cat([latents] * 2) if guide else latents, t, cond)
            if guide:
                uncond, text = eps.chunk(2)
                eps = uncond + self.cfg_tar * (text - uncond)
            latents = self.scheduler.step(eps, t, latents, eta=0.0).prev_sample
            latents = latents * mask + keep[i] * (1 - mask)
        return latents


# ---------------------------------------------------------------------------------- measuring

Stage = Callable[..., Any]


def reference_stages(model: Any, x0: torch.Tensor, args: argparse.Namespace, steps: int, t_start: int) -> tuple[Stage, Stage, Stage]:
    ref = DiffEditReference(
        model, steps, t_start, args.cfg_src, args.cfg_tar, args.mask_strength, args.draws, args.threshold, args.seed
    )
    src, tar = args.source_prompt, args.target_prompt
    return (
        lambda: ref.invert(x0, src),
        lambda state: ref.generate_mask(x0, src, tar),
        lambda state, mask: ref.edit(state, tar, mask),
    )


def our_stages(
    editor: LatentEditor, x0: torch.Tensor, args: argparse.Namespace, steps: int, t_start: int, method: str
) -> tuple[Stage, Stage, Stage]:
    src, tar = args.source_prompt, args.target_prompt
    return (
        lambda: editor.invert_latent(x0, src, steps, t_start, args.cfg_src, args.eta, args.seed, method=method),
        lambda inv: editor.mask_latent(inv, tar, strength=args.mask_strength, draws=args.draws, threshold=args.threshold, seed=args.seed),
        lambda inv, mask: editor.edit_latent(inv, tar, args.cfg_tar, mask=mask),
    )


def measure(unet: torch.nn.Module, stages: tuple[Stage, Stage, Stage], repeats: int) -> dict[str, Any]:
    """Counts and best wall times of the three stages (inversion, then mask, then edit; the table
    lists them mask first, as the pipeline runs them)."""
    invert, mask, edit = stages
    n = max(1, repeats)
    result: dict[str, Any] = {}
    with count_unet_calls(unet) as c_inv:
        result["inv_s"], state = timed(invert, repeats)
    with count_unet_calls(unet) as c_mask:
        result["mask_s"], m = timed(lambda: mask(state), repeats)
    with count_unet_calls(unet) as c_edit:
        result["edit_s"], edited = timed(lambda: edit(state, m), repeats)
    counts = {"mask": c_mask, "inv": c_inv, "edit": c_edit}
    calls = [counts[s].calls // n for s in STAGES]
    rows = [counts[s].rows // n for s in STAGES]
    result.update(
        calls=f"{' + '.join(map(str, calls))} = {sum(calls)}",
        rows=f"{' + '.join(map(str, rows))} = {sum(rows)}",
        total_s=result["mask_s"] + result["inv_s"] + result["edit_s"],
        mask=m.detach().double().cpu(),
        edited=edited.detach().double().cpu(),
    )
    return result


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def compare(label: str, model: Any, editor: LatentEditor, x0: torch.Tensor, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table rows of the reference, ours (DDIM) and ours (DDPM) on one latent ``x0`` (1, ...)."""
    methods: dict[str, Callable[[int, int], tuple[Stage, Stage, Stage]]] = {
        "reference (diffusers-style)": lambda s, t: reference_stages(model, x0, args, s, t),
        "ours, DDIM inversion": lambda s, t: our_stages(editor, x0, args, s, t, "ddim"),
        "ours, DDPM inversion": lambda s, t: our_stages(editor, x0, args, s, t, "ddpm"),
    }
    if args.warmup_steps > 0:  # kernels, allocator, lazy imports
        steps = min(args.warmup_steps, args.steps)
        t_start = max(1, round(steps * args.t_start / args.steps))
        for make in methods.values():
            invert, mask, edit = make(steps, t_start)
            state = invert()
            edit(state, mask(state))
    results = {name: measure(model.unet, make(args.steps, args.t_start), args.repeats) for name, make in methods.items()}
    reference = results["reference (diffusers-style)"]
    x0_cpu = x0.double().cpu()
    rows = []
    for name, r in results.items():
        outside = (r["mask"] == 0).expand_as(r["edited"])
        rows.append({
            **{k: v for k, v in r.items() if k not in ("mask", "edited")},
            "model": label,
            "method": name,
            "speedup": reference["total_s"] / r["total_s"],
            "iou": iou(r["mask"], reference["mask"]),
            "cover": float(r["mask"].mean()),
            "outside": float((r["edited"] - x0_cpu)[outside].abs().max()) if outside.any() else 0.0,
            "agree": relative_error(r["edited"], reference["edited"]),
        })
    return rows


DIFFEDIT_COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("calls", "UNet calls (mask + inv + edit)"),
    ("rows", "sample-evals (mask + inv + edit)"),
    ("mask_s", "mask s"),
    ("inv_s", "inversion s"),
    ("edit_s", "edit s"),
    ("total_s", "wall s"),
    ("speedup", "speedup"),
    ("iou", "mask IoU vs ref"),
    ("cover", "mask cover"),
    ("outside", "max |Δ| outside mask"),
    ("agree", "edit rel. diff vs ref"),
]

DIFFEDIT_NOTES = (
    "sample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: reference wall s / this method's."
    "\nmask IoU: |ours ∩ ref| / |ours ∪ ref| of the binary masks (same noise draws; ours without guidance, the"
    " reference with it). mask cover: share of the latent grid marked for editing."
    "\nmax |Δ| outside mask: largest |edit - input latent| where the mask is 0 (0: kept exactly)."
    "\nedit rel. diff: ||edit - edit_ref|| / ||edit_ref||; DDIM: the same edit (float32 vs float64 rounding),"
    " DDPM: a different inversion, so a different edit."
)


# ------------------------------------------------------------------------------------------ LEDITS


class LeditsReference:
    """A LEDITS edit (DDPM-inverted input, then semantic guidance) written as a per-branch loop: the
    unconditional, target and every concept branch each in a call of batch 1 through the adapter's
    ``predict_eps`` (``batched``: all of them in ONE call of 2 + C rows per step), timesteps and ᾱ
    from a diffusers ``DDIMScheduler`` (``common.ReferenceLoop``). The rule at step i:

        ε    = ε_u + s_g (ε_tar - ε_u) + Σ_{c active} γ_c + s_m v      (v once any concept guides)
        γ_c  = ±s_c w_c (ε_c - ε_u), zero where |γ_c| is below its ``threshold`` quantile over the
               cells of each channel (``torch.quantile``)
        v    ← β v + (1 - β) Σ_c γ_c                                   (v = 0 before the first step)

    a concept being active from its warm-up step on and before its cool-down step.
    """

    def __init__(
        self, model: Any, num_steps: int, batched: bool = False,
        momentum_scale: float = MOMENTUM_SCALE, momentum_beta: float = MOMENTUM_BETA,
    ) -> None:
        self.model, self.batched = model, batched
        self.loop = ReferenceLoop(model.scheduler_config, num_steps, self.eps)
        self.momentum_scale, self.momentum_beta = momentum_scale, momentum_beta
        self._conds: dict[str, Any] = {}

    def cond(self, prompt: str) -> Any:
        if prompt not in self._conds:  # each prompt encoded once, as the reference code does
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
        cond = self._conds[key]
        eps = self.model.predict_eps(x.expand(n, *x.shape[1:]), t.reshape(1).expand(n).to(torch.int64), cond)
        return list(eps.double().split(1))

    @torch.no_grad()
    def edit(self, inv: Inversion, target: str, cfg_tar: float, concepts: list[Concept]) -> torch.Tensor:
        s = inv.settings
        timesteps = self.loop.scheduler.timesteps[s.num_steps - s.t_start :].to(inv.xts.device)
        x, zs = inv.xts[:1, 0], inv.zs[:1]
        per_channel = x.dim() > 2
        momentum: torch.Tensor | None = None
        for i, t in enumerate(timesteps):
            eps_u, eps_tar, *eps_c = self.branches(x, t, ["", target, *(c.prompt for c in concepts)])
            eps = eps_u + cfg_tar * (eps_tar - eps_u)
            every, active, guiding = torch.zeros_like(eps), torch.zeros_like(eps), False
            for concept, e in zip(concepts, eps_c):
                gamma = (e - eps_u) * (concept.scale * concept.weight * (-1 if concept.remove else 1))
                cells = gamma.abs().flatten(2) if per_channel else gamma.abs().flatten(1)
                cut = torch.quantile(cells, concept.threshold, dim=-1, keepdim=True)
                gamma = torch.where((cells >= cut).view_as(gamma), gamma, torch.zeros_like(gamma))
                every += gamma
                if concept.warmup <= i and (concept.cooldown is None or i < concept.cooldown):
                    active += gamma
                    guiding = True
            eps = eps + active
            if momentum is not None and guiding:
                eps = eps + self.momentum_scale * momentum
            momentum = self.momentum_beta * (0 if momentum is None else momentum) + (1 - self.momentum_beta) * every
            mu, sigma = self.loop.step_terms(x, int(t), eps, s.eta)
            x = mu + sigma * zs[:, i] if sigma > 0 else mu + (inv.residual if inv.residual is not None else 0)
        return x


def ledits_settings(domain: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steps, guidance, prompts and concepts of the LEDITS edit of an image or audio latent."""
    if domain == "audio":
        add, remove = args.audio_concepts.split(",")
        return dict(
            steps=args.audio_ledits_steps, t_start=args.audio_ledits_t_start, cfg_src=3.0, cfg_tar=12.0,
            source=args.audio_source_prompt, target=args.audio_target_prompt,
            concepts=[Concept(add, scale=args.concept_scale), Concept(remove, scale=args.concept_scale, remove=True)],
        )
    add, remove = args.image_concepts.split(",")
    return dict(
        steps=args.ledits_steps, t_start=args.ledits_t_start, cfg_src=3.5, cfg_tar=15.0,
        source=args.image_source_prompt, target=args.image_target_prompt,
        concepts=[Concept(add, scale=args.concept_scale), Concept(remove, scale=args.concept_scale, remove=True)],
    )


def run_ledits(subject: Subject, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table rows of the LEDITS edit of one model: the inversion (ours) is shared and not timed here."""
    cfg = ledits_settings(subject.domain, args)
    model, editor, x0 = subject.model, subject.editor, subject.x0
    target, cfg_tar, concepts = cfg["target"], cfg["cfg_tar"], cfg["concepts"]

    def invert(steps: int, t_start: int) -> Inversion:
        return editor.invert_latent(x0, cfg["source"], steps, t_start, cfg["cfg_src"], args.eta, args.seed)

    methods: dict[str, Callable[[Inversion], torch.Tensor]] = {
        "reference, one call per branch": lambda inv: LeditsReference(model, inv.settings.num_steps).edit(inv, target, cfg_tar, concepts),
        "reference, branches batched": lambda inv: LeditsReference(model, inv.settings.num_steps, batched=True).edit(inv, target, cfg_tar, concepts),
        "ours (one call per step)": lambda inv: editor.edit_latent(inv, target, cfg_tar, concepts=concepts),
    }
    if args.warmup_steps > 0:
        small = invert(args.warmup_steps + 1, args.warmup_steps)
        for edit in methods.values():
            edit(small)
    with count_unet_calls(model.unet) as inv_count:
        inv_s, inv = timed(lambda: invert(cfg["steps"], cfg["t_start"]), 1)
    print(f"  {subject.label}: shared inversion (ours) {inv_count.calls} UNet calls, {inv_count.rows} sample-evals, {inv_s:.2f} s", flush=True)
    results = {}
    for name, edit in methods.items():
        with count_unet_calls(model.unet) as count:
            seconds, edited = timed(lambda: edit(inv), args.repeats)
        n = max(1, args.repeats)
        results[name] = dict(calls=count.calls // n, rows=count.rows // n, total_s=seconds, edited=edited.detach().double().cpu())
    reference = results["reference, one call per branch"]
    rows = []
    for name, r in results.items():
        rows.append({
            "model": subject.label, "method": name, "calls": r["calls"], "rows": r["rows"], "total_s": r["total_s"],
            "ms_per_eval": 1000 * r["total_s"] / max(1, r["rows"]),
            "speedup": reference["total_s"] / r["total_s"],
            "agree": relative_error(r["edited"], reference["edited"]),
            "agree_batched": relative_error(r["edited"], results["reference, branches batched"]["edited"]),
            "change": relative_error(r["edited"], inv.x0[:1]),
        })
    return rows


LEDITS_COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("calls", "UNet calls"),
    ("rows", "sample-evals"),
    ("total_s", "edit wall s"),
    ("ms_per_eval", "ms / sample-eval"),
    ("speedup", "speedup vs per-branch ref"),
    ("agree", "edit rel. diff vs ref"),
    ("agree_batched", "vs batched ref"),
    ("change", "||edit - x0|| / ||x0||"),
]

LEDITS_NOTES = (
    "The edit only (target prompt + 2 concepts, one added, one removed); all three edit the same inversion."
    "\nsample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: per-branch reference wall s / this one's."
    "\nedit rel. diff: ||edit - edit_ref|| / ||edit_ref|| against the per-branch reference (same rule, same maps:"
    " float rounding; the float32 UNet rounds a batch of 1 and one of 2 + C rows differently, which guidance 15 and"
    " concept scale 10 amplify, and a few cells may then cross the 0.95 quantile). vs batched ref: the same against"
    " the reference that batches the branches as ours does. ||edit - x0|| / ||x0||: how far the edit moved the input (that the edit did something)."
)


# ---------------------------------------------------------------------------- posterior PCs


class PCReference:
    """Posterior PCs as a reference-style loop: plain subspace (power) iteration for a FIXED number of
    iterations on exactly the n directions asked for, each Jacobian-vector product by finite differences
    through its own model calls (unconditional and conditional branches in separate calls of batch 1,
    so 2 calls per direction and iteration, the base point once), QR after every iteration, eigenvalues
    as Rayleigh quotients; then one edit per (component, amount), each a full DDPM sampling loop with
    the drift of x0_hat applied at every step (2 calls per step). Same finite-difference step, sign
    convention and drift as ``methods.pcs``."""

    def __init__(self, model: Any, num_steps: int, iterations: int = pcs_method.MAX_ITERATIONS, seed: int = 0) -> None:
        self.model, self.iterations, self.seed = model, iterations, seed
        self.loop = ReferenceLoop(model.scheduler_config, num_steps, self.eps)
        self._conds: dict[str, Any] = {}
        self.turn = float("nan")

    def eps(self, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        if prompt not in self._conds:
            self._conds[prompt] = self.model.encode_prompts([prompt])
        return self.model.predict_eps(x, t.reshape(1).to(torch.int64), self._conds[prompt]).double()

    def timesteps(self, inv: Inversion) -> torch.Tensor:
        s = inv.settings
        return self.loop.scheduler.timesteps[s.num_steps - s.t_start :].to(inv.xts.device)

    @torch.no_grad()
    def components(self, inv: Inversion, n: int, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """((n, ...) orthonormal vectors, (n,) eigenvalues) of Cov[x0 | x_t] at the inversion's ``step``."""
        s = inv.settings
        t = self.timesteps(inv)[step]
        a = self.loop.alpha_bar(int(t))
        x_t = inv.xts[:1, step]
        h = pcs_method.FD_STEP * float(x_t.norm())
        scale = (1 - a) / a**0.5

        def x0_hat(x: torch.Tensor) -> torch.Tensor:
            return (x - (1 - a) ** 0.5 * self.loop.noise_pred(x, t, s.source_prompt, s.cfg_src)) / a**0.5

        base = x0_hat(x_t)
        d = x_t.numel()
        g = torch.Generator().manual_seed(self.seed)
        V, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64).to(x_t.device, x_t.dtype))
        values = torch.zeros(n, dtype=torch.float64)
        for _ in range(self.iterations):
            W = torch.stack([scale * (x0_hat(x_t + h * v.view_as(x_t)) - base).flatten() / h for v in V.T], 1)
            values = (V * W).sum(0)  # Rayleigh quotients
            Q, _ = torch.linalg.qr(W)
            self.turn = float(torch.arccos(torch.linalg.svdvals(V.T @ Q).clamp(max=1).min()))
            V = Q
        order = values.argsort(descending=True)
        V, values = V[:, order], values[order]
        V = V * torch.where(V.sum(0) < 0, -1.0, 1.0).to(V.dtype)  # the sign convention of ours
        return V.T.reshape(n, *x_t.shape[1:]), values.cpu()

    @torch.no_grad()
    def edit(self, inv: Inversion, vectors: torch.Tensor, values: torch.Tensor, pcs: list[int], amounts: list[float], step: int = 0) -> torch.Tensor:
        """One sampling loop per (pc, amount), rows PC-major as ``edit_pc_latent``."""
        s = inv.settings
        gap = self.loop.scheduler.config.num_train_timesteps // s.num_steps
        outputs = []
        for k in pcs:
            for amount in amounts:
                shift = amount * float(values[k - 1].clamp(min=0)) ** 0.5 * vectors[k - 1].to(inv.xts.device, inv.xts.dtype)
                x = inv.xts[:1, 0]
                for i, t in enumerate(self.timesteps(inv)):
                    a_t, a_prev = self.loop.alpha_bar(int(t)), self.loop.alpha_bar(int(t) - gap)
                    eps = self.loop.noise_pred(x, t, s.source_prompt, s.cfg_src)
                    x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
                    if i >= step:  # the drift: x0_hat moved, ε re-derived from it
                        x0 = x0 + shift
                        eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
                    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
                    sigma = s.eta * variance**0.5
                    x = a_prev**0.5 * x0 + max(0.0, 1 - a_prev - sigma**2) ** 0.5 * eps
                    if sigma > 0:
                        x = x + sigma * inv.zs[:1, i]
                    elif inv.residual is not None:
                        x = x + inv.residual[:1]
                outputs.append(x)
        return torch.cat(outputs)


class GaussianDenoiser(torch.nn.Module):
    """The exact ε of a Gaussian prior x0 ~ N(m, Q diag(s) Q^T): a linear map of x_t at every t."""

    def __init__(self, shape: tuple[int, ...], spectrum: torch.Tensor, seed: int = 0) -> None:
        from diffusers import DDIMScheduler

        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = spectrum.numel()
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        self.shape = shape
        self.register_buffer("Q", Q)
        self.register_buffer("s", spectrum.double())
        self.register_buffer("mean", 0.5 * torch.randn(d, generator=g, dtype=torch.float64))
        self.register_buffer("alphas", DDIMScheduler.from_config(GaussianModel.scheduler_config).alphas_cumprod.double())

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        a = self.alphas[timestep.cpu()].to(sample.device)[:, None]
        x = sample.double().flatten(1)
        coords = (x - a.sqrt() * self.mean) @ self.Q
        x0 = self.mean + (coords * a.sqrt() * self.s / (a * self.s + 1 - a)) @ self.Q.T
        return ((x - a.sqrt() * x0) / (1 - a).sqrt()).view_as(sample).to(sample.dtype)


class GaussianModel:
    """A model adapter around ``GaussianDenoiser`` (prompts ignored): latents (1, 4, 16, 16), prior
    spectrum s_i = 4 · 0.7^i + 0.02, so the posterior's top eigenvectors are known and separated."""

    from image_core.stable_diffusion.tiny import SD_SCHEDULER as scheduler_config

    device = torch.device("cpu")
    dtype = torch.float64

    def __init__(self, shape: tuple[int, ...] = (4, 16, 16)) -> None:
        import math

        d = math.prod(shape)
        spectrum = 4.0 * 0.7 ** torch.arange(d, dtype=torch.float64) + 0.02
        self.unet = GaussianDenoiser(shape, spectrum)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return {"text": torch.zeros(len(prompts), 1, dtype=torch.float64)}

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.unet(x_t, t)

    def fingerprint(self) -> str:
        return "gaussian-prior"

    def sample(self, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + 1)
        u = self.unet
        return (u.mean + u.Q @ (u.s.sqrt() * torch.randn(u.s.numel(), generator=g, dtype=torch.float64))).view(1, *u.shape)

    def true_components(self, a: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = self.unet
        values = u.s * (1 - a) / (a * u.s + 1 - a)  # decreasing in s: the first n columns of Q
        return u.Q[:, :n].T.reshape(n, *u.shape), values[:n]


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the spans of the rows of (n, ...) ``a`` and ``b``."""
    qa, _ = torch.linalg.qr(a.reshape(a.shape[0], -1).double().cpu().T)
    qb, _ = torch.linalg.qr(b.reshape(b.shape[0], -1).double().cpu().T)
    return torch.rad2deg(torch.arccos(torch.linalg.svdvals(qa.T @ qb).clamp(max=1))).flip(0)


def pc_settings(domain: str, args: argparse.Namespace) -> dict[str, Any]:
    if domain == "audio":
        return dict(steps=args.audio_pc_steps, t_start=args.audio_pc_t_start, cfg_src=3.0, source=args.audio_source_prompt)
    return dict(steps=args.pc_steps, t_start=args.pc_t_start, cfg_src=3.5, source=args.image_source_prompt)


def run_pcs(subject: Subject, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table rows of the PC extraction and the PC edits of one model (the inversion is shared, not timed)."""
    cfg = pc_settings(subject.domain, args)
    model, editor = subject.model, subject.editor
    n, iterations = args.pc_count, args.pc_iterations
    pc_list = list(range(1, n + 1))
    amounts = [float(a) for a in args.pc_amounts.split(",")]

    def invert(steps: int, t_start: int) -> Inversion:
        return editor.invert_latent(subject.x0, cfg["source"], steps, t_start, cfg["cfg_src"], args.eta, args.seed)

    def ours(tolerance: float, max_iterations: int) -> tuple[Callable[[Inversion], Any], Callable[[Inversion, Any], torch.Tensor]]:
        return (
            lambda inv: editor.principal_components(inv, n=n, step=0, max_iterations=max_iterations, tolerance=tolerance, seed=args.seed),
            lambda inv, pcs: editor.edit_pc_latent(inv, pcs, pc=pc_list, amount=amounts),
        )

    def reference(its: int) -> tuple[Callable[[Inversion], Any], Callable[[Inversion, Any], torch.Tensor]]:
        def extract(inv: Inversion) -> Any:
            ref = PCReference(model, inv.settings.num_steps, its, args.seed)  # prompts encoded inside the timed run
            vectors, values = ref.components(inv, n)
            return {"vectors": vectors, "values": values, "iterations": its, "turn": ref.turn}

        def edit(inv: Inversion, pcs: Any) -> torch.Tensor:
            ref = PCReference(model, inv.settings.num_steps, its, args.seed)
            return ref.edit(inv, pcs["vectors"], pcs["values"], pc_list, amounts)

        return extract, edit

    methods = {
        f"reference ({iterations} it., per-direction calls)": lambda its: reference(its),
        f"ours at {iterations} it. (tolerance 0)": lambda its: ours(0.0, its),
        f"ours, stop at {args.pc_tolerance:g} rad": lambda its: ours(args.pc_tolerance, its),
    }
    if args.warmup_steps > 0:
        small = invert(args.warmup_steps + 1, args.warmup_steps)
        for make in methods.values():
            extract, edit = make(2)
            edit(small, extract(small))
    inv = invert(cfg["steps"], cfg["t_start"])
    results: dict[str, dict[str, Any]] = {}
    for name, make in methods.items():
        extract, edit = make(iterations)
        with count_unet_calls(model.unet) as c_pc:
            pc_s, pcs = timed(lambda: extract(inv), args.repeats)
        with count_unet_calls(model.unet) as c_edit:
            edit_s, edited = timed(lambda: edit(inv, pcs), args.repeats)
        k = max(1, args.repeats)
        if isinstance(pcs, dict):
            vectors, values, its, turn = pcs["vectors"], pcs["values"], pcs["iterations"], pcs["turn"]
        else:
            vectors, values, its, turn = pcs.vectors, pcs.values, pcs.info["iterations"], pcs.info["angle"]
        results[name] = dict(
            calls=(c_pc.calls // k, c_edit.calls // k), rows=(c_pc.rows // k, c_edit.rows // k), pc_s=pc_s, edit_s=edit_s,
            vectors=vectors.double().cpu(), values=values.double().cpu(), iterations=its, turn=turn, edited=edited.double().cpu(),
        )
    truth = None
    if isinstance(model, GaussianModel):
        from image_core.schedule import Schedule

        schedule = Schedule.from_config(model.scheduler_config, cfg["steps"])
        truth = model.true_components(float(schedule.alphas[schedule.last(cfg["t_start"])][0]), n)
    ref = next(iter(results.values()))
    ref_total = ref["pc_s"] + ref["edit_s"]
    rows = []
    for name, r in results.items():
        total = r["pc_s"] + r["edit_s"]
        angles = principal_angles(r["vectors"], ref["vectors"])
        row = {
            "model": subject.label, "method": name, "iterations": r["iterations"],
            "turn": float(torch.rad2deg(torch.tensor(r["turn"]))) if r["turn"] == r["turn"] and r["turn"] != float("inf") else None,
            "calls": f"{r['calls'][0]} + {r['calls'][1]} = {sum(r['calls'])}",
            "rows": f"{r['rows'][0]} + {r['rows'][1]} = {sum(r['rows'])}",
            "pc_s": r["pc_s"], "edit_s": r["edit_s"], "total_s": total,
            "fewer_calls": sum(ref["calls"]) / sum(r["calls"]), "speedup": ref_total / total,
            "angles": "/".join(f"{a:.3g}" for a in angles.tolist()),
            "values_diff": float(((r["values"] - ref["values"]).abs() / ref["values"].abs()).max()),
            "agree": relative_error(r["edited"], ref["edited"]),
            "lambdas": "/".join(f"{v:.3g}" for v in r["values"].tolist()),
        }
        if truth is not None:
            row["true_angle"] = float(principal_angles(r["vectors"], truth[0]).max())
            row["true_values"] = float(((r["values"] - truth[1]).abs() / truth[1]).max())
        rows.append(row)
    return rows


PC_COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("iterations", "iterations"),
    ("turn", "last turn °"),
    ("calls", "UNet calls (PCs + edits)"),
    ("rows", "sample-evals (PCs + edits)"),
    ("pc_s", "PCs s"),
    ("edit_s", "edits s"),
    ("total_s", "wall s"),
    ("fewer_calls", "ref calls / calls"),
    ("speedup", "speedup"),
    ("lambdas", "λ1/λ2/λ3"),
    ("angles", "principal angles vs ref °"),
    ("values_diff", "max λ rel. diff vs ref"),
    ("true_angle", "max angle vs true PCs °"),
    ("true_values", "max λ rel. err vs true"),
    ("agree", "edits rel. diff vs ref"),
]

PC_NOTES = (
    "PCs: the top components of Cov[x0 | x_t] at the inversion's first step (subspace iteration by finite-difference"
    " Jacobian-vector products); edits: every (component, amount) pair, the drift of x0_hat applied at every step."
    "\nlast turn: largest principal angle between the last two iterates of the top-n subspace (what the stop tests)."
    "\nref calls / calls, speedup: the reference's UNet calls and wall s over this method's (PCs + edits)."
    "\nprincipal angles vs ref: between the 3-dim subspaces of this method's and the reference's PCs (0 for the"
    " reference itself). max λ rel. diff: max_k |λ_k - λ_k,ref| / |λ_k,ref|."
    "\nvs true: against the exact eigenpairs of the Gaussian model's posterior covariance."
    "\nedits rel. diff: ||edits - edits_ref|| / ||edits_ref|| (each with its own PCs: zero only if the PCs agree)."
)


# ------------------------------------------------------------------------------------- models


class Subject:
    """A model with its editor, an input latent x0 (1, ...) and a table label; domain "image" or "audio"."""

    def __init__(self, label: str, model: Any, editor: LatentEditor, x0: torch.Tensor, domain: str) -> None:
        self.label, self.model, self.editor, self.x0, self.domain = label, model, editor, x0, domain


def load_subject(kind: str, args: argparse.Namespace) -> Subject:
    if kind in ("tiny", "mid"):
        model = bench_image.build_model(kind, args)
        editor = ImageEditor(model, inversion_batch_size=args.inversion_batch_size, progress=False)
        side = model.unet.config.sample_size
        label = f"{kind} SD ({side}x{side} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M)"
        x0 = bench_image.sample_latent(model).to(model.device, latent_dtype(model.device))
        return Subject(label, model, editor, x0, "image")
    if kind == "audio":
        seconds = bench_audio.COMPARE_SECONDS
        model = bench_audio.build_model("tiny", args)
        editor = bench_audio.build_editor(model, args)
        x0 = editor.encode(bench_audio.synth_clip(seconds)).to(model.device, latent_dtype(model.device))
        shape = "x".join(str(n) for n in x0.shape[1:])
        label = f"tiny AudioLDM2 ({seconds:.0f} s, {shape} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.2f}M)"
        return Subject(label, model, editor, x0, "audio")
    if kind == "gaussian":
        model = GaussianModel()
        editor = LatentEditor(model, inversion_batch_size=args.inversion_batch_size, progress=False)
        return Subject("Gaussian prior (4x16x16, exact ε)", model, editor, model.sample(args.seed), "image")
    raise SystemExit(f"unknown model {kind!r}: use tiny, mid, audio (or gaussian, for pcs)")


def run_diffedit(subject: Subject, args: argparse.Namespace) -> list[dict[str, Any]]:
    if subject.domain == "audio":
        args = argparse.Namespace(**{**vars(args), "source_prompt": args.audio_source_prompt, "target_prompt": args.audio_target_prompt})
    return compare(subject.label, subject.model, subject.editor, subject.x0, args)


BENCHMARKS: dict[str, tuple[Callable[[Subject, argparse.Namespace], list[dict[str, Any]]], Any, str]] = {
    "diffedit": (run_diffedit, DIFFEDIT_COLUMNS, DIFFEDIT_NOTES),
    "ledits": (run_ledits, LEDITS_COLUMNS, LEDITS_NOTES),
    "pcs": (run_pcs, PC_COLUMNS, PC_NOTES),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = edit_parser(
        __doc__.split("\n\n")[0], steps=50, t_start=25, cfg_src=1.0, cfg_tar=7.5, warmup=4,
        source="a bowl of fruits", target="a bowl of pears",
    )
    p.add_argument("--benchmarks", default="diffedit,ledits,pcs", help="comma-separated: diffedit, ledits, pcs")
    p.add_argument("--models", default="tiny,mid,audio", help="models of diffedit and ledits: tiny, mid (SD), audio (tiny AudioLDM2)")
    p.add_argument("--pc-models", default="tiny,audio,gaussian", help="models of pcs: tiny, mid, audio, gaussian (analytic)")
    p.add_argument("--mask-strength", type=float, default=0.5, help="noise level of the mask's draws")
    p.add_argument("--draws", type=int, default=10, help="noise draws of the mask")
    p.add_argument("--threshold", type=float, default=0.5, help="binarisation of the rescaled difference")
    p.add_argument("--size", type=int, default=24, help="latent side of the mid model")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the mid model")
    p.add_argument("--cross-dim", type=int, default=64, help="cross-attention / text width of the mid model")
    p.add_argument("--window-batch", type=int, default=8, help="window rows per UNet call of the audio editor")
    p.add_argument("--audio-source-prompt", default="a piano playing a melody")
    p.add_argument("--audio-target-prompt", default="an electric guitar playing a melody")
    g = p.add_argument_group("ledits", "LEDITS: cfg_src 3.5 / cfg_tar 15 (images), 3 / 12 (audio)")
    g.add_argument("--ledits-steps", type=int, default=100)
    g.add_argument("--ledits-t-start", type=int, default=64)
    g.add_argument("--audio-ledits-steps", type=int, default=200)
    g.add_argument("--audio-ledits-t-start", type=int, default=100)
    g.add_argument("--image-source-prompt", default="a photo of a cat sitting on a bench")
    g.add_argument("--image-target-prompt", default="a photo of a dog sitting on a bench")
    g.add_argument("--image-concepts", default="sunglasses,a bench", help="concept to add, concept to remove")
    g.add_argument("--audio-concepts", default="jazz drums,reverb", help="concept to add, concept to remove")
    g.add_argument("--concept-scale", type=float, default=10.0)
    g = p.add_argument_group("pcs", "posterior principal components: same prompts and source guidance as ledits")
    g.add_argument("--pc-steps", type=int, default=50, help="chain of the images' PC edit")
    g.add_argument("--pc-t-start", type=int, default=20, help="steps of the images' PC edit (the PCs at its first)")
    g.add_argument("--audio-pc-steps", type=int, default=100)
    g.add_argument("--audio-pc-t-start", type=int, default=20)
    g.add_argument("--pc-count", type=int, default=3, help="components extracted (all applied)")
    g.add_argument("--pc-amounts", default="-2,-1,1,2", help="amounts applied, in standard deviations")
    g.add_argument("--pc-iterations", type=int, default=pcs_method.MAX_ITERATIONS, help="the reference's (and ours' bound)")
    g.add_argument("--pc-tolerance", type=float, default=1e-2, help="ours' convergence stop (radians)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    for name in chosen:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}: use {', '.join(BENCHMARKS)}")
    print(
        f"device {args.device}, {args.dtype}, threads {args.threads}, best of {args.repeats}, eta {args.eta}, seed {args.seed}; "
        f"inversion_batch_size {args.inversion_batch_size}, window_batch {args.window_batch}",
        flush=True,
    )
    subjects: dict[str, Subject] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    for name in chosen:
        run, columns, notes = BENCHMARKS[name]
        if name == "diffedit":
            print(
                f"\n## DiffEdit: steps {args.steps}, t_start {args.t_start} (strength {args.t_start / args.steps:g}), "
                f"cfg_src {args.cfg_src} (inversion), cfg_tar {args.cfg_tar} (mask and edit), "
                f"mask: {args.draws} draws at strength {args.mask_strength}, threshold {args.threshold}\n",
                flush=True,
            )
        elif name == "ledits":
            print(
                f"\n## LEDITS: images {args.ledits_steps} steps / t_start {args.ledits_t_start}, cfg 3.5 / 15, concepts "
                f"+{args.image_concepts.replace(',', ', -')}; audio {args.audio_ledits_steps} / {args.audio_ledits_t_start}, "
                f"cfg 3 / 12, concepts +{args.audio_concepts.replace(',', ', -')}; concept scale {args.concept_scale:g}, "
                f"threshold 0.95, warm-up 1, momentum {MOMENTUM_SCALE} / β {MOMENTUM_BETA}\n",
                flush=True,
            )
        else:
            print(
                f"\n## Posterior PCs: {args.pc_count} PCs at step 0 of images {args.pc_steps} steps / t_start {args.pc_t_start} "
                f"(cfg_src 3.5), audio {args.audio_pc_steps} / {args.audio_pc_t_start} (cfg_src 3); applied at amounts "
                f"{args.pc_amounts}; reference {args.pc_iterations} iterations, ours oversample {pcs_method.OVERSAMPLE}\n",
                flush=True,
            )
        kinds = args.pc_models if name == "pcs" else args.models
        rows: list[dict[str, Any]] = []
        for kind in (k.strip() for k in kinds.split(",") if k.strip()):
            if kind not in subjects:
                subjects[kind] = load_subject(kind, args)
            if kind == "gaussian" and name != "pcs":
                raise SystemExit("the gaussian model has no prompts: use it for pcs only")
            rows += run(subjects[kind], args)
        print_table(rows, columns)
        print("\n" + notes, flush=True)
        tables[name] = rows
    return tables


if __name__ == "__main__":
    main()

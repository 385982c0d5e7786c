"""Cost of three editing methods (DiffEdit, LEDITS, posterior PCs): this package's editors against
reference implementations written from each method's paper and official code (``references.py``:
none of them uses ``image_core.methods`` or ``image_core.sampling``), ``--benchmarks
diffedit,ledits,pcs`` (default all). Where the numbers of ours and of a reference differ by more than
float rounding, this package reads the method differently from its official code.

DiffEdit (automatic mask, then a masked edit), against diffusers' ``StableDiffusionDiffEditPipeline``.
The edit is DiffEdit's default (Couairon et al., ICLR 2023, and the diffusers pipeline): 50 steps,
edit strength 0.5 (the last 25 steps, t_start 25), target guidance 7.5, the mask from 10 noise draws
at strength 0.5, clamped at 3 times its mean and binarised at 0.5. Three stages are counted and timed
on their own: mask, inversion, masked edit.

- reference (``references.DiffEditReference``): the three calls of the diffusers pipeline, written
  with the model adapter's ``predict_eps`` and diffusers' schedulers, batched as the pipeline
  batches: ``generate_mask`` (ONE call of 4 x 10 rows: source and target each with classifier-free
  guidance, i.e. negative and conditional branches, 10 noise draws each; 2 x 10 rows without
  guidance), ``invert`` (DDIM inversion with ``DDIMInverseScheduler``, one call per step, batch 1,
  or batch 2 at a source guidance above 1) and ``__call__`` (masked DDIM sampling with
  ``DDIMScheduler``, unconditional and target branches in one call of batch 2 per step). After every
  step the result is blended outside the mask with an inverted latent: by default as the paper
  says (the latent of the timestep the step lands on, the input latent after the last step);
  ``--diffedit-blend diffusers`` as the pipeline's ``__call__`` codes it (``image_latents[i]``, the
  latent of the timestep the step starts from: one step behind). The mask's noise draws are drawn
  as ours draws them (same seed), so the two masks can be compared.
- ours (DDIM): ``invert_latent(method="ddim")``, ``mask_latent`` (target and source conditional
  only: with a shared guidance scale g and a shared unconditional branch the guided difference is
  g times the conditional one, which the normalisation by its mean removes; all 20 rows batched,
  ``--inversion-batch-size`` rows per call) and ``edit_latent(mask=...)``. With the same draws and
  the paper's blend it computes the reference's edit (up to float32 against float64 rounding).
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
removed; 100 steps / t_start 64, guidance 3.5 / 15 for images, 200 / 100 and 3 / 12 for audio;
concept scale 10, threshold 0.95, warm-up 1, momentum 0.5 / β 0.6: the LEDITS demo's). Ours
(``edit_latent(concepts=...)``) evaluates the unconditional, target and every concept branch in ONE
model call per step. ``references.LeditsReference`` follows diffusers' SEGA pipeline
(``SemanticStableDiffusionPipeline.__call__``: per-channel quantile masks, warm-up and cool-down,
concept weights, and the momentum as it codes it, the guidance sum plus s_m v applied and then fed
into v) with the LEDITS demo's DDPM step on the inversion's noise maps, with one call of batch 1 per
branch, and once more with the branches batched into one call of 2 + C rows per step (the SEGA
pipeline's batch). All three edit the same inversion (ours, not timed): where ours reads SEGA as
diffusers does, the edits agree up to float rounding.

Posterior PCs (3 components, applied at amounts -2, -1, 1, 2; 50 steps / t_start 20 for images,
100 / 20 for audio). ``references.PCReference`` follows the official AudioEditingCode
(``pc_drift.get_eigenvectors`` and ``apply_drift``, as ``main_pc_extract_inv.py`` and
``main_pc_apply_drift.py`` run them): at EVERY step it drifts (by default the whole edit, the
official extraction's drift_start / drift_end defaults; ``--pc-drift-steps`` bounds it), 50
iterations of a deflated power iteration on the 3 directions with one-sided finite differences
(probes const · sqrt(ᾱ_t) · v, const 1e-3; the unconditional and conditional branches in separate
calls of batch 3), the eigenvalues as ||Cov v||; then one sampling loop per amount (the 3 components
in one batch, 2 calls per step) shifting x0_hat by amount · sqrt(λ_k(t)) · v_k(t) with each step's
own eigenvalue and own vectors (``--pc-reference-vectors first``: the first step's vectors, the
official ``--use_specific_ts_pc``). Ours: ``principal_components`` at the inversion's first step,
run twice, at the same 50 iterations (tolerance 0) and with the convergence stop
``--pc-tolerance``, then ``edit_pc_latent`` with its default drift (all 12 edits in one batch per
step). The PCs columns compare the components at the edit's first step; the last column compares
the edits, so it shows how far this package's extraction AND drift are from the official ones.
Random-weight models have nearly flat posterior spectra, on which subspace iteration hardly
converges, so the "gaussian" model (an exact denoiser of a Gaussian prior with a decaying spectrum,
``GaussianModel``) is added: its true components are known (the same vectors at every step).

    python benchmarks/bench_methods.py                          # everything: about 11 CPU minutes (the PC reference extracts at all 20 steps)
    python benchmarks/bench_methods.py --benchmarks ledits,pcs --models tiny --pc-models tiny,gaussian   # about a minute
    python benchmarks/bench_methods.py --benchmarks pcs --pc-models gaussian --pc-reference-vectors first
    python benchmarks/bench_methods.py --benchmarks diffedit --models tiny,audio --repeats 3
    python benchmarks/bench_methods.py --benchmarks pcs --pc-models mid,gaussian
    python benchmarks/bench_methods.py --cfg-src 7.5            # DiffEdit inversion with guidance (diffusers' invert() default)
    python benchmarks/bench_methods.py --device cuda --models mid --size 64
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

try:
    from . import bench_audio, bench_image
    from .common import count_unet_calls, edit_parser, print_table, relative_error, timed
    from .references import (
        DIFFEDIT_BLENDS, LEDITS_MOMENTUM_BETA, LEDITS_MOMENTUM_SCALE, PC_CONST, PC_ITERATIONS,
        DiffEditReference, LeditsReference, PCReference, SegaConcept,
    )
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_audio
    import bench_image
    from common import count_unet_calls, edit_parser, print_table, relative_error, timed
    from references import (
        DIFFEDIT_BLENDS, LEDITS_MOMENTUM_BETA, LEDITS_MOMENTUM_SCALE, PC_CONST, PC_ITERATIONS,
        DiffEditReference, LeditsReference, PCReference, SegaConcept,
    )

from image_core import ImageEditor
from image_core.editing import LatentEditor, latent_dtype
from image_core.inversion import Inversion
from image_core.methods import pcs as pcs_method
from image_core.methods import sega as sega_method
from image_core.methods.sega import Concept

STAGES = ("mask", "inv", "edit")


# ---------------------------------------------------------------------------------- measuring

Stage = Callable[..., Any]


def reference_stages(model: Any, x0: torch.Tensor, args: argparse.Namespace, steps: int, t_start: int) -> tuple[Stage, Stage, Stage]:
    ref = DiffEditReference(
        model, steps, t_start, args.cfg_src, args.cfg_tar, args.mask_strength, args.draws, args.threshold, args.seed,
        blend=args.diffedit_blend,
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
    ref_name = f"reference (diffusers, {args.diffedit_blend} blend)"
    methods: dict[str, Callable[[int, int], tuple[Stage, Stage, Stage]]] = {
        ref_name: lambda s, t: reference_stages(model, x0, args, s, t),
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
    reference = results[ref_name]
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
    "\nedit rel. diff: ||edit - edit_ref|| / ||edit_ref||; DDIM: with the paper's blend the same edit (float32 vs"
    " float64 rounding; with --diffedit-blend diffusers the reference blends one step behind the paper, so it differs),"
    " DDPM: a different inversion, so a different edit."
)


# ------------------------------------------------------------------------------------------ LEDITS


LEDITS_THRESHOLD = 0.95  # edit_threshold of the LEDITS demo (SEGA's default: 0.9)
LEDITS_WARMUP = 1  # edit_warmup_steps of the LEDITS demo (SEGA's default: 10)


def ledits_settings(domain: str, args: argparse.Namespace) -> dict[str, Any]:
    """Steps, guidance, prompts and concepts of the LEDITS edit of an image or audio latent:
    ``concepts`` for ours, the same as ``sega_concepts`` for the reference (every setting given
    explicitly, so that neither side's defaults decide)."""
    if domain == "audio":
        add, remove = args.audio_concepts.split(",")
        cfg = dict(
            steps=args.audio_ledits_steps, t_start=args.audio_ledits_t_start, cfg_src=3.0, cfg_tar=12.0,
            source=args.audio_source_prompt, target=args.audio_target_prompt,
        )
    else:
        add, remove = args.image_concepts.split(",")
        cfg = dict(
            steps=args.ledits_steps, t_start=args.ledits_t_start, cfg_src=3.5, cfg_tar=15.0,
            source=args.image_source_prompt, target=args.image_target_prompt,
        )
    pairs = [(add.strip(), False), (remove.strip(), True)]
    cfg["concepts"] = [
        Concept(p, scale=args.concept_scale, remove=r, threshold=LEDITS_THRESHOLD, warmup=LEDITS_WARMUP, cooldown=None, weight=1.0)
        for p, r in pairs
    ]
    cfg["sega_concepts"] = [
        SegaConcept(p, scale=args.concept_scale, reverse=r, threshold=LEDITS_THRESHOLD, warmup=LEDITS_WARMUP, cooldown=None, weight=1.0)
        for p, r in pairs
    ]
    return cfg


def run_ledits(subject: Subject, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table rows of the LEDITS edit of one model: the inversion (ours) is shared and not timed here."""
    cfg = ledits_settings(subject.domain, args)
    model, editor, x0 = subject.model, subject.editor, subject.x0
    target, cfg_tar, concepts, sega = cfg["target"], cfg["cfg_tar"], cfg["concepts"], cfg["sega_concepts"]

    def invert(steps: int, t_start: int) -> Inversion:
        return editor.invert_latent(x0, cfg["source"], steps, t_start, cfg["cfg_src"], args.eta, args.seed)

    methods: dict[str, Callable[[Inversion], torch.Tensor]] = {
        "reference, one call per branch": lambda inv: LeditsReference(model, inv.settings.num_steps).edit(inv, target, cfg_tar, sega),
        "reference, branches batched": lambda inv: LeditsReference(model, inv.settings.num_steps, batched=True).edit(inv, target, cfg_tar, sega),
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
    "\nreference: SEGA as diffusers' SemanticStableDiffusionPipeline.__call__ computes it (momentum: the concepts'"
    " sum plus s_m v guides, then v <- beta v + (1 - beta) that sum) with the LEDITS demo's DDPM step; see references.py."
    "\nsample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: per-branch reference wall s / this one's."
    "\nedit rel. diff: ||edit - edit_ref|| / ||edit_ref|| against the per-branch reference: float rounding where ours"
    " computes the reference's rule (the float32 UNet rounds a batch of 1 and one of 2 + C rows differently, which"
    " guidance 15 and concept scale 10 amplify, and a few cells may then cross the 0.95 quantile), more where the rule"
    " differs. vs batched ref: the same against the reference that batches the branches as ours does (between the two"
    " references: rounding alone). ||edit - x0|| / ||x0||: how far the edit moved the input (that the edit did something)."
)


# ---------------------------------------------------------------------------- posterior PCs


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
    """Chain, edit steps, source guidance and prompt, and the reference's drift range (its first
    ``drift_steps`` steps) of the PC edit of an image or audio latent."""
    def bounded(drift: int, t_start: int) -> int:
        return t_start if drift <= 0 else min(drift, t_start)

    if domain == "audio":
        return dict(steps=args.audio_pc_steps, t_start=args.audio_pc_t_start, cfg_src=3.0, source=args.audio_source_prompt,
                    drift_steps=bounded(args.audio_pc_drift_steps, args.audio_pc_t_start))  # fmt: skip
    return dict(steps=args.pc_steps, t_start=args.pc_t_start, cfg_src=3.5, source=args.image_source_prompt,
                drift_steps=bounded(args.pc_drift_steps, args.pc_t_start))  # fmt: skip


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
            found = ref.components(inv, n, range(min(cfg["drift_steps"], inv.settings.t_start)))  # the warm-up's is shorter
            vectors, values = found[0]  # the edit's first step: the one ours' are computed at
            return {"vectors": vectors, "values": values, "iterations": its, "turn": ref.turn, "found": found}

        def edit(inv: Inversion, pcs: Any) -> torch.Tensor:
            ref = PCReference(model, inv.settings.num_steps, its, args.seed)
            return ref.edit(inv, pcs["found"], pc_list, amounts, specific=0 if args.pc_reference_vectors == "first" else None)

        return extract, edit

    methods = {
        f"reference (official: {iterations} it. at each of {cfg['drift_steps']} steps, {args.pc_reference_vectors} PCs)": lambda its: reference(its),
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
    "PCs: the top components of Cov[x0 | x_t] (ours: exact Jacobian-vector products by forward-mode AD; the reference: one-sided finite differences, as the official code). Reference (AudioEditingCode"
    " get_eigenvectors + apply_drift): deflated power iteration, c = 1e-3, a fixed count, at EACH step of its drift range"
    " (the whole edit, or its first --pc-drift-steps steps), each step drifted with its own eigenvalues and its own"
    " vectors (--pc-reference-vectors first: the first step's, use_specific_ts_pc), the other steps plain"
    " reconstruction. Ours: at the inversion's first step, edited with this package's default drift."
    "\nPCs columns (iterations, turn, λ, angles) compare the components at the edit's first step."
    "\nlast turn: largest principal angle between the last two iterates of the top-n subspace (what ours' stop tests)."
    "\nref calls / calls, speedup: the reference's UNet calls and wall s over this method's (PCs + edits)."
    "\nprincipal angles vs ref: between the 3-dim subspaces of this method's and the reference's PCs (0 for the"
    " reference itself). max λ rel. diff: max_k |λ_k - λ_k,ref| / |λ_k,ref| (λ_ref: the official ||Cov v||)."
    "\nvs true: against the exact eigenpairs of the Gaussian model's posterior covariance."
    "\nedits rel. diff: ||edits - edits_ref|| / ||edits_ref|| over all (component, amount) rows: how far this"
    " method's edits are from the official extraction and drift (PCs, the steps drifted and the λ used all count)."
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
    p.add_argument(
        "--diffedit-blend", default="paper", choices=DIFFEDIT_BLENDS,
        help="the reference's blend outside the mask: with the inverted latent the step lands on (paper), or with the "
        "one of the step's own timestep (diffusers' __call__, one step behind)",
    )
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
    g.add_argument("--pc-iterations", type=int, default=PC_ITERATIONS, help="the reference's (official: 50) and ours' bound")
    g.add_argument("--pc-drift-steps", type=int, default=0,
                   help="the reference's drift range for images, each step with its own PCs: the edit's first this many steps "
                   "(official drift_start / drift_end; 0: to the end, the official extraction's default drift_end -1)")
    g.add_argument("--audio-pc-drift-steps", type=int, default=0, help="the same for audio")
    g.add_argument("--pc-reference-vectors", default="own", choices=("own", "first"),
                   help="the vectors the reference drifts each step with: the step's own PCs (official default) or those of "
                   "the edit's first step (official --use_specific_ts_pc); the eigenvalues are each step's own either way")
    g.add_argument("--pc-tolerance", type=float, default=1e-2, help="ours' convergence stop (radians)")
    return p.parse_args(argv)


def drift_range(steps: int) -> str:
    return "every step of the edit" if steps <= 0 else f"the edit's first {steps} steps"


def momentum_note() -> str:
    """'' where ours' SEGA momentum settings are the reference's (the LEDITS demo's), else what ours uses."""
    ours = (getattr(sega_method, "MOMENTUM_SCALE", None), getattr(sega_method, "MOMENTUM_BETA", None))
    if ours == (LEDITS_MOMENTUM_SCALE, LEDITS_MOMENTUM_BETA):
        return ""
    return f" (ours: {ours[0]} / β {ours[1]})"


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
                f"mask: {args.draws} draws at strength {args.mask_strength}, threshold {args.threshold}; "
                f"reference's blend: {args.diffedit_blend}\n",
                flush=True,
            )
        elif name == "ledits":
            print(
                f"\n## LEDITS: images {args.ledits_steps} steps / t_start {args.ledits_t_start}, cfg 3.5 / 15, concepts "
                f"+{args.image_concepts.replace(',', ', -')}; audio {args.audio_ledits_steps} / {args.audio_ledits_t_start}, "
                f"cfg 3 / 12, concepts +{args.audio_concepts.replace(',', ', -')}; concept scale {args.concept_scale:g}, "
                f"threshold {LEDITS_THRESHOLD}, warm-up {LEDITS_WARMUP}, momentum {LEDITS_MOMENTUM_SCALE} / β {LEDITS_MOMENTUM_BETA}"
                f"{momentum_note()}\n",
                flush=True,
            )
        else:
            print(
                f"\n## Posterior PCs: {args.pc_count} PCs at step 0 of images {args.pc_steps} steps / t_start {args.pc_t_start} "
                f"(cfg_src 3.5), audio {args.audio_pc_steps} / {args.audio_pc_t_start} (cfg_src 3); applied at amounts "
                f"{args.pc_amounts}; reference {args.pc_iterations} iterations (c {PC_CONST:g}) at each step it drifts "
                f"({drift_range(args.pc_drift_steps)} for images, {drift_range(args.audio_pc_drift_steps)} for audio), "
                f"{args.pc_reference_vectors} PCs; "
                f"ours oversample {getattr(pcs_method, 'OVERSAMPLE', '?')}\n",
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

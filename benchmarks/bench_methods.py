"""Cost of a DiffEdit edit (automatic mask, then a masked edit): this package's editors against a
loop of the kind diffusers' ``StableDiffusionDiffEditPipeline`` runs.

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

    python benchmarks/bench_methods.py                          # all three models, about 2 minutes on one core
    python benchmarks/bench_methods.py --models tiny,audio --repeats 3
    python benchmarks/bench_methods.py --cfg-src 7.5            # inversion with guidance (diffusers' invert() default)
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
    from .common import count_unet_calls, edit_parser, print_table, relative_error, timed
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import bench_audio
    import bench_image
    from common import count_unet_calls, edit_parser, print_table, relative_error, timed

from image_core import ImageEditor, batching
from image_core.editing import LatentEditor, latent_dtype
from image_core.methods.diffedit import CLAMP_RATIO
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


COLUMNS = [
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

NOTES = (
    "sample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: reference wall s / this method's."
    "\nmask IoU: |ours ∩ ref| / |ours ∪ ref| of the binary masks (same noise draws; ours without guidance, the"
    " reference with it). mask cover: share of the latent grid marked for editing."
    "\nmax |Δ| outside mask: largest |edit - input latent| where the mask is 0 (0: kept exactly)."
    "\nedit rel. diff: ||edit - edit_ref|| / ||edit_ref||; DDIM: the same edit (float32 vs float64 rounding),"
    " DDPM: a different inversion, so a different edit."
)


# ------------------------------------------------------------------------------------- models


def run_image(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = bench_image.build_model(kind, args)
    editor = ImageEditor(model, inversion_batch_size=args.inversion_batch_size, progress=False)
    side = model.unet.config.sample_size
    label = f"{kind} SD ({side}x{side} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M)"
    x0 = bench_image.sample_latent(model).to(model.device, latent_dtype(model.device))
    return compare(label, model, editor, x0, args)


def run_audio(args: argparse.Namespace) -> list[dict[str, Any]]:
    seconds = bench_audio.COMPARE_SECONDS
    model = bench_audio.build_model("tiny", args)
    editor = bench_audio.build_editor(model, args)
    x0 = editor.encode(bench_audio.synth_clip(seconds)).to(model.device, latent_dtype(model.device))
    shape = "x".join(str(n) for n in x0.shape[1:])
    label = f"tiny AudioLDM2 ({seconds:.0f} s, {shape} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.2f}M)"
    audio_args = argparse.Namespace(**{**vars(args), "source_prompt": args.audio_source_prompt, "target_prompt": args.audio_target_prompt})
    return compare(label, model, editor, x0, audio_args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = edit_parser(
        __doc__.split("\n\n")[0], steps=50, t_start=25, cfg_src=1.0, cfg_tar=7.5, warmup=4,
        source="a bowl of fruits", target="a bowl of pears",
    )
    p.add_argument("--models", default="tiny,mid,audio", help="comma-separated: tiny, mid (SD), audio (tiny AudioLDM2)")
    p.add_argument("--mask-strength", type=float, default=0.5, help="noise level of the mask's draws")
    p.add_argument("--draws", type=int, default=10, help="noise draws of the mask")
    p.add_argument("--threshold", type=float, default=0.5, help="binarisation of the rescaled difference")
    p.add_argument("--size", type=int, default=24, help="latent side of the mid model")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the mid model")
    p.add_argument("--cross-dim", type=int, default=64, help="cross-attention / text width of the mid model")
    p.add_argument("--window-batch", type=int, default=8, help="window rows per UNet call of the audio editor")
    p.add_argument("--audio-source-prompt", default="a piano playing a melody")
    p.add_argument("--audio-target-prompt", default="an electric guitar playing a melody")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"DiffEdit: steps {args.steps}, t_start {args.t_start} (strength {args.t_start / args.steps:g}), "
        f"cfg_src {args.cfg_src} (inversion), cfg_tar {args.cfg_tar} (mask and edit), eta {args.eta} (DDPM), "
        f"mask: {args.draws} draws at strength {args.mask_strength}, threshold {args.threshold}; seed {args.seed}; "
        f"device {args.device}, {args.dtype}, threads {args.threads}, best of {args.repeats}; "
        f"inversion_batch_size {args.inversion_batch_size}, window_batch {args.window_batch}\n",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for kind in (k.strip() for k in args.models.split(",")):
        if kind in ("tiny", "mid"):
            rows += run_image(kind, args)
        elif kind == "audio":
            rows += run_audio(args)
        else:
            raise SystemExit(f"unknown model {kind!r}: use tiny, mid or audio")
    print_table(rows, COLUMNS)
    print("\n" + NOTES)
    return rows


if __name__ == "__main__":
    main()

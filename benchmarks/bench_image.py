"""Cost of one image edit: this package's ``ImageEditor`` against a reference-style loop.

The edit is the image paper's default: 100 steps, t_start 64, source guidance 3.5, target guidance
15, eta 1, seed 0. Both methods draw the same x_t (same seed and order), so they compute the same
edit; the table shows how many UNet calls and sample-evaluations (rows) each needs, and how long.

- ours: ``LatentEditor.invert_latent`` (only the t_start steps the edit runs, independent x_t
  batched across timesteps, conditional and unconditional halves in one call) then
  ``edit_latent`` (one call of batch 2 per step).
- reference: a loop in the style of the official DDPM_inversion code: inversion of all the
  steps, one unconditional and one conditional UNet call of batch 1 per step, then the edit with
  separate calls as well; as in a naive loop the prompts are encoded at every step
  (``--encode-once`` encodes them once, as the official code does).

Models: "tiny" (the package's random-weight test SD at its native size) and "mid" (an SD-like
random-weight UNet, ``--channels`` and ``--size``). The VAE is not timed (both methods share it).

    python benchmarks/bench_image.py                       # both models, about a minute on one core
    python benchmarks/bench_image.py --models mid --size 32 --threads 2 --repeats 3
    python benchmarks/bench_image.py --device cuda --size 64
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch

try:
    from .common import count_unet_calls, print_table, relative_error, timed
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import count_unet_calls, print_table, relative_error, timed

from image_core import ImageEditor
from image_core.inversion import Inversion
from image_core.stable_diffusion import StableDiffusionModel
from image_core.tiny import SD_SCHEDULER, tiny_stable_diffusion


# --------------------------------------------------------------------------------------- models


def mid_model(
    size: int, channels: tuple[int, ...], cross_dim: int, device: torch.device, dtype: torch.dtype
) -> StableDiffusionModel:
    """An SD-like model with random weights: the tiny tokenizer and VAE, a UNet of ``channels``
    with cross-attention in all but the deepest level, a 2-layer text encoder of width ``cross_dim``."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    parts = tiny_stable_diffusion()
    tokenizer = parts["tokenizer"]
    levels = len(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=cross_dim,
                intermediate_size=2 * cross_dim,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=size,
            in_channels=4,
            out_channels=4,
            block_out_channels=channels,
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
            cross_attention_dim=cross_dim,
            attention_head_dim=8,
            norm_num_groups=min(32, math.gcd(*channels)),
        )
    for module in (text_encoder, unet, parts["vae"]):
        module.to(device).eval()
        if dtype != torch.float32:
            module.to(dtype)
    return StableDiffusionModel("random-mid", tokenizer, text_encoder, unet, parts["vae"], SD_SCHEDULER)


def build_model(kind: str, args: argparse.Namespace) -> StableDiffusionModel:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if kind == "tiny":
        return StableDiffusionModel.from_pretrained("tiny", device=device, dtype=dtype)
    channels = tuple(int(c) for c in args.channels.split(","))
    return mid_model(args.size, channels, args.cross_dim, device, dtype)


def sample_latent(model: StableDiffusionModel) -> torch.Tensor:
    """(1, 4, h, w) latent of a smooth synthetic picture at the model's native size."""
    side = model.native_size
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    image = torch.stack([torch.sin(3 * x + y), torch.cos(2 * y - x), x * y]).unsqueeze(0).clamp(-1, 1)
    return model.encode(image)


# ------------------------------------------------------------------------------ reference loop


class ReferenceLoop:
    """Edit-friendly DDPM inversion and editing written as in the official DDPM_inversion code.

    One UNet call per branch and step (the unconditional one, then the conditional one), the
    timesteps and ᾱ read from a diffusers ``DDIMScheduler``, the predecessor of t at
    t - T / N. The x_t are drawn from a generator seeded like ours, from the smallest timestep up.
    """

    def __init__(self, model: StableDiffusionModel, num_steps: int, encode_once: bool = False) -> None:
        from diffusers import DDIMScheduler

        self.model = model
        self.scheduler = DDIMScheduler.from_config(dict(model.scheduler_config))
        self.scheduler.set_timesteps(num_steps)
        self.num_steps = num_steps
        self.encode_once = encode_once
        self._cache: dict[str, torch.Tensor] = {}

    def encode_text(self, prompt: str) -> torch.Tensor:
        if not self.encode_once:
            return self.model.encode_prompts([prompt])["text"]
        if prompt not in self._cache:
            self._cache[prompt] = self.model.encode_prompts([prompt])["text"]
        return self._cache[prompt]

    def alpha_bar(self, t: int) -> float:
        return float(self.scheduler.alphas_cumprod[t]) if t >= 0 else float(self.scheduler.final_alpha_cumprod)

    @torch.no_grad()
    def noise_pred(self, x: torch.Tensor, t: torch.Tensor, prompt: str, cfg: float) -> torch.Tensor:
        unet, dtype = self.model.unet, self.model.dtype
        uncond = unet(x.to(dtype), t, encoder_hidden_states=self.encode_text("")).sample.float()
        if prompt == "":
            return uncond
        cond = unet(x.to(dtype), t, encoder_hidden_states=self.encode_text(prompt)).sample.float()
        return uncond + cfg * (cond - uncond)

    def step_terms(self, x: torch.Tensor, t: int, eps: torch.Tensor, eta: float) -> tuple[torch.Tensor, float]:
        """(μ, σ) of the step from t to t - T / N."""
        prev = t - self.scheduler.config.num_train_timesteps // self.num_steps
        a_t, a_prev = self.alpha_bar(t), self.alpha_bar(prev)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        x0_pred = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        mu = a_prev**0.5 * x0_pred + (1 - a_prev - eta * variance) ** 0.5 * eps
        return mu, eta * variance**0.5

    @torch.no_grad()
    def invert(
        self, x0: torch.Tensor, prompt: str, cfg: float, eta: float, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inversion of all N steps: (xts, zs), both (N, ...) in timestep order (largest t first)."""
        timesteps = self.scheduler.timesteps
        generator = torch.Generator().manual_seed(seed)
        noise = [torch.randn(x0.shape, generator=generator, dtype=x0.dtype) for _ in timesteps]
        a = [self.alpha_bar(int(t)) for t in timesteps]
        xts = torch.cat([a_t**0.5 * x0 + (1 - a_t) ** 0.5 * n.to(x0.device) for a_t, n in zip(a, reversed(noise))])
        x_prev = torch.cat([xts[1:], x0])
        zs = torch.empty_like(xts)
        for i, t in enumerate(timesteps.to(x0.device)):
            x = xts[i : i + 1]
            eps = self.noise_pred(x, t, prompt, cfg)
            mu, sigma = self.step_terms(x, int(t), eps, eta)
            zs[i] = (x_prev[i] - mu[0]) / sigma
        return xts, zs

    @torch.no_grad()
    def edit(
        self, xts: torch.Tensor, zs: torch.Tensor, t_start: int, prompt: str, cfg: float, eta: float
    ) -> torch.Tensor:
        """Sample the last ``t_start`` steps from x_{t_start} with the inversion's noise maps."""
        first = self.num_steps - t_start
        x = xts[first : first + 1]
        for i, t in enumerate(self.scheduler.timesteps[first:].to(x.device), start=first):
            eps = self.noise_pred(x, t, prompt, cfg)
            mu, sigma = self.step_terms(x, int(t), eps, eta)
            x = mu + sigma * zs[i : i + 1]
        return x


# ---------------------------------------------------------------------------------- measuring


def measure(model: StableDiffusionModel, invert: Any, edit: Any, repeats: int) -> dict[str, Any]:
    """Time and count an inversion and the edit that follows it; ``edit`` takes invert's result."""
    with count_unet_calls(model.unet) as inv_count:
        inv_time, state = timed(invert, repeats)
    with count_unet_calls(model.unet) as edit_count:
        edit_time, edited = timed(lambda: edit(state), repeats)
    n = max(1, repeats)
    calls = (inv_count.calls // n, edit_count.calls // n)
    rows = (inv_count.rows // n, edit_count.rows // n)
    return {
        "calls": f"{calls[0]} + {calls[1]} = {sum(calls)}",
        "rows": f"{rows[0]} + {rows[1]} = {sum(rows)}",
        "inv_s": inv_time,
        "edit_s": edit_time,
        "total_s": inv_time + edit_time,
        "ms_per_eval": 1000 * (inv_time + edit_time) / max(1, sum(rows)),
        "state": state,
        "edited": edited,
    }


def run_model(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = build_model(kind, args)
    editor = ImageEditor(model, inversion_batch_size=args.inversion_batch_size, progress=False)
    x0 = sample_latent(model)
    src, tar = args.source_prompt, args.target_prompt

    def ours(steps: int, t_start: int) -> tuple[Any, Any]:
        def invert() -> Inversion:
            return editor.invert_latent(x0, src, steps, t_start, args.cfg_src, args.eta, args.seed)

        return invert, lambda inv: editor.edit_latent(inv, tar, args.cfg_tar)

    def reference(steps: int, t_start: int) -> tuple[Any, Any]:
        loop = ReferenceLoop(model, steps, args.encode_once)
        return (
            lambda: loop.invert(x0, src, args.cfg_src, args.eta, args.seed),
            lambda state: loop.edit(*state, t_start, tar, args.cfg_tar, args.eta),
        )

    if args.warmup_steps > 0:  # a short run of each method: kernels, allocator, lazy imports
        steps = min(args.warmup_steps, args.steps)
        t_start = min(args.t_start, steps, args.inversion_batch_size)
        for method in (ours, reference):
            invert, edit = method(steps, t_start)
            edit(invert())

    results = {
        "reference": measure(model, *reference(args.steps, args.t_start), args.repeats),
        "ours": measure(model, *ours(args.steps, args.t_start), args.repeats),
    }
    inv = results["ours"]["state"]
    recon = relative_error(editor.reconstruct_latent(inv), inv.x0)
    agreement = relative_error(results["ours"]["edited"], results["reference"]["edited"])
    side = model.unet.config.sample_size
    label = f"{kind} ({side}x{side} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M)"
    rows = []
    for name, result in results.items():
        row = {k: v for k, v in result.items() if k not in ("state", "edited")}
        row.update(model=label, method=name)
        if name == "ours":
            row.update(speedup=results["reference"]["total_s"] / result["total_s"], recon=recon, agree=agreement)
        rows.append(row)
    return rows


COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("calls", "UNet calls (inv + edit)"),
    ("rows", "sample-evals (inv + edit)"),
    ("inv_s", "inversion s"),
    ("edit_s", "edit s"),
    ("total_s", "total s"),
    ("ms_per_eval", "ms / sample-eval"),
    ("speedup", "speedup"),
    ("recon", "recon. rel. err"),
    ("agree", "edit rel. diff vs reference"),
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 1 gives steady timings on a shared machine, use the free cores on an idle one",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (the best is kept)")
    p.add_argument("--warmup-steps", type=int, default=20, help="steps of the warm-up run (0: none)")
    p.add_argument("--size", type=int, default=24, help="latent side of the mid model")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the mid model")
    p.add_argument("--cross-dim", type=int, default=64, help="cross-attention / text width of the mid model")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--t-start", type=int, default=64)
    p.add_argument("--cfg-src", type=float, default=3.5)
    p.add_argument("--cfg-tar", type=float, default=15.0)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source-prompt", default="a photo of a cat sitting on a bench")
    p.add_argument("--target-prompt", default="a photo of a dog sitting on a bench")
    p.add_argument("--inversion-batch-size", type=int, default=16, help="(x_t, t) rows per inversion call of ours")
    p.add_argument("--encode-once", action="store_true", help="the reference encodes the prompts once, not every step")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(
        f"steps {args.steps}, t_start {args.t_start}, cfg_src {args.cfg_src}, cfg_tar {args.cfg_tar}, eta {args.eta}, "
        f"seed {args.seed}; device {args.device}, {args.dtype}, threads {args.threads}, best of {args.repeats}; "
        f"inversion_batch_size {args.inversion_batch_size}\n",
        flush=True,
    )
    rows = [row for kind in args.models.split(",") for row in run_model(kind.strip(), args)]
    print_table(rows, COLUMNS)
    print(
        "\nsample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: reference total / ours total."
        "\nrecon. rel. err: ||x0' - x0|| / ||x0|| of ours' reconstruction with the source prompt."
        "\nedit rel. diff: ||edit_ours - edit_reference|| / ||edit_reference|| (same x_t draws: ~float rounding)."
    )
    return rows


if __name__ == "__main__":
    main()

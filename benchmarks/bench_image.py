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
import functools
import math
from typing import Any

import torch

try:
    from .common import COMPARISON_COLUMNS, COMPARISON_NOTES, compare_with_reference, edit_parser, print_table
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from common import COMPARISON_COLUMNS, COMPARISON_NOTES, compare_with_reference, edit_parser, print_table

from image_core import ImageEditor
from image_core.stable_diffusion.model import StableDiffusionModel
from image_core.stable_diffusion.tiny import SD_SCHEDULER, clip_text_encoder, tiny_stable_diffusion


# --------------------------------------------------------------------------------------- models


def mid_model(
    size: int, channels: tuple[int, ...], cross_dim: int, device: torch.device, dtype: torch.dtype
) -> StableDiffusionModel:
    """An SD-like model with random weights: the tiny tokenizer and VAE, a UNet of ``channels``
    with cross-attention in all but the deepest level, a 2-layer text encoder of width ``cross_dim``."""
    from diffusers import UNet2DConditionModel

    parts = tiny_stable_diffusion()
    tokenizer = parts["tokenizer"]
    levels = len(channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = clip_text_encoder(tokenizer, cross_dim)
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


class TextEps:
    """The reference's model call: the SD UNet on batch 1, the prompt encoded at every call as in a
    naive loop, or once per prompt (``encode_once``, as the official code does)."""

    def __init__(self, model: StableDiffusionModel, encode_once: bool = False) -> None:
        self.model = model
        self.encode_once = encode_once
        self._cache: dict[str, torch.Tensor] = {}

    def encode_text(self, prompt: str) -> torch.Tensor:
        if not self.encode_once:
            return self.model.encode_prompts([prompt])["text"]
        if prompt not in self._cache:
            self._cache[prompt] = self.model.encode_prompts([prompt])["text"]
        return self._cache[prompt]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        unet = self.model.unet
        return unet(x.to(self.model.dtype), t, encoder_hidden_states=self.encode_text(prompt)).sample.float()


# ---------------------------------------------------------------------------------- measuring


def run_model(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    model = build_model(kind, args)
    editor = ImageEditor(model, inversion_batch_size=args.inversion_batch_size, progress=False)
    side = model.unet.config.sample_size
    label = f"{kind} ({side}x{side} latent, {sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f}M)"
    make_eps = functools.partial(TextEps, model, args.encode_once)
    return compare_with_reference(editor, model.unet, sample_latent(model), make_eps, args, label)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = edit_parser(
        __doc__.split("\n\n")[0], steps=100, t_start=64, cfg_src=3.5, cfg_tar=15.0, warmup=20,
        source="a photo of a cat sitting on a bench", target="a photo of a dog sitting on a bench",
    )
    p.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid")
    p.add_argument("--size", type=int, default=24, help="latent side of the mid model")
    p.add_argument("--channels", default="64,128,256", help="block_out_channels of the mid model")
    p.add_argument("--cross-dim", type=int, default=64, help="cross-attention / text width of the mid model")
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
    print_table(rows, COMPARISON_COLUMNS)
    print("\n" + COMPARISON_NOTES)
    return rows


if __name__ == "__main__":
    main()

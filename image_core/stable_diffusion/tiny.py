"""A tiny random-weight Stable Diffusion for tests and offline smoke runs (never a fallback)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import torch

# The SD 1.x scheduler (DDIM form of its config).
SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def byte_level_symbols() -> list[str]:
    """The 256 printable symbols that byte-level BPE tokenizers (CLIP, GPT-2, RoBERTa) map bytes to."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def clip_tokenizer() -> Any:
    """A CLIP tokenizer over single bytes (no merges): 256 + 256 end-of-word symbols + 2 specials."""
    from transformers import CLIPTokenizer

    symbols = byte_level_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        with open(os.path.join(folder, "merges.txt"), "w") as f:
            f.write("#version: 0.2\n")
        return CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=77)


def clip_text_encoder(tokenizer: Any, width: int) -> Any:
    """A random 2-layer CLIP text encoder of hidden size ``width`` for ``tokenizer`` (seed it first)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def tiny_stable_diffusion() -> dict[str, Any]:
    """Components of a tiny SD (seeded, identical on every call): 32 px native size, 2x VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tokenizer = clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_encoder = clip_text_encoder(tokenizer, 32)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=16,
            sample_size=32,
        )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler_config": SD_SCHEDULER}

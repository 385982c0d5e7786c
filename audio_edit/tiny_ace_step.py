"""A tiny ACE-Step 1.5 checkpoint with fixed random weights, for tests and offline demos.

It has the real model's interfaces (48 kHz stereo, 1920 samples a latent frame, a DiT over
(frames, C) latents with a 2-frame patch and the source-latent context, a Qwen3 text encoder, the
condition encoder's lyric / timbre encoders, its null condition and silence latent) with 8 latent
channels and a few thousand parameters per component, built in about a second without any download.
Its outputs are meaningless noise.
"""

from __future__ import annotations

from typing import Any

import torch

SEED = 0
_LATENT = 8  # latent channels (64 in the real model)
_WIDTH = 16  # DiT and condition-encoder width
_TEXT = 16  # text-encoder width
_MAX_TOKENS = 512
_TURBO = True  # as the hub checkpoint: guidance-distilled


def build_tiny_ace_step() -> dict[str, Any]:
    """The components of a tiny ACE-Step 1.5 (``audio_edit.ace_step.AceStepModel``)."""
    from diffusers import AceStepConditionEncoder, AceStepTransformer1DModel, AutoencoderOobleck

    attention = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        transformer = AceStepTransformer1DModel(
            hidden_size=_WIDTH, intermediate_size=32, num_hidden_layers=2, in_channels=3 * _LATENT,
            audio_acoustic_hidden_dim=_LATENT, patch_size=2, encoder_hidden_size=_WIDTH, is_turbo=_TURBO, **attention,
        ).eval()  # fmt: skip
        condition_encoder = AceStepConditionEncoder(
            hidden_size=_WIDTH, intermediate_size=32, text_hidden_dim=_TEXT, timbre_hidden_dim=_LATENT,
            num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1, **attention,
        ).eval()  # fmt: skip
        condition_encoder.silence_latent.normal_(0.0, 0.5)  # the real one is the VAE's latent of silence
        vae = AutoencoderOobleck(
            encoder_hidden_size=2 * _LATENT, downsampling_ratios=[8, 8, 30], channel_multiples=[1, 2, 2], decoder_channels=4,
            decoder_input_channels=_LATENT, audio_channels=2, sampling_rate=48000,
        ).eval()  # fmt: skip
        return {
            "transformer": transformer, "condition_encoder": condition_encoder, "vae": vae,
            "text_encoder": _text_encoder(), "tokenizer": _tokenizer(),
        }  # fmt: skip


def _tokenizer() -> Any:
    """Byte-level BPE without merges (every byte one token) plus "<|endoftext|>", Qwen's end and pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<|endoftext|>"]
    backend = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=_MAX_TOKENS
    )


def _text_encoder() -> Any:
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=257, hidden_size=_TEXT, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=4096,
    )  # fmt: skip
    return Qwen3Model(config).eval()

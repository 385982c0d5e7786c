"""Tiny random-weight CLAP and CLIP models (with their processors) built offline in about a second.

They let the evaluation commands and tests run without any download (``--clap-model tiny``,
``--clip-model tiny``). Their scores are meaningless numbers; they are never used in place of a
checkpoint that fails to load.
"""

from __future__ import annotations

from typing import Any

import torch

SEED = 0

TINY_CLAP_RATE = 48000
"""Sample rate (Hz) of the tiny CLAP's feature extractor (the real checkpoints' rate)."""

TINY_CLAP_WINDOW_S = 2
"""Seconds per window of the tiny CLAP (the real checkpoints take 10 s)."""

_WIDTH = 32  # hidden size of every tiny tower
_PROJECTION = 16  # joint embedding size
_MAX_TOKENS = 64


def tiny_clap() -> tuple[Any, Any, Any]:
    """``(ClapModel, ClapFeatureExtractor, RobertaTokenizer)``: a 2-stage Swin audio tower on 16 mel bins
    and a 2-layer RoBERTa text tower; the weights are the same on every call."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    audio = {
        "window_size": 4, "num_mel_bins": 16, "spec_size": 64, "patch_size": 2, "patch_stride": (2, 2),
        "hidden_size": _WIDTH, "patch_embeds_hidden_size": 16, "projection_dim": _PROJECTION,
        "depths": (1, 1), "num_attention_heads": (2, 2), "num_hidden_layers": 2, "enable_fusion": False,
    }  # fmt: skip
    tokenizer = _byte_tokenizer()
    text = {
        "vocab_size": len(tokenizer), "hidden_size": _WIDTH, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 2 * _WIDTH, "max_position_embeddings": _MAX_TOKENS + 2, "projection_dim": _PROJECTION,
    }  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=_PROJECTION)).eval()
    # 2 s at 48 kHz in hops of 480: 201 frames, which the 64-wide spectrogram image takes (at most 256)
    features = ClapFeatureExtractor(
        feature_size=16, sampling_rate=TINY_CLAP_RATE, hop_length=480, max_length_s=TINY_CLAP_WINDOW_S,
        fft_window_size=1024, truncation="rand_trunc", padding="repeatpad",
    )  # fmt: skip
    return model, features, tokenizer


def tiny_clip() -> tuple[Any, Any, Any]:
    """``(CLIPModel, CLIPImageProcessor, CLIPTokenizer)``: 32 x 32 pixel patches of 8, 2-layer towers."""
    from transformers import CLIPConfig, CLIPModel

    from ..stable_diffusion.tiny import clip_tokenizer
    from .images import clip_processor_class

    tokenizer = clip_tokenizer()
    text = {
        "vocab_size": len(tokenizer), "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
    }  # fmt: skip
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": _WIDTH, "intermediate_size": 2 * _WIDTH,
              "num_hidden_layers": 2, "num_attention_heads": 2}  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=_PROJECTION)).eval()
    processor = clip_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, processor, tokenizer


def tiny_feature_net() -> torch.nn.Module:
    """Three random conv layers (8, 16, 16 channels, stride 2, ReLU) standing in for LPIPS' backbone."""

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (3, 8, 16, 16)
            self.layers = torch.nn.ModuleList(
                torch.nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1) for a, b in zip(widths, widths[1:])
            )

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            outs = []
            for layer in self.layers:
                x = torch.relu(layer(x))
                outs.append(x)
            return outs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return Features().eval()


def _byte_tokenizer() -> Any:
    """A RoBERTa tokenizer whose tokens are single bytes (byte-level BPE without merges)."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    symbols = ["<s>", "<pad>", "</s>", "<unk>", *sorted(pre_tokenizers.ByteLevel.alphabet()), "<mask>"]
    return RobertaTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[], model_max_length=_MAX_TOKENS)

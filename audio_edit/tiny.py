"""Tiny AudioLDM / AudioLDM2 checkpoints with fixed random weights, for tests and offline demos.

They have the real models' interfaces (64 mel bins, 8 latent channels, VAE factor 4, 160 samples per mel
frame at 16 kHz, the same scheduler) but only a few thousand parameters per component, so a whole model is
built in about a second without any download. Their outputs are meaningless noise.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from diffusers import (
    AudioLDM2ProjectionModel,
    AudioLDM2UNet2DConditionModel,
    AutoencoderKL,
    DDIMScheduler,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    ClapTextModelWithProjection,
    GPT2Config,
    GPT2Model,
    RobertaTokenizer,
    SpeechT5HifiGan,
    SpeechT5HifiGanConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

SEED = 0
FAMILIES = ("audioldm2", "audioldm")

_CLAP_HIDDEN = 32
_CLAP_PROJECTION = 32
_T5_HIDDEN = 24  # differs from the GPT-2 width so that swapped inputs fail loudly
_GPT2_HIDDEN = 32
_MAX_TOKENS = 64
_LATENT_CHANNELS = 8
_MEL_BINS = 64


def build_tiny(family: str) -> dict[str, Any]:
    """Builds the components of a tiny checkpoint of ``family`` ("audioldm2" or "audioldm").

    Returns the keyword arguments of the matching diffusers pipeline (``AudioLDM2Pipeline`` or
    ``AudioLDMPipeline``), scheduler included. The weights are the same on every call.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}, expected one of {FAMILIES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        shared = {"vae": _vae(), "vocoder": _vocoder(), "scheduler": _scheduler(), "tokenizer": _clap_tokenizer()}
        if family == "audioldm":
            return {**shared, "text_encoder": _clap_text_encoder(), "unet": _audioldm_unet()}
        return {
            **shared,
            "text_encoder": ClapModel(_clap_config()).eval(),
            "text_encoder_2": _t5_encoder(),
            "tokenizer_2": _t5_tokenizer(),
            "projection_model": AudioLDM2ProjectionModel(
                text_encoder_dim=_CLAP_PROJECTION, text_encoder_1_dim=_T5_HIDDEN, langauge_model_dim=_GPT2_HIDDEN
            ),
            "language_model": _gpt2(),
            "feature_extractor": ClapFeatureExtractor(),
            "unet": _audioldm2_unet(),
        }


def _scheduler() -> DDIMScheduler:
    """The DDIM scheduler configuration that the AudioLDM and AudioLDM2 checkpoints ship with."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.0015,
        beta_end=0.0195,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
        prediction_type="epsilon",
    )


def _vae() -> AutoencoderKL:
    """Mel (B, 1, frames, 64) <-> latent (B, 8, frames / 4, 16), like the real VAEs."""
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=_LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.6,
    )


def _vocoder() -> SpeechT5HifiGan:
    """HiFi-GAN with 160 samples per mel frame; its kernels give 32 extra samples, as the real ones do."""
    config = SpeechT5HifiGanConfig(
        model_in_dim=_MEL_BINS,
        sampling_rate=16000,
        upsample_initial_channel=16,
        upsample_rates=(5, 4, 4, 2),
        upsample_kernel_sizes=(16, 16, 8, 4),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        normalize_before=False,
        initializer_range=0.1,  # the default 0.01 makes random weights output ~1e-8: inaudible
    )
    return SpeechT5HifiGan(config).eval()


def _clap_tokenizer() -> RobertaTokenizer:
    """Byte-level BPE without merges: every byte of the text is one token."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    symbols = specials + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["<mask>"]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=_MAX_TOKENS)


def _clap_text_config() -> dict[str, Any]:
    return {
        "vocab_size": 261,
        "hidden_size": _CLAP_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": _MAX_TOKENS + 2,
        "projection_dim": _CLAP_PROJECTION,
    }


def _clap_config() -> ClapConfig:
    audio = {
        "window_size": 4,
        "num_mel_bins": 16,
        "spec_size": 64,
        "patch_size": 2,
        "patch_stride": (2, 2),
        "hidden_size": 32,
        "patch_embeds_hidden_size": 16,
        "projection_dim": _CLAP_PROJECTION,
        "depths": (1, 1),
        "num_attention_heads": (2, 2),
        "num_hidden_layers": 2,
    }
    return ClapConfig(text_config=_clap_text_config(), audio_config=audio, projection_dim=_CLAP_PROJECTION)


SAO_SCHEDULER = {  # Stable Audio Open 1.0's scheduler_config.json (CosineDPMSolverMultistepScheduler)
    "sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0, "sigma_schedule": "exponential", "num_train_timesteps": 1000,
    "solver_order": 2, "prediction_type": "v_prediction", "rho": 7.0, "solver_type": "midpoint", "lower_order_final": True,
    "euler_at_final": False, "final_sigmas_type": "zero",
}  # fmt: skip
_SAO_WIDTH = 16  # the conditioning width (cross-attention input; the global states are twice it)


def build_tiny_sao() -> dict[str, Any]:
    """The components of a tiny Stable Audio Open (``audio_edit.stable_audio.StableAudioModel``):
    44.1 kHz stereo, 4 latent channels, 8 samples a latent frame, a one-layer DiT; fixed random weights."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioProjectionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return {
            "transformer": StableAudioDiTModel(
                sample_size=1024, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
                num_key_value_attention_heads=1, out_channels=4, cross_attention_dim=16, time_proj_dim=16,
                global_states_input_dim=2 * _SAO_WIDTH, cross_attention_input_dim=_SAO_WIDTH,
            ).eval(),
            "vae": AutoencoderOobleck(
                encoder_hidden_size=8, downsampling_ratios=[2, 4], channel_multiples=[1, 2], decoder_channels=4,
                decoder_input_channels=4, audio_channels=2, sampling_rate=44100,
            ).eval(),
            "projection_model": StableAudioProjectionModel(text_encoder_dim=_T5_HIDDEN, conditioning_dim=_SAO_WIDTH, min_value=0, max_value=512),
            "text_encoder": _t5_encoder(),
            "tokenizer": _t5_tokenizer(),
            "scheduler_config": dict(SAO_SCHEDULER),
        }  # fmt: skip


def _clap_text_encoder() -> ClapTextModelWithProjection:
    return ClapTextModelWithProjection(ClapTextConfig(**_clap_text_config())).eval()


def _t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary of single characters, with and without the word-start marker."""
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    characters = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    return specials + [(piece, -3.0) for c in characters for piece in (c, "\u2581" + c)]


def _t5_tokenizer() -> T5Tokenizer:
    return T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=_MAX_TOKENS)


def _t5_encoder() -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(_t5_vocab()),
        d_model=_T5_HIDDEN,
        d_kv=12,
        d_ff=48,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _gpt2() -> GPT2Model:
    config = GPT2Config(
        vocab_size=16,
        n_positions=128,
        n_embd=_GPT2_HIDDEN,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        max_new_tokens=8,
    )
    return GPT2Model(config).eval()


# Both tiny UNets: three levels, attention only in the deepest (as cheap as a UNet with attention gets).
_UNET_LAYOUT: dict[str, Any] = dict(
    sample_size=(256, 16),
    in_channels=_LATENT_CHANNELS,
    out_channels=_LATENT_CHANNELS,
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    block_out_channels=(16, 16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=8,
)


def _audioldm2_unet() -> AudioLDM2UNet2DConditionModel:
    """Self-attention, cross-attention to the GPT-2 states and to the T5 states in the deepest level."""
    attention_dims = (None, _GPT2_HIDDEN, _T5_HIDDEN)
    return AudioLDM2UNet2DConditionModel(**_UNET_LAYOUT, cross_attention_dim=(attention_dims,) * 3)


def _audioldm_unet() -> UNet2DConditionModel:
    """The AudioLDM layout: the CLAP embedding is a FiLM-like class embedding concatenated to the time embedding."""
    return UNet2DConditionModel(
        **_UNET_LAYOUT,
        cross_attention_dim=(16, 16, 32),
        class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=_CLAP_PROJECTION,
        class_embeddings_concat=True,
    )

"""Stable Audio Open behind the denoiser contract of the sampling core: 44.1 kHz stereo latents.

Components (diffusers ``StableAudioPipeline`` layout): a T5 text encoder and its tokenizer, the
``StableAudioProjectionModel`` (text states and the seconds_start / seconds_total numbers into the
conditioning width), the ``StableAudioDiTModel`` (v-prediction on EDM noise levels) and the
``AutoencoderOobleck`` (stereo waveform <-> (C, frames) latent, 2048 samples a frame).

The path is EDM's with σ_data = 1 (``schedule``: α = 1 / sqrt(1 + s²), σ = s α); the core's x_t is
exactly the DiT's input (the scheduler's x_edm times c_in = 1 / sqrt(1 + s²)), the core's timestep
is s itself, and the DiT's time input is atan(s) · 2 / π as the scheduler computes it. The DiT's v
converts to ε = σ x_t + α v (``adapters.eps_from_prediction``).

Conditions, one row per prompt: ``{"text": (B, L, D) the projected T5 states (zero at padding),
"keep": (B,) 1 for a prompt, 0 for ""}``. The cross-attention states are the text states followed
by the seconds_start and seconds_total states; the unconditional branch ("") is all zeros there, as
the scheduler's pipeline and the audio paper's code make it (null-text inversion optimises its
"text" rows, starting from those zeros). The global states carry the two seconds states in every
row. seconds_start is 0 and seconds_total the length of the latents of the call in seconds: the clip
is encoded at its own length (not padded to the 47 s training window), so the conditions depend on
nothing but the latents. Longer clips run window by window (``StableAudioEditor``): each DiT call
is one window of at most the training length, and its seconds_total is that window's length.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

from image_core import adapters

SAO_ID = "stabilityai/stable-audio-open-1.0"
TINY_NAME = "tiny-sao"
COMPONENTS = {  # folder -> (library, class)
    "transformer": ("diffusers", "StableAudioDiTModel"),
    "vae": ("diffusers", "AutoencoderOobleck"),
    "projection_model": ("diffusers", "StableAudioProjectionModel"),
    "text_encoder": ("transformers", "T5EncoderModel"),
    "tokenizer": ("transformers", "T5TokenizerFast"),
}


class WaveformVAE:
    """What a model with a waveform VAE (``AutoencoderOobleck`` and kin, ``self.vae``) tells of its audio."""

    vae: Any
    device: torch.device

    @property
    def sample_rate(self) -> int:
        """The VAE's rate in Hz (44100 for Stable Audio Open, 48000 for ACE-Step)."""
        return int(self.vae.config.sampling_rate)

    @property
    def audio_channels(self) -> int:
        """2 (stereo) for the real models."""
        return int(self.vae.config.audio_channels)

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame (2048 for Stable Audio Open, 1920 for ACE-Step)."""
        return int(math.prod(self.vae.config.downsampling_ratios))

    @torch.no_grad()
    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, channels, n) float waveforms at ``sample_rate`` -> (B, C, ceil(n / hop)) float32 latents:
        the mean of the VAE's posterior (deterministic), zero-padded to whole frames."""
        pad = -wave.shape[-1] % self.hop_length
        wave = torch.nn.functional.pad(wave.float().to(self.device), (0, pad))
        return self.vae.encode(wave).latent_dist.mean.float()

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, frames) -> (B, channels, frames * hop) float32 waveforms (not peak-normalised as the
        pipelines' generations are: an edit keeps the input's level)."""
        return self.vae.decode(latent.float().to(self.device)).sample.float()


class StableAudioModel(WaveformVAE):
    """A Stable Audio Open checkpoint as a ``LatentModel`` over (B, C, frames) latents.

    Args:
        components: transformer, vae, projection_model, text_encoder, tokenizer (see ``COMPONENTS``)
            and ``scheduler_config`` (a ``CosineDPMSolverMultistepScheduler`` config).
        device, dtype: where and in which dtype the DiT runs (the VAE and text encoder stay float32).
    """

    null_text_keys = ("text",)

    def __init__(self, components: dict[str, Any], device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.transformer = adapters.cast(components["transformer"], dtype).to(self.device).eval()
        self.vae = adapters.cast(components["vae"], torch.float32).to(self.device).eval()
        self.projection_model = adapters.cast(components["projection_model"], torch.float32).to(self.device).eval()
        self.text_encoder = components["text_encoder"].to(self.device, torch.float32).eval()
        self.tokenizer = components["tokenizer"]
        self.scheduler_config = {"_class_name": "CosineDPMSolverMultistepScheduler", **components["scheduler_config"]}
        self._rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ facts

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def max_frames(self) -> int:
        """The training window in latent frames (1024 = 47.55 s for the real model)."""
        return int(self.transformer.config.sample_size)

    def fingerprint(self) -> str:
        configs = {"transformer": self.transformer.config, "vae": self.vae.config, "scheduler": self.scheduler_config}
        modules = {"transformer": self.transformer, "projection_model": self.projection_model, "text_encoder": self.text_encoder}
        return adapters.fingerprint("stable-audio", configs, modules, self.dtype)

    # ------------------------------------------------------------------ conditions

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"text": (B, L, D), "keep": (B,)} in the DiT's dtype; "" gives zeros and keep 0."""
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        states = self.text_encoder(ids, attention_mask=mask)[0]
        states = self.projection_model(text_hidden_states=states).text_hidden_states * mask.unsqueeze(-1).to(states.dtype)
        keep = torch.tensor([0.0 if p == "" else 1.0 for p in prompts], device=self.device)
        states = states * keep.view(-1, 1, 1)
        return {"text": states.to(self.dtype), "keep": keep.to(self.dtype)}

    def attention_control(self) -> Any:
        """What Prompt-to-Prompt controls: the DiT's attention and the T5 words (``dit_attention``)."""
        from .dit_attention import StableAudioNetwork

        return StableAudioNetwork(self)

    def _seconds(self, rows: int, frames: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, 1, D) seconds_start (0) and seconds_total (the latents' length) states."""
        total = frames * self.hop_length / self.sample_rate
        out = self.projection_model(
            start_seconds=torch.zeros(rows, device=device), end_seconds=torch.full((rows,), total, device=device)
        )
        return out.seconds_start_hidden_states.to(self.dtype), out.seconds_end_hidden_states.to(self.dtype)

    def _rotary_embedding(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if length not in self._rotary:
            from diffusers.models.embeddings import get_1d_rotary_pos_embed

            cos, sin = get_1d_rotary_pos_embed(
                self.transformer.config.attention_head_dim // 2, length, use_real=True, repeat_interleave_real=False
            )
            self._rotary[length] = (cos.to(self.device), sin.to(self.device))
        return self._rotary[length]

    # ------------------------------------------------------------------ the denoiser

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """ε (B, C, frames) in ``x``'s dtype for latents x (the path's x_t) at EDM levels t (B,)."""
        rows, frames = x.shape[0], x.shape[-1]
        start, total = self._seconds(rows, frames, x.device)
        keep = cond["keep"].to(self.dtype).view(-1, 1, 1)
        states = torch.cat([cond["text"].to(self.dtype), keep * start, keep * total], dim=1)
        global_states = torch.cat([start, total], dim=2)
        level = t.to(torch.float32)
        time_input = level.atan() / math.pi * 2  # the scheduler's precondition_noise
        v = self.transformer(
            x.to(self.dtype), time_input, encoder_hidden_states=states, global_hidden_states=global_states,
            rotary_embedding=self._rotary_embedding(frames + 1), return_dict=False,
        )[0]  # fmt: skip
        s = t.to(x.dtype)
        alpha = 1 / (1 + s**2).sqrt()
        return adapters.eps_from_prediction(v.to(x.dtype), x, alpha, s * alpha, "v_prediction")

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, name: str, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32) -> StableAudioModel:
        """Load a hub id or a local folder in the diffusers layout (safetensors), or ``TINY_NAME``."""
        if name == TINY_NAME:
            from .tiny import build_tiny_sao

            return cls(build_tiny_sao(), device, dtype)
        import diffusers
        import transformers

        def load(folder: str, library: str, class_name: str) -> Any:
            if folder == "tokenizer":
                return adapters.load_component(name, folder, lambda: transformers.AutoTokenizer.from_pretrained(name, subfolder=folder))
            component_class = getattr(diffusers if library == "diffusers" else transformers, class_name)
            return adapters.load_component(name, folder, lambda: component_class.from_pretrained(name, subfolder=folder, use_safetensors=True))

        components = {folder: load(folder, *spec) for folder, spec in COMPONENTS.items()}
        components["scheduler_config"] = _scheduler_config(name)
        return cls(components, device, dtype)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Write every component in the diffusers layout (``from_pretrained`` reads it back)."""
        root = os.fspath(folder)
        for name, (library, class_name) in COMPONENTS.items():
            getattr(self, name).save_pretrained(os.path.join(root, name))
        os.makedirs(os.path.join(root, "scheduler"), exist_ok=True)
        with open(os.path.join(root, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump(self.scheduler_config, f, indent=2)
        index = {"_class_name": "StableAudioPipeline", "scheduler": ["diffusers", "CosineDPMSolverMultistepScheduler"]}
        index.update({name: list(spec) for name, spec in COMPONENTS.items()})
        with open(os.path.join(root, "model_index.json"), "w") as f:
            json.dump(index, f, indent=2)


def _scheduler_config(name: str) -> dict[str, Any]:
    """The scheduler config of a local folder or a cached hub id."""
    path = os.path.join(name, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path):
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(name, "scheduler_config.json", subfolder="scheduler")
    with open(path) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def is_stable_audio(name: str) -> bool:
    """Whether a model name is Stable Audio Open (the hub id, the tiny model, or a folder of its layout)."""
    if name in (SAO_ID, TINY_NAME):
        return True
    index = os.path.join(name, "model_index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return json.load(f).get("_class_name") == "StableAudioPipeline"
    return False

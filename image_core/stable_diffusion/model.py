"""Adapter of a Stable Diffusion 1.x / 2.x checkpoint to the core: prompts, ε, and the VAE."""

from __future__ import annotations

import os
from typing import Any

import torch

from .. import adapters
from ..adapters import load_component

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"  # the model of the image paper
HUB_IDS = (DEFAULT_MODEL,)  # named when a --model is neither a hub id nor a folder (any SD 1.x / 2.x loads)
BUILTIN_NAMES = ("tiny",)


DECODE_ROWS = 4  # latents per VAE-decoder call: bounds its memory


class StableDiffusionModel:
    """The components of one SD checkpoint (epsilon or v-prediction), adapted to ``LatentModel``.

    Latents are (B, 4, H / f, W / f) with f = ``vae_factor`` (8 for the real models).
    """

    null_text_keys = ("text",)  # null-text inversion optimises the CLIP states of "" (77 x D), as its paper

    def __init__(
        self, name: str, tokenizer: Any, text_encoder: Any, unet: Any, vae: Any, scheduler_config: dict[str, Any]
    ) -> None:
        self.name = name
        self.tokenizer, self.text_encoder, self.unet, self.vae = tokenizer, text_encoder, unet, vae
        for module in (text_encoder, unet, vae):
            module.eval().requires_grad_(False)  # gradients may flow to inputs and conditions, never to weights
        self.scheduler_config = adapters.scheduler_config(scheduler_config)
        self.device, self.dtype = unet.device, unet.dtype
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        from diffusers import DDIMScheduler

        self.alphas_cumprod = DDIMScheduler.from_config(self.scheduler_config).alphas_cumprod.double()
        self._alphas: torch.Tensor | None = None  # alphas_cumprod where the latents are (v-prediction)
        self.compiled_unet: Any = None  # set by ``compile``
        self._fingerprint = adapters.fingerprint(
            "stable-diffusion",
            {"unet": unet.config, "vae": vae.config, "scheduler": self.scheduler_config},
            {"unet": unet, "vae": vae, "text_encoder": text_encoder},
            self.dtype,
        )

    @classmethod
    def from_pretrained(
        cls, name: str = DEFAULT_MODEL, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
    ) -> StableDiffusionModel:
        """Load from a hub id, a local folder in the diffusers layout, or "tiny" (random weights, for tests).

        Raises InputError for a device this machine lacks and ModelLoadError (one line) for anything
        that cannot be loaded; a mistyped local path fails at once (see ``adapters.local_folder``).
        """
        device = adapters.resolve_device(device)
        dtype = adapters.resolve_dtype(dtype, device)
        if name == "tiny":
            from .tiny import tiny_stable_diffusion

            parts = tiny_stable_diffusion()
            for key in ("text_encoder", "unet", "vae"):
                parts[key].to(device).eval()
                if dtype != torch.float32:
                    adapters.cast(parts[key], dtype)
            return cls("tiny", **parts)
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        name = os.fspath(name)
        source = adapters.local_folder(name) or adapters.check_hub_id(name, BUILTIN_NAMES, HUB_IDS)
        kind = adapters.model_class_name(source)
        if kind is not None and not kind.startswith("StableDiffusion"):
            raise adapters.ModelLoadError(f"{name!r} is a {kind}, not a Stable Diffusion model")
        common = {"torch_dtype": dtype}
        tokenizer = load_component(name, "tokenizer", lambda: CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"))
        text_encoder = load_component(
            name, "text encoder", lambda: CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **common)
        )
        unet = load_component(name, "UNet", lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", **common))
        vae = load_component(name, "VAE", lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", **common))
        scheduler = load_component(name, "scheduler", lambda: DDIMScheduler.load_config(source, subfolder="scheduler"))
        for module in (text_encoder, unet, vae):
            module.to(device).eval()
        return cls(name, tokenizer, text_encoder, unet, vae, dict(scheduler))

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Write the diffusers layout (loadable here and by ``StableDiffusionPipeline``)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=DDIMScheduler.from_config(self.scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(os.fspath(folder))

    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this (64 for the real models)."""
        return self.vae_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def native_size(self) -> int:
        """Side in pixels of the square images the model was trained on (512 for SD 1.x)."""
        return int(self.unet.config.sample_size) * self.vae_factor

    def fingerprint(self) -> str:
        return self._fingerprint

    def compile(self, backend: str = "inductor") -> None:
        """Denoise with ``torch.compile`` of the UNet (``adapters.compiled``); products for the posterior
        components keep the eager UNet."""
        self.compiled_unet = adapters.compiled(self.unet, backend)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"text": (len(prompts), 77, D)} CLIP hidden states; "" is the unconditional branch."""
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return {"text": self.text_encoder(ids.to(self.device))[0]}

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """ε for (B, 4, h, w) latents at (B,) timesteps; computed in the model's dtype, returned in x_t's.

        Differentiable with respect to ``x_t`` and ``cond`` (the weights are frozen; a float32 condition,
        such as an optimised null-text embedding, is cast to the UNet's dtype): callers that need no
        gradients run it under ``torch.no_grad``."""
        x_t = x_t.to(self.device)
        sample = x_t.to(self.dtype)
        unet = adapters.pick_unet(sample, self.unet, self.compiled_unet)
        out = unet(sample, t.to(self.device), encoder_hidden_states=cond["text"].to(self.dtype)).sample
        if self.prediction_type == "epsilon":
            return out.to(x_t.dtype)
        if self._alphas is None or self._alphas.device != x_t.device:  # on the latents' device, once
            self._alphas = self.alphas_cumprod.to(torch.float32 if x_t.device.type == "mps" else torch.float64).to(x_t.device)
        return adapters.eps_from_output(out.to(x_t.dtype), x_t, self._alphas[t.to(x_t.device)], self.prediction_type)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 4, H / f, W / f) float32 latents (mode of the posterior, scaled)."""
        latent = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mode()
        return latent.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) latents -> (B, 3, h f, w f) float32 images in [-1, 1], ``DECODE_ROWS`` latents
        per VAE call (its activations at 512² take about 1 GB a row in half precision)."""
        scaled = latents.to(self.dtype).to(self.device) / self.vae.config.scaling_factor  # the dtype first (MPS)
        return torch.cat([self.vae.decode(part).sample.float().clamp(-1, 1) for part in scaled.split(DECODE_ROWS)])

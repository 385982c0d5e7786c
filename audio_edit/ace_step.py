"""ACE-Step 1.5 behind the denoiser contract of the sampling core: 48 kHz stereo latents.

Components (diffusers ``AceStepPipeline`` layout): a Qwen3 text encoder and its tokenizer, the
``AceStepConditionEncoder`` (caption states, lyric token embeddings through its lyric encoder and a
timbre embedding from reference latents, packed into one cross-attention sequence), the
``AceStepTransformer1DModel`` (a DiT predicting the rectified-flow velocity) and the
``AutoencoderOobleck`` (stereo 48 kHz waveform <-> (C, frames) latent, 1920 samples a frame: 25 Hz).

Latents: the core sees (B, C, frames), the VAE's layout; the DiT takes (B, frames, C), so
``predict_eps`` transposes. Path: rectified flow, x_t = (1 - t) x0 + t ε with the flow time t in
[0, 1], which is also the DiT's time input (both of its time inputs, t and r, are t, as in the
pipeline). The DiT's velocity u = ε - x0 converts to ε = x_t + (1 - t) u
(``adapters.eps_from_prediction(..., "flow")``).

Conditions, one row per prompt: ``{"text": (B, L, D) the condition encoder's packed sequence,
"mask": (B, L) 1 on its L_b valid tokens, 0 on the zero padding that ``batching.cat`` adds}``. The
DiT's cross-attention has no padding mask, so ``predict_eps`` runs rows of equal length together on
their valid tokens only: every row is the DiT's output for that prompt alone. Under attention
control (``rows_together``) it runs all rows in one call instead, padded to the longest, and the
controlled processors keep each row to its own keys (``image_core.attention.attend``). A prompt is encoded as
the pipeline encodes a text2music request (its caption template with the task instruction and the
metadata, bpm / key / time signature "N/A" and the clip's duration in whole seconds; lyrics empty:
instrumental; the timbre from the learned silence latent, as without reference audio). The
unconditional branch ("") is what the pipeline uses for classifier-free guidance: the condition
encoder's learned ``null_condition_emb`` (the pipeline broadcasts it over the conditional sequence;
attention over copies of one token equals attention over that token, so one token is stored).
Null-text inversion optimises its "text" row.

Lyrics: ``AceStepModel.lyrics`` (default "", instrumental) is passed to the pipeline's prompt
encoding for every non-empty prompt: its lyric tokens go through the text encoder's embedding table
and the condition encoder's lyric encoder (``vocal_language`` sets the language header). A prompt
given as ``Sung(caption, lyrics)`` is sung with its own lyrics instead: a target with new lyrics
edits the words of a song.

The caption's duration is ``AceStepModel.duration`` (seconds): the codec sets it to the length of
each clip it reads, so prompts are encoded for the clip being edited.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from image_core import adapters

from .stable_audio import WaveformVAE

ACE_STEP_ID = "ACE-Step/acestep-v15-xl-turbo-diffusers"
TINY_NAME = "tiny-acestep"
COMPONENTS = {  # folder -> (library, class)
    "transformer": ("diffusers", "AceStepTransformer1DModel"),
    "condition_encoder": ("diffusers", "AceStepConditionEncoder"),
    "vae": ("diffusers", "AutoencoderOobleck"),
    "text_encoder": ("transformers", "AutoModel"),
    "tokenizer": ("transformers", "AutoTokenizer"),
}
# The core's chain: ``FlowMatchEulerDiscreteScheduler.set_timesteps(N)`` with the pipeline's default
# shift 3.0 (its own table is shift(linspace(1, 0, N + 1))[:-1], the same warp of a slightly different
# grid). The shipped scheduler config (num_train_timesteps 1, shift 1: the pipeline passes its sigmas
# explicitly) gives no chain by itself, so the adapter always uses this one.
SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
TIMBRE_SECONDS = 30  # the reference length the pipeline gives the timbre encoder


class Sung(str):
    """A prompt with lyrics of its own: the caption ``str(prompt)`` sung with ``prompt.lyrics``
    (ACE-Step; a plain prompt takes the model's lyrics). Equal only to a ``Sung`` of the same
    caption and lyrics, so prompts of one caption and different lyrics stay apart."""

    lyrics: str

    def __new__(cls, caption: str, lyrics: str) -> Sung:
        prompt = super().__new__(cls, caption)
        prompt.lyrics = lyrics
        return prompt

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and str(self) == str(other) and getattr(other, "lyrics", None) == self.lyrics

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((str(self), self.lyrics))

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return str(self), self.lyrics

    def __repr__(self) -> str:
        return f"Sung({str(self)!r}, {self.lyrics!r})"


def lyrics_of(prompt: str, default: str) -> str:
    """The lyrics ``prompt`` is sung with: its own (``Sung``), else ``default`` (the model's)."""
    return prompt.lyrics if isinstance(prompt, Sung) else default


class AceStepModel(WaveformVAE):
    """An ACE-Step 1.5 checkpoint as a ``LatentModel`` over (B, C, frames) latents.

    Args:
        components: transformer, condition_encoder, vae, text_encoder, tokenizer (``COMPONENTS``).
        device, dtype: where and in which dtype the DiT runs (the encoders and the VAE stay float32).
        lyrics: lyrics of every non-empty prompt ("" instrumental); vocal_language: their language.
    """

    null_text_keys = ("text",)

    def __init__(
        self, components: dict[str, Any], device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32,
        lyrics: str = "", vocal_language: str = "en",
    ) -> None:  # fmt: skip
        self.device, self.dtype = torch.device(device), dtype
        self.transformer = adapters.cast(components["transformer"], dtype).to(self.device).eval()
        self.condition_encoder = adapters.cast(components["condition_encoder"], torch.float32).to(self.device).eval()
        self.vae = adapters.cast(components["vae"], torch.float32).to(self.device).eval()
        self.text_encoder = components["text_encoder"].to(self.device, torch.float32).eval()
        self.tokenizer = components["tokenizer"]
        self.scheduler_config = dict(SCHEDULER_CONFIG)
        self.lyrics, self.vocal_language = lyrics, vocal_language
        self.duration = 30.0  # seconds written in the caption; the codec sets the clip's
        self._context: dict[int, torch.Tensor] = {}
        self._pipe: Any = None
        self._timbre_keys: int | None = None
        self._together = False  # every row in one DiT call (attention control), ``row_keys`` set per call
        self.row_keys: list[int] | None = None
        self._keys_of: tuple[torch.Tensor, list[int]] | None = None  # the last mask and its rows' valid keys

    # ------------------------------------------------------------------ facts

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.audio_acoustic_hidden_dim)

    @property
    def max_frames(self) -> int:
        """The longest clip run in one piece, in latent frames: the length of the learned silence
        latent that fills the DiT's source-latent context (the pipeline tiles it beyond)."""
        return int(self.condition_encoder.silence_latent.shape[1])

    @property
    def is_turbo(self) -> bool:
        """Guidance-distilled checkpoints (the pipeline runs them without guidance)."""
        config = self.transformer.config
        return bool(getattr(config, "is_turbo", False) or getattr(config, "model_version", None) == "turbo")

    def fingerprint(self) -> str:
        configs = {"transformer": self.transformer.config, "condition_encoder": self.condition_encoder.config,
                   "vae": self.vae.config, "scheduler": self.scheduler_config}  # fmt: skip
        modules = {"transformer": self.transformer, "condition_encoder": self.condition_encoder, "text_encoder": self.text_encoder}
        return adapters.fingerprint("ace-step", configs, modules, self.dtype)

    # ------------------------------------------------------------------ conditions

    def pipeline(self) -> Any:
        """A diffusers ``AceStepPipeline`` over these components (its prompt encoding is used as is)."""
        if self._pipe is None:
            from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler

            self._pipe = AceStepPipeline(
                vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, transformer=self.transformer,
                condition_encoder=self.condition_encoder, scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1),
            )  # fmt: skip
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def timbre_reference(self) -> torch.Tensor:
        """(1, frames, C) the silence latent the pipeline gives the timbre encoder without reference audio."""
        frames = math.ceil(TIMBRE_SECONDS * self.sample_rate / self.hop_length)
        return self.condition_encoder.silence_latent[:, :frames].to(self.device, torch.float32)

    @torch.no_grad()
    def timbre_keys(self) -> int:
        """Keys of the timbre encoder's output in the packed condition (without reference audio)."""
        if self._timbre_keys is None:
            zero = torch.zeros(1, dtype=torch.long, device=self.device)
            self._timbre_keys = int(self.condition_encoder.timbre_encoder(self.timbre_reference(), zero)[1].sum())
        return self._timbre_keys

    def attention_control(self) -> Any:
        """What Prompt-to-Prompt controls: the DiT's attention and the condition's words (``dit_attention``)."""
        from .dit_attention import AceStepNetwork

        return AceStepNetwork(self)

    @contextmanager
    def rows_together(self) -> Iterator[Callable[[], list[int] | None]]:
        """Inside the block every model call runs its rows in one DiT call, their conditions padded
        to the longest; yields what tells the attention processors each row's valid keys."""
        before = self._together, self.row_keys
        self._together = True
        try:
            yield lambda: self.row_keys
        finally:
            self._together, self.row_keys = before

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"text": (B, L, D), "mask": (B, L)} in the DiT's dtype, one prompt at a time (no padding
        inside a row); "" gives the learned null condition (one token)."""
        rows = []
        for prompt in prompts:
            if prompt == "":
                rows.append(self.condition_encoder.null_condition_emb.detach().float().reshape(1, 1, -1))
                continue
            text, text_mask, lyric, lyric_mask = self.pipeline().encode_prompt(
                prompt=[prompt], lyrics=[lyrics_of(prompt, self.lyrics)], device=self.device, vocal_language=self.vocal_language,
                audio_duration=self.duration,
            )  # fmt: skip
            states, mask = self.condition_encoder(
                text_hidden_states=text, text_attention_mask=text_mask, lyric_hidden_states=lyric,
                lyric_attention_mask=lyric_mask, refer_audio_acoustic_hidden_states_packed=self.timbre_reference(),
                refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=self.device),
            )  # fmt: skip
            rows.append(states[:, : int(mask.sum())].float())
        length = max(row.shape[1] for row in rows)
        text = torch.cat([torch.nn.functional.pad(row, (0, 0, 0, length - row.shape[1])) for row in rows])
        mask = torch.stack([(torch.arange(length, device=self.device) < row.shape[1]).float() for row in rows])
        return {"text": text.to(self.dtype), "mask": mask.to(self.dtype)}

    def context_latents(self, frames: int) -> torch.Tensor:
        """(1, frames, 2C) the DiT's context for text2music: the silence latent (tiled beyond its
        length) followed by a chunk mask of ones (every frame is generated)."""
        if frames not in self._context:
            silence = self.condition_encoder.silence_latent.to(self.device, torch.float32)
            silence = silence.repeat(1, -(-frames // silence.shape[1]), 1)[:, :frames]
            self._context[frames] = torch.cat([silence, torch.ones_like(silence)], dim=-1).to(self.dtype)
        return self._context[frames]

    # ------------------------------------------------------------------ the denoiser

    def _valid_keys(self, mask: torch.Tensor) -> list[int]:
        """Each row's valid condition keys, read from the device once per mask: a run hands the same
        condition to every step, so the loop does not wait on the device for them at each call."""
        if self._keys_of is None or self._keys_of[0] is not mask:
            self._keys_of = (mask, mask.float().sum(1).round().long().tolist())
        return self._keys_of[1]

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """ε (B, C, frames) in ``x``'s dtype for latents x (the path's x_t) at flow times t (B,)."""
        rows, frames = x.shape[0], x.shape[-1]
        hidden = x.transpose(1, 2).to(self.dtype)
        time = t.to(self.dtype)
        context = self.context_latents(frames).expand(rows, -1, -1)
        keys = self._valid_keys(cond["mask"])
        velocity = torch.empty_like(hidden)
        if self._together:  # one call; the controlled processors keep each row to its own keys
            self.row_keys = keys
            groups = [(torch.arange(rows, device=x.device), max(keys))]
        else:
            groups = [(torch.tensor([i for i, n in enumerate(keys) if n == length], device=x.device), length) for length in sorted(set(keys))]
        for index, length in groups:
            velocity[index] = self.transformer(
                hidden[index], time[index], time[index], encoder_hidden_states=cond["text"][index, :length].to(self.dtype),
                context_latents=context[index], return_dict=False,
            )[0]  # fmt: skip
        s = t.to(x.dtype)
        return adapters.eps_from_prediction(velocity.transpose(1, 2).to(x.dtype), x, 1 - s, s, "flow")

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, name: str, device: torch.device = torch.device("cpu"), dtype: torch.dtype = torch.float32, **kwargs: Any) -> AceStepModel:
        """Load a hub id or a local folder in the diffusers layout (safetensors), or ``TINY_NAME``."""
        if name == TINY_NAME:
            from .tiny_ace_step import build_tiny_ace_step

            return cls(build_tiny_ace_step(), device, dtype, **kwargs)
        import diffusers
        import transformers

        def load(folder: str, library: str, class_name: str) -> Any:
            if folder == "tokenizer":
                return adapters.load_component(name, folder, lambda: transformers.AutoTokenizer.from_pretrained(name, subfolder=folder))
            component_class = getattr(diffusers if library == "diffusers" else transformers, class_name)
            return adapters.load_component(name, folder, lambda: component_class.from_pretrained(name, subfolder=folder, use_safetensors=True))

        return cls({folder: load(folder, *spec) for folder, spec in COMPONENTS.items()}, device, dtype, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Write every component in the diffusers layout (``from_pretrained`` reads it back)."""
        root = os.fspath(folder)
        for name in COMPONENTS:
            getattr(self, name).save_pretrained(os.path.join(root, name))
        os.makedirs(os.path.join(root, "scheduler"), exist_ok=True)
        with open(os.path.join(root, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump(self.scheduler_config, f, indent=2)
        index = {"_class_name": "AceStepPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
        index.update({name: list(spec) for name, spec in COMPONENTS.items()})
        with open(os.path.join(root, "model_index.json"), "w") as f:
            json.dump(index, f, indent=2)


def hub_name(name: str) -> str | None:
    """The repository name of an ACE-Step 1.5 hub id ("owner/acestep-v15-...": the diffusers
    checkpoints, e.g. ACE-Step/acestep-v15-xl-turbo-diffusers, ACE-Step/acestep-v15-xl-base-diffusers),
    lower-cased; None for anything else (a local folder included)."""
    _, slash, repo = name.partition("/")
    if not slash or "/" in repo or os.path.exists(name):
        return None
    return repo.lower() if repo.lower().startswith("acestep-v15") else None


def is_ace_step(name: str) -> bool:
    """Whether a model name is ACE-Step 1.5: an ACE-Step 1.5 hub id (``hub_name``), the tiny model,
    or a folder of the ``AceStepPipeline`` layout."""
    if name in (ACE_STEP_ID, TINY_NAME) or hub_name(name) is not None:
        return True
    index = os.path.join(name, "model_index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return json.load(f).get("_class_name") == "AceStepPipeline"
    return False

"""Attention control through a network's attention processors (diffusers' ``AttnProcessor`` API).

Every attention layer of the network (a UNet, or the DiT of ACE-Step or Stable Audio Open) gets a
``ControlledProcessor`` (``GroupedControlledProcessor`` for ACE-Step's grouped-query attention,
``RotaryControlledProcessor`` for Stable Audio Open's) for the duration of an edit
(``controlled``): where the controller asks for a layer's probabilities P, the processor computes
them explicitly (scores and softmax in float32 whatever the model's dtype, float64 for a float64 model), hands them to the
controller, and attends with what it returns, P', as

    out = A(q, k, v) + (P' - P) v

A the fused attention the layer runs anyway: mathematically P' v, and bit for bit the layer's own
output wherever the controller changes nothing (the source row, the unconditional rows, a target
equal to its source), so the edit's source row regenerates its inversion exactly, in half
precision too. Everywhere else the processor calls the layer's own processor, so layers nobody
edits cost what they always cost.

A ``Layer`` says what a layer attends to:

==========  =========================================================================
``self``    self-attention over the latent grid
``words``   cross-attention to word-aligned text tokens (CLIP in Stable Diffusion,
            Flan-T5 in AudioLDM 2, ACE-Step's packed condition, T5 in Stable Audio Open)
``states``  cross-attention to states that are not word-aligned (the 8 states GPT-2
            generates in AudioLDM 2)
==========  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Layer:
    """One attention layer of a network.

    Attributes:
        name: its module path (``down_blocks.1.attentions.0.transformer_blocks.0.attn2``).
        place: "down", "mid" or "up" in a UNet; "dit" in a DiT (one resolution throughout).
        stream: "self", "words" or "states" (see the module docstring).
    """

    name: str
    place: str
    stream: str


class Controller(Protocol):
    """What a processor asks of a controller."""

    def wants(self, layer: Layer, queries: int) -> bool:
        """Whether this call of ``layer`` (``queries`` latent positions) needs its probabilities."""
        ...

    def __call__(self, layer: Layer, probs: torch.Tensor) -> torch.Tensor:
        """The probabilities to attend with: ``probs`` (n, heads, queries, keys) float32 in, same out;
        ``probs`` itself where nothing changes (never modified in place)."""
        ...


def layers(unet: torch.nn.Module) -> dict[str, Layer]:
    """Every attention layer of a diffusers UNet or ACE-Step DiT, by processor name
    (``unet.attn_processors``' keys).

    A DiT's layers (ACE-Step's ``layers.i.self_attn`` / ``cross_attn``, Stable Audio Open's
    ``transformer_blocks.i.attn1`` / ``attn2``) are all in place "dit"; their cross-attention reads words.

    AudioLDM 2's blocks hold, per layer, one transformer per entry of their ``cross_attention_dim``:
    entry 0 (None) self-attention only, entries 0-1 with a dimension the GPT-2 states
    (``encoder_hidden_states``), later entries the Flan-T5 states (``encoder_hidden_states_1``), as
    the blocks' forward routes them.
    """
    found = {}
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        module = unet.get_submodule(name)
        if not hasattr(unet, "up_blocks"):  # a DiT: ACE-Step's (``layers.i.cross_attn``), Stable Audio's (``attn2``)
            found[key] = Layer(name, "dit", "words" if module.is_cross_attention else "self")
            continue
        place = "mid" if name.startswith("mid_block") else name.split("_", 1)[0]
        stream = "self"
        if name.endswith("attn2") and getattr(module, "is_cross_attention", False):
            stream = _cross_stream(unet, name)
        found[key] = Layer(name, place, stream)
    return found


def _cross_stream(unet: torch.nn.Module, name: str) -> str:
    """"words" or "states" for the cross-attention module ``name``."""
    parts = name.split(".")
    block_name = ".".join(parts[:2]) if parts[0] != "mid_block" else parts[0]
    block = unet.get_submodule(block_name)
    dims = getattr(block, "cross_attention_dim", None)
    if type(unet).__name__ != "AudioLDM2UNet2DConditionModel" or not isinstance(dims, (list, tuple)):
        return "words"
    index = int(parts[parts.index("attentions") + 1]) % len(dims)
    return "states" if index <= 1 else "words"


def attend(
    controller: Controller,
    layer: Layer,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    gqa: bool = False,
    lengths: list[int] | None = None,
    wants: bool = True,
) -> torch.Tensor:
    """A layer's attention with the controller's probabilities: (n, heads, Q, D).

    ``query`` (n, heads, Q, D), ``key`` / ``value`` (n, kv_heads, K, D) as the layer's own processor
    hands them to ``F.scaled_dot_product_attention`` with ``mask``, ``scale`` and ``gqa``
    (``enable_gqa``), which this calls the same way: A(q, k, v). ``lengths``: each row's valid keys
    (None: all); rows are then grouped by length, each group attending to its own keys only.
    With ``wants``, the probabilities P (float32; float64 for a float64 model) go to the controller and the result is
    A + (P' - P) v: A bit for bit wherever P' = P.
    """

    def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=scale, enable_gqa=gqa)

    keys = key.shape[2]
    padded = lengths is not None and min(lengths) < keys
    if padded:
        if mask is not None:
            raise RuntimeError("rows of different condition lengths take no attention mask")
        out = torch.empty_like(query)
        for length in sorted(set(lengths)):  # type: ignore[arg-type]
            rows = torch.tensor([i for i, n in enumerate(lengths) if n == length], device=query.device)  # type: ignore[arg-type]
            out[rows] = fused(query[rows], key[rows, :, :length], value[rows, :, :length])
    else:
        out = fused(query, key, value)
    if not wants:
        return out
    exact = torch.promote_types(query.dtype, torch.float32)  # float32, or the model's float64
    repeat = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(repeat, 1).to(exact), value.repeat_interleave(repeat, 1).to(exact)
    scores = (query.to(exact) @ key.transpose(-1, -2)) * (query.shape[-1] ** -0.5 if scale is None else scale)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(exact)
    if padded:
        valid = torch.arange(keys, device=scores.device) < torch.tensor(lengths, device=scores.device)[:, None]
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = scores.softmax(dim=-1)
    edited = controller(layer, probs)
    if edited is not probs:
        out = out + ((edited - probs) @ value).to(out.dtype)
    return out


class ControlledProcessor:
    """An attention processor that lets a controller see and change the probabilities (for
    diffusers' ``Attention`` with ``AttnProcessor2_0``, the UNets').

    Args:
        layer: the layer it serves.
        controller: asked per call whether it wants the probabilities, then given them.
        fallback: the layer's own processor, for the calls the controller does not want.
    """

    def __init__(self, layer: Layer, controller: Controller, fallback: Any) -> None:
        self.layer, self.controller, self.fallback = layer, controller, fallback

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        queries = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        if not self.controller.wants(self.layer, queries):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return self._attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    def _attend(
        self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None, temb: torch.Tensor | None
    ) -> torch.Tensor:
        """diffusers' attention, as ``AttnProcessor2_0`` computes it, through ``attend``."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        n = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if context is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        heads = attn.heads
        query, key, value = (x.view(n, -1, heads, x.shape[-1] // heads).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        bias = None
        if mask is not None:  # an additive bias (padding of the text tokens), as diffusers prepares it
            bias = attn.prepare_attention_mask(mask, key.shape[2], n)
            bias = bias.view(n, heads, -1, bias.shape[-1])
        out = attend(self.controller, self.layer, query, key, value, bias)
        out = out.transpose(1, 2).flatten(2).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class GroupedControlledProcessor(ControlledProcessor):
    """``ControlledProcessor`` for ACE-Step's grouped-query attention (``AceStepAttention`` with
    ``AceStepAttnProcessor2_0``: RMS-normed q / k, RoPE on self-attention, a sliding-window mask on
    some self-attention layers).

    Rows of one call may hold conditions of different lengths (a Prompt-to-Prompt edit runs its
    source and target rows together): ``lengths()`` gives each row's valid keys (None: all are valid)
    and every row attends to its own keys only, as it would alone (``attend``).

    Args:
        layer, controller, fallback: as ``ControlledProcessor``'s.
        lengths: the current call's valid keys per row (host ints), or None.
    """

    def __init__(self, layer: Layer, controller: Controller, fallback: Any, lengths: Callable[[], list[int] | None]) -> None:
        super().__init__(layer, controller, fallback)
        self.lengths = lengths

    def __call__(  # type: ignore[override]
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        cross = attn.is_cross_attention and encoder_hidden_states is not None
        lengths = self.lengths() if cross else None
        source = encoder_hidden_states if cross else hidden_states
        padded = lengths is not None and min(lengths) < source.shape[1]  # type: ignore[union-attr]
        wants = self.controller.wants(self.layer, hidden_states.shape[1])
        if not (wants or padded):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        query = attn.norm_q(attn.to_q(hidden_states).unflatten(-1, (attn.heads, attn.head_dim)))
        key = attn.norm_k(attn.to_k(source).unflatten(-1, (attn.kv_heads, attn.head_dim)))
        value = attn.to_v(source).unflatten(-1, (attn.kv_heads, attn.head_dim))
        if not cross and image_rotary_emb is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            rope = dict(use_real=True, use_real_unbind_dim=-2, sequence_dim=1)
            query, key = apply_rotary_emb(query, image_rotary_emb, **rope), apply_rotary_emb(key, image_rotary_emb, **rope)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (n, heads, L, D)
        window = getattr(attn, "sliding_window", None)
        if not cross and attention_mask is None and window is not None and query.shape[2] > window:
            # a flash backend makes the DiT pass no band mask (the backend keeps the window): |i - j| <= window
            position = torch.arange(query.shape[2], device=query.device)
            attention_mask = ((position[:, None] - position[None]).abs() <= window)[None, None]
        out = attend(
            self.controller, self.layer, query, key, value, attention_mask, attn.scaling, attn.heads != attn.kv_heads, lengths, wants
        )  # fmt: skip
        out = out.transpose(1, 2).flatten(2).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class RotaryControlledProcessor(ControlledProcessor):
    """``ControlledProcessor`` for Stable Audio Open's DiT (diffusers' ``Attention`` with
    ``StableAudioAttnProcessor2_0``: key / value heads repeated to the query heads, RoPE on part of
    each head, in float32, when the block passes it)."""

    def __call__(  # type: ignore[override]
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if not self.controller.wants(self.layer, hidden_states.shape[1]) or attention_mask is not None or hidden_states.ndim != 3:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        from diffusers.models.embeddings import apply_rotary_emb

        n = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = query.shape[-1] // attn.heads
        kv_heads = key.shape[-1] // head_dim
        query = query.view(n, -1, attn.heads, head_dim).transpose(1, 2)
        key, value = (x.view(n, -1, kv_heads, head_dim).transpose(1, 2) for x in (key, value))
        if kv_heads != attn.heads:
            repeat = attn.heads // kv_heads
            key = torch.repeat_interleave(key, repeat, dim=1, output_size=key.shape[1] * repeat)
            value = torch.repeat_interleave(value, repeat, dim=1, output_size=value.shape[1] * repeat)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if rotary_emb is not None:
            dtypes = query.dtype, key.dtype
            query, key = query.float(), key.float()
            rot = rotary_emb[0].shape[-1]

            def rotated(x: torch.Tensor) -> torch.Tensor:
                return torch.cat((apply_rotary_emb(x[..., :rot], rotary_emb, use_real=True, use_real_unbind_dim=-2), x[..., rot:]), dim=-1)

            query = rotated(query)
            if not attn.is_cross_attention:
                key = rotated(key)
            query, key = query.to(dtypes[0]), key.to(dtypes[1])
        out = attend(self.controller, self.layer, query, key, value)
        out = out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def controlled(
    unet: torch.nn.Module, controller: Controller, lengths: Callable[[], list[int] | None] = lambda: None
) -> Iterator[dict[str, Layer]]:
    """Every attention layer of ``unet`` (a UNet or a DiT) under ``controller`` inside the block; the
    network's own processors are put back on leaving it (also on errors). Yields the layers.
    ``lengths``: each row's valid condition keys in the current call, for a DiT's cross-attention."""
    own = dict(unet.attn_processors)
    found = layers(unet)

    def processor(key: str) -> Any:
        kind = type(own[key]).__name__
        if kind == "AceStepAttnProcessor2_0":
            return GroupedControlledProcessor(found[key], controller, own[key], lengths)
        if kind == "StableAudioAttnProcessor2_0":
            return RotaryControlledProcessor(found[key], controller, own[key])
        return ControlledProcessor(found[key], controller, own[key])

    unet.set_attn_processor({key: processor(key) for key in own})
    try:
        yield found
    finally:
        unet.set_attn_processor(own)

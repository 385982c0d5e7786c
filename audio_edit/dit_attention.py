"""Prompt-to-Prompt on the audio DiTs: their words and attention layers (``p2p.Network``).

**ACE-Step 1.5.** Keys. The DiT cross-attends to one sequence per prompt
(``AceStepConditionEncoder``, valid tokens first): the lyric encoder's states (the formatted
lyrics' tokens), the timbre encoder's, then the text encoder's states of the caption template ("# Instruction ... # Caption\\n{prompt}\\n\\n# Metas
..."). A word of the prompt is every template token whose characters overlap it (the tokenizer's
offsets), shifted by the lyric and timbre keys before the text. Lyric keys get ids from their
tokens (-2 - id: refinement aligns the lyrics of a source and a ``Sung`` target like words, and a
lyrics edit keeps the unchanged lines' attention), timbre keys -1 (no reference audio: the same in
every prompt); the template's tokens align as any other token. The null condition (prompt "") is
one key.

Layers. Every DiT block has a cross-attention ("words", place "dit") and a self-attention
("self"): self-attention is injected as P2P injects it, over at most ``SELF_QUERIES`` positions
(the DiT has 12.5 a second after its 2-frame patches: clips up to 20.48 s); longer clips get
cross-attention control only. The DiT runs every row of an edit in one call while attention is
controlled; each row attends to its own condition's keys (``GroupedControlledProcessor``).

Maps. (1, Q) over the DiT's Q = ceil(frames / patch) positions: the word maps are over time.

**Stable Audio Open.** Its DiT cross-attends to the T5 tokens of the prompt (padded to 128 with zero
states, as its pipeline runs it), then the seconds_start and seconds_total states: the words are the
T5 tokens (``p2p.Tokens``) and the two seconds keys follow them, the same in every row. Its
self-attention runs over a global token followed by the latent's frames (21.5 a second):
self-attention is injected for at most 16² positions (clips up to 11.8 s) and the word maps skip the
global token, so they are (1, frames).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from image_core import attention
from image_core.methods.p2p import AttentionControl
from image_core.p2p import Tokens, spans_positions

from .ace_step import lyrics_of

if TYPE_CHECKING:
    from .ace_step import AceStepModel
    from .stable_audio import StableAudioModel

CAPTION = "# Caption\n"  # the header before the prompt in the pipeline's caption template
TEXT_TOKENS, LYRIC_TOKENS = 256, 2048  # the pipeline's truncation of the template and of the lyrics
NULL_ID = -(10**9)  # the one key of the null condition


@dataclass(frozen=True)
class AceStepWords:
    """``p2p.WordStream`` of an ACE-Step model's packed condition (its lyrics and caption duration
    as set when the prompts are encoded)."""

    model: AceStepModel
    key: str = "text"

    def _layout(self, prompt: str) -> tuple[list[int], int, list[int], list[tuple[int, int]], int]:
        """(the lyric token ids, the timbre keys, the template's token ids, their character offsets,
        where the prompt starts in the template)."""
        m = self.model
        text, lyrics = m.pipeline()._format_prompt(prompt, lyrics_of(prompt, m.lyrics), m.vocal_language, m.duration)
        encoded = m.tokenizer(text, truncation=True, max_length=TEXT_TOKENS, return_offsets_mapping=True)
        lyric_ids = list(m.tokenizer(lyrics, truncation=True, max_length=LYRIC_TOKENS).input_ids)
        start = text.index(CAPTION) + len(CAPTION)
        return lyric_ids, m.timbre_keys(), list(encoded.input_ids), list(encoded.offset_mapping), start

    def ids(self, prompt: str) -> list[int]:
        """Lyric keys as -2 - their token id (the lyrics' own tokens, so refinement aligns changed
        lyrics too), timbre keys -1, then the template's token ids."""
        if prompt == "":
            return [NULL_ID]
        lyric_ids, timbre, ids, *_ = self._layout(prompt)
        return [-2 - t for t in lyric_ids] + [-1] * timbre + ids

    def positions(self, prompt: str, word: str) -> list[int]:
        if prompt == "":
            return []
        lyric_ids, timbre, _, offsets, start = self._layout(prompt)
        return [len(lyric_ids) + timbre + k for k in spans_positions(offsets, prompt, start, word)]

    def strings(self, prompt: str) -> list[str]:
        """The caption's tokens as text; "" for the lyric, timbre and template keys (not drawn)."""
        if prompt == "":
            return [""]
        lyric_ids, timbre, ids, offsets, start = self._layout(prompt)
        end = start + len(prompt)
        shown = [
            self.model.tokenizer.decode([t]).strip() or "␣" if a < end and b > start else ""
            for t, (a, b) in zip(ids, offsets)
        ]  # fmt: skip
        return [""] * (len(lyric_ids) + timbre) + shown


@dataclass(frozen=True)
class AceStepNetwork:
    """``p2p.Network`` of an ACE-Step model: its DiT's attention layers and its words."""

    model: AceStepModel
    map_skip: int = 0

    @property
    def words(self) -> AceStepWords:
        return AceStepWords(self.model)

    def keys(self, cond: Mapping[str, torch.Tensor]) -> int:
        return int(cond["text"].shape[1])

    @contextmanager
    def controlled(self, control: AttentionControl) -> Iterator[None]:
        """``control`` on the DiT's layers, every row of a model call in one DiT call."""
        with self.model.rows_together() as lengths, attention.controlled(self.model.transformer, control, lengths):
            yield

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        patch = int(self.model.transformer.config.patch_size)
        return 1, -(-int(size[-1]) // patch)



SECONDS_KEYS = 2  # seconds_start and seconds_total, after Stable Audio Open's text keys


@dataclass(frozen=True)
class StableAudioNetwork:
    """``p2p.Network`` of a Stable Audio Open model: its DiT's attention layers and its T5 words."""

    model: StableAudioModel
    map_skip: int = 1  # the DiT's global token before the frames

    @property
    def words(self) -> Tokens:
        return Tokens(self.model.tokenizer, "text")

    def keys(self, cond: Mapping[str, torch.Tensor]) -> int:
        return int(cond["text"].shape[1]) + SECONDS_KEYS

    @contextmanager
    def controlled(self, control: AttentionControl) -> Iterator[None]:
        with attention.controlled(self.model.transformer, control):
            yield

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        return 1, int(size[-1])

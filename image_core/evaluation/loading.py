"""Loading a model's parts: "tiny" builds random ones offline, anything else is a hub id or a local
folder read with ``from_pretrained`` (one-line ModelLoadError when a part does not load)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .. import adapters

TINY = "tiny"


def load_parts(
    name: str, hub_ids: Sequence[str], tiny: Callable[[], tuple[Any, ...]], parts: Sequence[tuple[str, Callable[[str], Any]]]
) -> tuple[Any, ...]:
    """``tiny()`` when ``name`` is "tiny"; else each of ``parts`` (what it is, its ``from_pretrained``)
    loaded from the folder or hub id ``name``, in order. Never falls back to random weights.

    Raises:
        ModelLoadError: ``name`` is neither a folder nor a hub id, or a part did not load (one line).
    """
    if name == TINY:
        return tiny()
    source = adapters.local_folder(name) or adapters.check_hub_id(name, (TINY,), hub_ids)
    return tuple(adapters.load_component(name, what, lambda load=load: load(source)) for what, load in parts)

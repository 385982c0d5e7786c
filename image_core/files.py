"""Writing output files so that an error or an interrupt never leaves a half-written or partial set."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

DEFAULT_NAME_MAX = 255
"""Bytes a file name may have where the folder's own limit cannot be read (POSIX file systems' usual
``NAME_MAX``)."""

_TOKEN_BYTES = 8  # random bytes in a temporary name (16 hex digits)
_MAX_KEPT_SUFFIX = 16  # longest extension a temporary keeps, in characters
_PENDING: dict[Path, Path] = {}  # temporary -> the file it will replace, while a ``replacing`` block runs


def name_limit(folder: str | os.PathLike[str]) -> int:
    """The longest file name, in bytes, ``folder`` allows (``PC_NAME_MAX``; 255 when unknown)."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no such folder, no such query, no pathconf (Windows)
        return DEFAULT_NAME_MAX
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_NAME_MAX


def check_name_length(path: str | os.PathLike[str]) -> None:
    """InputError unless the name of ``path`` fits its folder's limit (bytes, as the file system counts)."""
    file = Path(path)
    size, limit = len(os.fsencode(file.name)), name_limit(file.parent)
    if size > limit:
        shown = file.name if len(file.name) <= 40 else file.name[:20] + "..." + file.name[-17:]
        raise InputError(f"the file name {shown} is {size} bytes long, more than the {limit} its folder allows: choose a shorter name")


def temporary_for(target: Path) -> Path:
    """A hidden sibling of ``target`` of fixed length (18 characters plus the extension, which is kept
    up to 16 characters, as formats are often chosen by it): never longer than a name the folder takes."""
    suffix = target.suffix if len(target.suffix) <= _MAX_KEPT_SUFFIX else ""
    return target.with_name(f".~{secrets.token_hex(_TOKEN_BYTES)}{suffix}")


@contextmanager
def replacing(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths`` to write to (hidden names of fixed length, same extensions).

    When the block ends without an error they replace ``paths``, all together; on any error or
    interrupt they are removed and no path is touched. New files get the permissions of the umask.
    A path that is itself a temporary of an enclosing ``replacing`` block is written directly (that
    block already makes it all-or-nothing), so blocks never nest temporaries.

    Raises:
        InputError: before anything is written, if a name is longer than its folder allows.

    Usage::

        with replacing(a, b) as (tmp_a, tmp_b):
            write(tmp_a); write(tmp_b)
    """
    targets = [Path(path) for path in paths]
    for target in targets:
        check_name_length(target)
    pending = [target not in _PENDING for target in targets]
    temporaries = [temporary_for(t) if new else t for t, new in zip(targets, pending)]
    own = [(temporary, target) for temporary, target, new in zip(temporaries, targets, pending) if new]
    _PENDING.update(own)
    try:
        yield temporaries
        for temporary, target in own:
            os.replace(temporary, target)
    finally:
        for temporary, _ in own:
            _PENDING.pop(temporary, None)
            temporary.unlink(missing_ok=True)


def final_path(path: str | os.PathLike[str]) -> Path:
    """The file a temporary of a running ``replacing`` block stands for (``path`` itself for any other
    name): for messages about a write, which should name the file the user asked for."""
    path = Path(path)
    return _PENDING.get(path, path)


def json_object(line: str, where: str) -> dict[str, Any]:
    """One line of a JSON-lines file as an object; InputError naming ``where`` (e.g. "row 3") otherwise."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: a line is a JSON object, got {type(value).__name__}")
    return value

"""Writing output files so that an error or an interrupt never leaves a half-written or partial set."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


_HEX = 6  # random bytes in a temporary name
_TEMPORARY = re.compile(rf"^\.(?P<stem>.*)\.[0-9a-f]{{{2 * _HEX}}}(?P<suffix>\.[^.]*)?$")


@contextmanager
def replacing(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Temporary siblings of ``paths`` to write to (hidden names, same extensions).

    When the block ends without an error they replace ``paths``, all together; on any error or
    interrupt they are removed and no path is touched. New files get the permissions of the umask.

    Usage::

        with replacing(a, b) as (tmp_a, tmp_b):
            write(tmp_a); write(tmp_b)
    """
    targets = [Path(path) for path in paths]
    temporaries = [p.with_name(f".{p.stem}.{secrets.token_hex(_HEX)}{p.suffix}") for p in targets]
    try:
        yield temporaries
        for temporary, target in zip(temporaries, targets):
            os.replace(temporary, target)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def final_path(path: str | os.PathLike[str]) -> Path:
    """The file a temporary of ``replacing`` stands for (``path`` itself for any other name): for
    messages about a write, which should name the file the user asked for."""
    path = Path(path)
    match = _TEMPORARY.match(path.name)
    return path.with_name(match["stem"] + (match["suffix"] or "")) if match else path

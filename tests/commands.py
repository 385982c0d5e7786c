"""Running a command's ``main(argv)`` in the test process."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest


def run(main: Callable[[Sequence[str]], None], argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command's ``main(argv)`` run in this process."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err

"""Progress bars (tqdm) that print their final state once.

tqdm redraws a finished bar when it closes (with the overall rate), so a log of a run (stderr not
a terminal) shows the 100 % line twice. ``Progress`` skips that redraw when the final state is
already on screen.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


class Progress(tqdm):  # type: ignore[misc]
    """``tqdm`` whose close does not draw again a final state it has already drawn."""

    _shown = -1
    _closing = False

    def display(self, msg: str | None = None, pos: int | None = None, **kwargs: Any) -> Any:
        if msg is None:
            if self._closing and self.n == self._shown:
                return True
            self._shown = self.n
        return super().display(msg, pos, **kwargs)

    def close(self) -> None:
        self._closing = True
        super().close()

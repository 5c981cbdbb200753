"""Progress on stderr for the long waits of ``asr`` (``--wait``, ``job wait``, ``point export``).

On a terminal: a tqdm bar — bytes done of the total, rate and time left when the work is
measured in bytes (a materialised disk, an exported image), percent of tasks otherwise.
Not on a terminal (a log file, CI) the bar is off: ``--wait`` prints one line per change of
the job instead, and ``--output json`` prints no progress at all, so stdout and stderr stay
machine-readable. ``ASR_PROGRESS=1`` forces the bar on (``0`` off), whatever stderr is.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm


def bar_wanted(json_output: bool) -> bool:
    forced = os.environ.get("ASR_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    return not json_output and sys.stderr.isatty()


def _size() -> tuple[int, int]:
    """The terminal's columns and lines; one that reports none (0, as a fresh pseudo-terminal
    does) gets 100 x 24 — tqdm draws nothing on a terminal it believes has no lines."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 100, 24
    return size.columns or 100, size.lines or 24


class Bar:
    """One progress bar that measures bytes when the total is known, else percent."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self._bar: Any = None
        self._bytes = False

    def update(self, *, done_bytes: int = 0, total_bytes: int = 0, fraction: float = 0.0, note: str = "") -> None:
        if total_bytes > 0:
            if self._bar is None or not self._bytes:
                self._open(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024)
                self._bytes = True
            if self._bar.total != total_bytes:
                self._bar.total = total_bytes
            self._bar.update(max(0, min(done_bytes, total_bytes)) - self._bar.n)
        else:
            if self._bar is None:
                self._open(total=100, bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
                self._bytes = False
            if not self._bytes:
                self._bar.update(round(fraction * 100) - self._bar.n)
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.refresh()

    def _open(self, **kw: Any) -> None:
        self.close()
        cols, rows = _size()
        self._bar = tqdm(desc=self.desc, file=sys.stderr, ncols=cols, nrows=rows, leave=True, **kw)

    def write(self, text: str) -> None:
        """A line above the bar (the bar is redrawn below it)."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

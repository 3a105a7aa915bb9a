"""Progress of the long passes: tensors done and bytes read, on stderr (a job's log).

On a terminal this is an ordinary tqdm bar; in a file (a Snakemake job's log) tqdm's
carriage-return redraws become one line per update, every ``LOG_INTERVAL_S`` seconds, so a
log reads as a time series (``tail -f`` it to watch a job). ``OFFPRINCIPAL_PROGRESS=0``
turns the bars off.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm

LOG_INTERVAL_S = 10.0


class _Lines:
    """A file-like view of a log that turns each carriage-return redraw into its own line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> None:
        lines = [part for part in text.replace("\r", "\n").split("\n") if part.strip()]
        if lines:
            self._stream.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        self._stream.flush()


class PassProgress:
    """Counts tensors and bytes of one pass; ``advance(nbytes)`` after each tensor (pair)."""

    def __init__(self, bar: tqdm | None, tensors: int):
        self._bar = bar
        self._tensors = tensors
        self.done = 0

    def advance(self, nbytes: int) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(f"tensors {self.done}/{self._tensors}", refresh=False)
            self._bar.update(nbytes)


@contextmanager
def pass_progress(desc: str, *, tensors: int, total_bytes: int, stream=None) -> Iterator[PassProgress]:
    """A bar for one pass over ``tensors`` tensors (or pairs) holding ``total_bytes`` bytes."""
    if os.environ.get("OFFPRINCIPAL_PROGRESS", "1") == "0":
        yield PassProgress(None, tensors)
        return
    stream = stream if stream is not None else sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    bar = tqdm(
        total=total_bytes,
        desc=desc,
        unit="B",
        unit_scale=True,
        file=stream if tty else _Lines(stream),
        mininterval=0.5 if tty else LOG_INTERVAL_S,
        dynamic_ncols=tty,
        ncols=None if tty else 100,
        ascii=not tty,
    )
    bar.set_postfix_str(f"tensors 0/{tensors}", refresh=False)
    try:
        yield PassProgress(bar, tensors)
    finally:
        bar.close()

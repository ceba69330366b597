"""Progress that fits where it is shown: a tqdm bar on a terminal; on a pipe or a file (cluster jobs, CI
logs) one plain line every ``SCOREKIT_PROGRESS_SECONDS`` seconds (default 10) or every ``every`` updates,
instead of thousands of carriage returns; nothing at all when disabled (``--no-progress``)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SCOREKIT_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Silent:
    """The no-op progress of ``--no-progress``: iterates, ignores updates."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


class PlainLines(Silent):
    """One readable line per ``interval`` seconds (and/or per ``every`` updates), and one at the end:
    ``train: 300/1200 step (25%) loss=0.0312 [0:36 elapsed, 1:48 left]``."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, every: int | None = None, interval: float | None = None,
                 stream: IO[str] | None = None):
        super().__init__(iterable)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.n, self.start_n = total, desc, unit, initial, initial
        self.every, self.interval = every, (_interval() if interval is None and every is None else interval)
        self.stream = stream or sys.stderr
        self.postfix: dict = {}
        self.t0 = self.t_last = time.monotonic()
        self.n_last = initial
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        due = (self.every is not None and self.n % self.every == 0) or (
            self.interval is not None and now - self.t_last >= self.interval)
        if due:
            self._emit(now)

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def _emit(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        elapsed = now - self.t0
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        left = f", {_clock((self.total - self.n) / rate)} left" if self.total and rate > 0 else ""
        print(f"{self.desc}: {done} {self.unit}{pct}{extra} [{_clock(elapsed)} elapsed{left}]", file=self.stream,
              flush=True)
        self.t_last, self.n_last = now, self.n

    def close(self) -> None:
        """A last line, unless nothing was shown and the work took less than one interval (no noise in logs)."""
        now = time.monotonic()
        shown = self.t_last != self.t0 or self.every is not None
        if not self.closed and self.n != self.n_last and (shown or now - self.t0 >= (self.interval or 0)):
            self._emit(now)
        self.closed = True


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, enabled: bool = True, every: int | None = None, leave: bool = True):
    """A tqdm bar when stderr is a terminal, :class:`PlainLines` otherwise, :class:`Silent` when not
    ``enabled``. ``every`` (plain lines only) prints every that many updates instead of by the clock."""
    if not enabled:
        return Silent(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, dynamic_ncols=True)
    return PlainLines(iterable, total=total, desc=desc, unit=unit, initial=initial, every=every)

"""Progress as log lines, at a steady interval, for output that is not a terminal.

On a cluster a job's output goes to files, where a progress bar says nothing until it ends:
rich's `Progress` draws a non-terminal console once, when it stops, and tqdm writes every
redraw into one endless `\\r`-joined line. So a `Reporter` leaves the terminal to the bars
(Lightning's, and rich's in `r2r.rerank`) and, when stdout or stderr is redirected, logs one
line every `interval_s` seconds through `logging` (Hydra sends it to the job's log file and to
the console): what runs, done/total, the rate, elapsed time and ETA. Hand-written rather than
a library bar on a logging shim: no bar's throttle is a fixed wall-clock interval (tqdm's
`mininterval` works with adaptive `miniters` and a monitor thread), and a line per interval
is a dozen lines of arithmetic. Training reports through `r2r.lit_progress`.

The interval is set once per job by the pipeline (`progress.interval_s` in the config,
`configure`): like a logging level it is a setting of the process's output, not of any one
computation, so the scoring, mining and feature functions do not each take it. Until then
reporters are silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

_interval_s: float | None = None  # None: not configured, no lines


def configure(interval_s: float | None) -> None:
    """Log progress every `interval_s` seconds where the output is not a terminal (None: never)."""
    global _interval_s
    if interval_s is not None and interval_s < 0:
        raise ValueError(f"progress.interval_s must be >= 0 or null, got {interval_s}")
    _interval_s = interval_s


def is_terminal() -> bool:
    """Whether progress bars can be drawn: stdout and stderr are both terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def lightning_bar(trainer_settings: Mapping[str, Any]) -> bool:
    """`enable_progress_bar` for a Lightning trainer of these settings: its bar where they
    ask for one and it can be drawn (off a terminal, r2r's log lines stand in for it)."""
    return bool(trainer_settings.get("enable_progress_bar", True)) and is_terminal()


def duration(seconds: float) -> str:
    """`H:MM:SS`, to the second."""
    return str(timedelta(seconds=round(seconds)))


def rate_text(rate: float) -> str:
    """Three significant digits, never an exponent: 0.0512, 1.36, 25.6, 1234."""
    return f"{rate:.3g}" if rate < 1000 else f"{rate:.0f}"


class Reporter:
    """Logs `what`'s progress at most once per `interval_s` seconds (of `clock`), on `advance`.

    A line: ``score legal: 15/50 pairs (30%), 1.36 pairs/s, elapsed 0:00:11, ETA 0:00:26``
    and a note after `` | `` when `advance` gives one. The rate is the mean since the reporter
    started, so the ETA is steady. A reporter that logged anything logs a last line when
    closed (it is a context manager; not after an error); a short task logs nothing at all.

    interval_s: None takes the configured one (`configure`); 0 logs on every advance.
    interactive: None detects it (`is_terminal()`); True keeps the reporter silent.
    clock: seconds, default `time.monotonic`.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str,
        *,
        interval_s: float | None = None,
        interactive: bool | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.interval_s = _interval_s if interval_s is None else interval_s
        if interactive is None:
            interactive = is_terminal()
        self.enabled = self.interval_s is not None and not interactive
        self.clock = clock or time.monotonic
        self.done, self.lines, self.logged_done = 0, 0, 0
        self.started = self.last = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def advance(self, n: int = 1, note: str | Callable[[], str] = "") -> None:
        """`n` more done; log a line if `interval_s` has passed since the last one. A
        callable `note` is called only when a line is written."""
        self.done += n
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            self._log(now, note() if callable(note) else note)

    def close(self, note: str | Callable[[], str] = "") -> None:
        """The last line, if a line was logged before and more was done since."""
        if self.enabled and self.lines and self.done != self.logged_done:
            self._log(self.clock(), note() if callable(note) else note)

    def line(self, now: float, note: str = "") -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else None
        done = f"{self.done}/{self.total}" if self.total else str(self.done)
        parts = [f"{done} {self.unit}" + (f" ({self.done / self.total:.0%})" if self.total else "")]
        parts.append(f"{rate_text(rate)} {self.unit}/s" if rate is not None else f"? {self.unit}/s")
        parts.append(f"elapsed {duration(elapsed)}")
        if self.total:
            left = max(self.total - self.done, 0)
            eta = duration(left / rate) if rate else ("0:00:00" if not left else "?")
            parts.append(f"ETA {eta}")
        return f"{self.what}: {', '.join(parts)}" + (f" | {note}" if note else "")

    def _log(self, now: float, note: str) -> None:
        self.lines, self.logged_done = self.lines + 1, self.done
        log.info(self.line(now, note))

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()

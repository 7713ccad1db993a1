"""What a running head shows: a live block on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Any

from .durations import format_until
from .engine import Head, Reporter
from .state import summary_counts

_ORDER = ("COMPLETED", "RUNNING", "STARTING", "PENDING", "FAILED", "TIMEOUT", "CANCELLED")


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class PlainReporter(Reporter):
    """One timestamped line per event, nothing that redraws: for cron, CI and pipes."""

    def __init__(self, out: IO[str] | None = None, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self.verbose = verbose
        self._last_counts: str = ""

    def event(self, kind: str, message: str, **info: Any) -> None:
        if self.quiet and kind not in ("error",):
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.out.write(f"{stamp} {kind:<7} {message}\n")
        self.out.flush()


class LiveReporter(Reporter):
    """A progress bar, counts and one line per host, redrawn in place on a terminal."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self._lines = 0
        self._last = 0.0
        self._head: Head | None = None
        self._t0 = time.monotonic()

    def _clear(self) -> None:
        if self._lines:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0

    def _draw(self) -> None:
        head = self._head
        if head is None:
            return
        width = max(40, shutil.get_terminal_size((100, 20)).columns)
        counts = head.counts()
        total = max(1, len(head.jobs))
        finished = sum(counts.get(s, 0) for s in ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"))
        barw = 24
        fill = int(barw * finished / total)
        el = int(time.monotonic() - self._t0)
        moved = sum(h.meter.total for h in head.hosts.values())
        lines = [f"[{'#' * fill}{'-' * (barw - fill)}] {finished}/{total}  "
                 f"{summary_counts(counts)}  {el // 60}:{el % 60:02d}"
                 + (f"  moved {_bytes(moved)}" if moved else "")]
        running: dict[str, list[str]] = {}
        for j in head.jobs.values():
            if j.state in ("RUNNING", "STARTING", "SUSPENDED") and j.host:
                running.setdefault(j.host, []).append(j.planned.name)
        for name, h in head.hosts.items():
            jobs = running.get(name, [])
            cap = h.slots.slots if h.slots and h.slots.slots else None
            state = h.status if h.status != "ready" else f"{len(jobs)}{'/' + str(cap) if cap else ''} running"
            rate = h.meter.rate()
            moving = f"{_bytes(rate)}/s " if rate >= 1 else ""
            line = f"  {name:<14} {state:<14} {moving}{', '.join(jobs)}"
            if h.status in ("failed", "unreachable", "lost") and h.detail:
                line = f"  {name:<14} {h.status:<14} {h.detail}"
            elif h.status == "paused":
                until = format_until(h.paused_until) if h.paused_until else "?"
                line = (f"  {name:<14} {'paused':<14} by {h.paused_by} until {until}"
                        f"{'; ' + ', '.join(jobs) + ' suspended' if jobs else ''}")
            lines.append(line[: width - 1])
        self.out.write("\n".join(lines) + "\n")
        self._lines = len(lines)
        self.out.flush()

    def event(self, kind: str, message: str, **info: Any) -> None:
        self._clear()
        stamp = time.strftime("%H:%M:%S")
        self.out.write(f"{stamp} {message}\n")
        self._draw()

    def update(self, head: Head) -> None:
        self._head = head
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        self._clear()
        self._draw()

    def close(self) -> None:
        self._clear()
        self._draw()

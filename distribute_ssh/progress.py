"""What a running head shows: a live block on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Any

from .durations import format_until, short_path
from .engine import Head, Reporter
from .redact import redact
from .state import summary_counts

_ORDER = ("COMPLETED", "RUNNING", "STARTING", "PENDING", "FAILED", "TIMEOUT", "CANCELLED")


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _is_failure(kind: str, info: dict[str, Any]) -> bool:
    return kind == "job" and info.get("status") in ("FAILED", "TIMEOUT")


def _eta(head: Head, finished: int, total: int, now: float) -> str:
    """Time left at the pace of the jobs finished so far in this run (blank until one has)."""
    done = [j for j in head.jobs.values() if j.finished_here]
    if not done or finished >= total:
        return ""
    pace = (now - head.first_start) / len(done) if head.first_start else 0
    if pace <= 0:
        return ""
    left = int(pace * (total - finished))
    h, rest = divmod(left, 3600)
    return f"  ETA {h}:{rest // 60:02d}:{rest % 60:02d}" if h else \
        f"  ETA {rest // 60}:{rest % 60:02d}"


def _stalled(head: Head, counts: dict[str, int]) -> str:
    """Why nothing runs while jobs are queued, host by host, in a few words ('' when
    something runs, or nothing waits). ``dssh why`` says it at length."""
    if not counts.get("PENDING") or any(counts.get(s) for s in ("RUNNING", "STARTING",
                                                                 "SUSPENDED")):
        return ""
    from .schedule import JobNeed

    need = JobNeed(head.sweep.run.cpus, head.sweep.run.gpus, frozenset(head.sweep.needs))
    parts = []
    for name, h in head.hosts.items():
        s = h.slots
        if h.status == "paused":
            parts.append(f"{name} paused by {h.paused_by or 'its owner'}")
        elif h.status in ("unreachable", "lost"):
            parts.append(f"{name} {h.status}")
        elif h.status == "failed":
            parts.append(f"{name} {h.detail.split(':')[0] if h.detail else 'failed'}")
        elif h.status in ("connecting", "building"):
            parts.append(f"{name} {h.status}")
        elif s is not None and not s.can_ever_run(need):
            parts.append(f"{name} too small ({s.limit_cpus} cpus)")
        elif s is not None and not s.fits_now(need):
            parts.append(f"{name} busy ({max(0, s.free_cpus)} of {s.limit_cpus} cpus free"
                         + (", held by other heads" if s.foreign_cpus else "") + ")")
    return "; ".join(parts) + ("  (dssh why)" if parts else "")


class PlainReporter(Reporter):
    """One timestamped line per event, nothing that redraws: for cron, CI and pipes."""

    def __init__(self, out: IO[str] | None = None, quiet: bool = False,
                 verbose: bool = False) -> None:
        self.out = out or sys.stdout
        self.quiet = quiet
        self.verbose = verbose
        self._last_counts: str = ""

    def event(self, kind: str, message: str, **info: Any) -> None:
        if self.quiet and kind != "error" and not _is_failure(kind, info):
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.out.write(f"{stamp} {kind:<7} {redact(message)}\n")
        self.out.flush()


class TeeReporter(Reporter):
    """Several reporters at once: the terminal or plain lines, and a --log file."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def event(self, kind: str, message: str, **info: Any) -> None:
        for r in self.reporters:
            r.event(kind, message, **info)

    def update(self, head: Head) -> None:
        for r in self.reporters:
            r.update(head)


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
        running: dict[str, list[str]] = {}
        on_hosts = 0
        for j in head.jobs.values():
            if j.state in ("RUNNING", "STARTING", "SUSPENDED") and j.host:
                if j.queued:  # queued on the host behind another of its slot's chain
                    on_hosts += j.state == "STARTING"
                else:
                    running.setdefault(j.host, []).append(j.planned.name)
        lines = [f"[{'#' * fill}{'-' * (barw - fill)}] {finished}/{total}  "
                 f"{summary_counts(counts, on_hosts)}  {el // 60}:{el % 60:02d}"
                 + _eta(head, finished, total, time.time())
                 + (f"  moved {_bytes(moved)}" if moved else "")]
        stalled = _stalled(head, counts)
        if stalled:
            lines.append(f"  waiting: {stalled}"[: width - 1])
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
        """Above the bars: what needs a look (failures with their log, warnings, hosts
        lost or back); starts and successes only move the bars."""
        if kind == "job" and not _is_failure(kind, info):
            return
        if _is_failure(kind, info) and self._head is not None and info.get("job"):
            log = self._head.results_dir / info["job"] / "stderr.txt"
            message += f"; log: {short_path(log)}"
        self._clear()
        stamp = time.strftime("%H:%M:%S")
        self.out.write(f"{stamp} {redact(message)}\n")
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

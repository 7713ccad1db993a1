"""``summary.csv`` (SPEC §8): one row per job, the same for lab and cluster runs."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from .plan import value_text

HEAD = ["job", "status", "host", "attempts", "exit_code", "started", "finished", "seconds"]


def epoch(text: str | None) -> float | None:
    """A time a wrapper or task wrote with ``date +%s.%N`` (``%N`` may be literal where
    unsupported)."""
    if not text:
        return None
    try:
        return float(text.split(".N")[0].rstrip(".")) or None
    except ValueError:
        return None


def iso(t: float | None) -> str | None:
    if not t:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def summary_csv(rows: list[dict[str, Any]], pnames: list[str]) -> str:
    """Rows of ``job, status, host, attempts, exit_code, started, finished`` (epochs) and
    ``params``. A field holding a carriage return is quoted like one holding a newline,
    so a parameter value cannot forge a row for readers that end lines at either."""
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(HEAD + pnames)
    for r in rows:
        s, f = r["started"], r["finished"]
        cells = [r["job"], r["status"], r["host"] or "", r["attempts"],
                 "" if r["exit_code"] is None else r["exit_code"], iso(s) or "",
                 iso(f) or "", round(f - s, 3) if s and f else ""]
        cells += [value_text(r["params"][p]) if p in r["params"] else "" for p in pnames]
        w = quoted if any("\r" in str(c) for c in cells) else plain
        w.writerow(cells)
    return buf.getvalue()

"""``summary.csv`` (SPEC §8): one row per job, the same for lab and cluster runs."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

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


def write_summary(path: Path, rows: Iterable[Mapping[str, Any]], pnames: list[str]) -> None:
    """Write ``path`` (summary.csv) whole or not at all: through a temporary file next to
    it. OSError when the results dir refuses it."""
    tmp = path.with_name(".summary.csv.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        write_summary_csv(f, rows, pnames)
    os.replace(tmp, path)


def write_summary_csv(out: TextIO, rows: Iterable[Mapping[str, Any]], pnames: list[str]
                      ) -> None:
    """Rows of ``job, status, host, attempts, exit_code, started, finished`` (epochs) and
    ``params``, written as they come (a sweep of 100,000 jobs is never all in memory at
    once). ``params`` is a dict, or its JSON text. A field holding a carriage return is
    quoted like one holding a newline, so a parameter value cannot forge a row for
    readers that end lines at either."""
    plain = csv.writer(out, lineterminator="\n")
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(HEAD + pnames)
    for r in rows:
        s, f = r["started"], r["finished"]
        params = r["params"]
        if isinstance(params, str):
            params = json.loads(params)
        cells = [r["job"], r["status"], r["host"] or "", r["attempts"],
                 "" if r["exit_code"] is None else r["exit_code"], iso(s) or "",
                 iso(f) or "", round(f - s, 3) if s and f else ""]
        cells += [value_text(params[p]) if p in params else "" for p in pnames]
        w = quoted if any("\r" in str(c) for c in cells) else plain
        w.writerow(cells)

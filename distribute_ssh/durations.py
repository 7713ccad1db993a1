"""Durations as people write them (``45m``, ``2h``, ``1h30m``, ``90s``, ``1d``, or seconds), and
paths as people read them."""

from __future__ import annotations

import re

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; raises ValueError with a hint when it is not a duration."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like 45m, 2h or 1h30m, got a boolean")
    if isinstance(text, int | float):
        if text != text or text in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite duration, got {text!r}")
        if text < 0:
            raise ValueError(f"a duration cannot be negative, got {text}")
        return float(text)
    s = str(text).strip().lower()
    if re.search(r"\d\s+\d", s):  # "2 30" is not 230 seconds
        raise ValueError(f"expected a duration like 45m, 2h, 1h30m or 02:00:00, got {text!r}")
    s = s.replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    if re.fullmatch(r"\d+:\d{2}:\d{2}", s):  # Slurm's HH:MM:SS
        h, m, sec = (int(x) for x in s.split(":"))
        return float(h * 3600 + m * 60 + sec)
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"expected a duration like 45m, 2h, 1h30m or 02:00:00, got {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Short human form: ``1h30m``, ``45s``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def format_until(epoch: float, now: float | None = None) -> str:
    """When a pause ends, as a person reads it: ``18:40`` today, else ``11-26 18:40``."""
    import time

    now = time.time() if now is None else now
    lt = time.localtime(epoch)
    same_day = time.localtime(now)[:3] == lt[:3]
    return time.strftime("%H:%M" if same_day else "%m-%d %H:%M", lt)


def short_path(p: object) -> str:
    """A path as a person would type it from here: relative when that is shorter."""
    import os

    try:
        rel = os.path.relpath(str(p))
    except ValueError:
        return str(p)
    return rel if not rel.startswith("../..") else str(p)


def format_seconds(secs: float | None, compact: bool = False) -> str:
    """A duration for people: ``4.1 s``, ``3 min 05 s``, ``1 h 02 min`` (``compact``:
    ``4.1s``, ``3m05s``, ``1h02m``, for narrow columns); '' for None."""
    if secs is None:
        return ""
    sp = "" if compact else " "
    if secs < 60:
        return f"{secs:.1f}{sp}s"
    m, s = divmod(int(secs), 60)
    h, m = divmod(m, 60)
    if compact:
        return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"

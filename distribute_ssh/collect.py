"""Bringing a job's outputs home safely (SPEC §8).

Files are listed on the host without following symlinks, filtered by the sweep's
``collect`` patterns, downloaded into a hidden staging dir, checked against the sizes
the host reported, and only then moved into ``results/<ns>/<sweep>/<job>/`` with a
rename. A half-copied result is never where a finished one belongs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from functools import cache
from pathlib import Path
from typing import Any

from .hosts.base import RemoteEntry
from .transfer import safe_rel

RESERVED = ("stdout.txt", "stderr.txt", "job.json", ".attempts")
LOGS = ("stdout.txt", "stderr.txt", "job.json")


@cache
def _pattern(pat: str) -> re.Pattern[str]:
    """A collect pattern as a regex over '/'-separated paths.

    ``*`` and ``?`` stay within one path part, ``**`` spans any number of parts, a
    pattern without '/' matches a file's name at any depth (like .gitignore), a leading
    '/' anchors it at the top, and a pattern naming a directory (``plots/``) takes
    everything below it.
    """
    p = pat.strip()
    anchored = "/" in p.rstrip("/")
    p = p.lstrip("/")  # "/out.csv": only at the top of outputs/, as in .gitignore
    if p.endswith("/"):
        p += "**"
    out = []
    i = 0
    while i < len(p):
        c = p[i]
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls, i = _bracket(p, i)
            out.append(cls)
        else:
            out.append(re.escape(c))
            i += 1
    body = "".join(out)
    return re.compile(("" if anchored else "(?:.*/)?") + body + r"\Z", re.DOTALL)


def _bracket(p: str, i: int) -> tuple[str, int]:
    """A glob ``[...]`` class at ``p[i]`` as a regex class that never matches '/'.

    As in fnmatch: ``!`` negates, a ``]`` right after ``[`` (or ``[!``) is literal, and
    an unclosed or invalid class is a literal ``[``.
    """
    j = i + 1
    negate = j < len(p) and p[j] == "!"
    if negate:
        j += 1
    start = j
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p) and p[j] != "]":
        j += 1
    if j >= len(p):
        return re.escape("["), i + 1
    body = "".join("\\" + ch if ch in "\\^[]" else ch for ch in p[start:j])
    cls = f"[^/{body}]" if negate else f"[{body}]"
    try:
        re.compile(cls)
    except re.error:  # e.g. a reversed range [z-a]: take the text literally
        return re.escape(p[i:j + 1]), j + 1
    return cls, j + 1


def matches(path: str, patterns: list[str]) -> bool:
    return any(_pattern(p).match(path) for p in patterns)


def select(entries: list[RemoteEntry], patterns: list[str], exclude: list[str] = ()
           ) -> tuple[list[RemoteEntry], list[RemoteEntry], list[str]]:
    """(files to bring home, files to leave on the host, notes about what was skipped).

    A file comes home when a ``collect`` pattern matches it and no ``exclude`` pattern
    does; other regular files stay on the host for ``dssh pull``. Symlinks and special
    files never travel (dssh never follows links), nor do names unsafe to write."""
    take, left, notes = [], [], []
    for e in entries:
        if e.kind == "dir":
            continue
        wanted = matches(e.path, patterns) and not matches(e.path, list(exclude))
        if e.kind == "link":
            if wanted:
                notes.append(f"{e.path}: a symlink, not collected (dssh never follows links)")
        elif e.kind != "file":
            if wanted:
                notes.append(f"{e.path}: not a regular file, not collected")
        elif not safe_rel(e.path):
            notes.append(f"{e.path}: unsafe name, not collected")
        elif wanted:
            take.append(e)
        else:
            left.append(e)
    return take, left, notes


def keep_earlier(final: Path, staging: Path, attempt: int) -> None:
    """An earlier attempt's result in ``final`` is about to be replaced by ``staging``:
    its logs and job.json go along under ``.attempts/<n>/`` (``dssh logs --attempt``)."""
    if not final.is_dir():
        return
    try:
        old = int(json.loads((final / "job.json").read_text())["attempts"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if old >= attempt:
        return
    if (final / ".attempts").is_dir():
        shutil.copytree(final / ".attempts", staging / ".attempts", dirs_exist_ok=True)
    keep = staging / ".attempts" / str(old)
    keep.mkdir(parents=True, exist_ok=True)
    for name in LOGS:
        if (final / name).is_file():
            shutil.copy2(final / name, keep / name)


def place(staging: Path, final: Path) -> None:
    """Move a complete staging dir to its final place; an older result is replaced whole."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:  # put the previous result back rather than lose it
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    from .redact import redact_data

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(redact_data(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)

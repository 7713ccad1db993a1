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
from pathlib import Path, PurePosixPath
from typing import Any

from .hosts.base import HostConnection, RemoteEntry

RESERVED = ("stdout.txt", "stderr.txt", "job.json")


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
    return re.compile(("" if anchored else "(?:.*/)?") + body + r"\Z")


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


def select(entries: list[RemoteEntry], patterns: list[str]) -> tuple[list[RemoteEntry], list[str]]:
    """(files to collect, notes about what was skipped and why)."""
    take, notes = [], []
    for e in entries:
        if e.kind == "dir" or not matches(e.path, patterns):
            continue
        if e.kind == "link":
            notes.append(f"{e.path}: a symlink, not collected (dssh never follows links)")
        elif e.kind != "file":
            notes.append(f"{e.path}: not a regular file, not collected")
        elif not _safe_rel(e.path):
            notes.append(f"{e.path}: unsafe name, not collected")
        else:
            take.append(e)
    return take, notes


def _safe_rel(rel: str) -> bool:
    p = PurePosixPath(rel)
    return not p.is_absolute() and ".." not in p.parts and "" not in p.parts and rel != "."


async def download(conn: HostConnection, remote_dir: str, files: list[RemoteEntry],
                   staging: Path) -> None:
    for e in files:
        dest = staging.joinpath(*PurePosixPath(e.path).parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        await conn.get(f"{remote_dir}/{e.path}", str(dest), e.size)


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)

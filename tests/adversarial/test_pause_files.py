"""Hostile pause files on a host: nothing hangs, nothing crashes, nothing is followed
(issue 10, theme 7; docs/pausing.md).

The host's ``pause_files`` is one path in the arena. docs/pausing.md: "Anything else —
unreadable, binary, huge, a symlink, text that is not a duration — counts as an empty
file. dssh reads at most the first 64 bytes of a regular file and never follows a symlink
to read its target." So each hostile pause file must count as an *empty* file: the host is
paused from the file's modification time for ``max_pause``, then free again.

Cases:

- ``test_hostile_pause_file_run[KIND]`` for KIND in ``dev-zero-link`` (a symlink to
  /dev/zero: endless bytes if it were read), ``fifo`` (opening it would block without a
  writer), ``sparse-100mb`` (a 100 MB file of NULs, holes on disk), ``directory``: with
  ``max_pause: 6s``, ``dssh run`` says the host is paused by that file, then no longer
  paused, runs the job to completion and exits 0, well within the test's limit; the pause
  file is left exactly as it was (never opened for writing, never removed).
- ``test_hostile_pause_file_report[KIND]`` for the same kinds and ``link-to-duration`` (a
  symlink to a file holding ``1s``: not followed, so it lasts max_pause, not 1 s),
  ``cmd-subst`` (text ``$(touch CANARY)``: read as text, never run), ``huge-number``
  (``99999999999999999999h``: not a duration the wrapper's arithmetic can hold),
  ``binary`` (NULs and control bytes): with ``max_pause: 1h``, ``dssh hosts --json``
  answers at once, reports the host paused by that file as a ``flag`` until its mtime plus
  one hour, and no canary fires.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from advkit import Arena, escaped, explain, finish, run_allowed, snapshot


def _dev_zero_link(p: Path) -> None:
    p.symlink_to("/dev/zero")


def _sparse(p: Path) -> None:
    with open(p, "wb") as f:
        f.truncate(100 << 20)


def _link_to_duration(p: Path) -> None:
    target = p.with_name("one-second")
    target.write_text("1s\n")
    p.symlink_to(target)


MAKERS: dict[str, Callable[[Path], None]] = {
    "dev-zero-link": _dev_zero_link,
    "fifo": os.mkfifo,
    "sparse-100mb": _sparse,
    "directory": Path.mkdir,
}
REPORT_ONLY: dict[str, Callable[[Path], None]] = {
    "link-to-duration": _link_to_duration,
    "cmd-subst": lambda p: p.write_text("$(touch @CANARY@)\n"),
    "huge-number": lambda p: p.write_text("99999999999999999999h\n"),
    "binary": lambda p: p.write_bytes(b"\x00\x01\xff\x1b[2J\x00" * 20),
}
MAX_PAUSE = 6  # seconds, for the runs: long enough for a loaded machine to see it


@pytest.fixture(scope="module")
def paused_runs(module_arenas: Callable[[str], Arena]) -> dict[str, dict[str, Any]]:
    """One head per kind, all at once: each waits out its host's pause, then runs."""
    started = {}
    for kind, make in MAKERS.items():
        a = module_arenas(f"pause-{kind}")
        path = a.write_sweep({"name": "p", "run": {"command": "printf ok > {output}/ok",
                                                   "cpus": 1}, "jobs": [{"name": "j"}]})
        a.write_inventory(max_pause=f"{MAX_PAUSE}s")
        make(a.root / "pause")
        before = snapshot(a.root)
        started[kind] = (a, before, a.start("run", path, "-i", a.root / "inventory.yaml"))
    deadline = time.monotonic() + 40
    out = {}
    for kind, (a, before, proc) in started.items():
        done = finish(proc, deadline)
        out[kind] = {"arena": a, "proc": done, "before": before, "after": snapshot(a.root)}
    return out


@pytest.mark.parametrize("kind", list(MAKERS))
def test_hostile_pause_file_run(paused_runs: dict[str, dict[str, Any]], kind: str) -> None:
    r = paused_runs[kind]
    a, proc = r["arena"], r["proc"]
    assert proc.returncode is not None, "dssh run hung on a hostile pause file\n" + explain(proc)
    assert proc.returncode == 0, explain(proc)
    pause = a.root / "pause"
    assert f"here: paused by {pause} until" in proc.stdout, explain(proc)
    assert "here: no longer paused" in proc.stdout
    assert "default/p: 1 jobs: 1 COMPLETED" in proc.stdout
    assert (a.sweep_dir / "results/default/p/j/ok").read_text() == "ok"
    assert "Traceback" not in proc.stderr
    # the pause file (and everything else outside the run's trees) is as it was
    assert escaped(r["before"], r["after"], run_allowed("sweep/results/default/p")) == []


@pytest.mark.parametrize("kind", [*MAKERS, *REPORT_ONLY])
def test_hostile_pause_file_report(arena: Arena, kind: str) -> None:
    pause = arena.root / "pause"
    make = MAKERS.get(kind) or REPORT_ONLY[kind]
    if kind == "cmd-subst":
        pause.write_text(arena.subst("$(touch @CANARY@)\n", "pause"))
    else:
        make(pause)
    arena.write_inventory(max_pause="1h")
    before = snapshot(arena.root)
    t0 = time.monotonic()
    proc = finish(arena.start("hosts", "--json", "-i", arena.root / "inventory.yaml"),
                  time.monotonic() + 30)
    assert proc.returncode is not None, "dssh hosts hung on a hostile pause file"
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 0, explain(proc)
    (host,) = json.loads(proc.stdout)
    assert host["paused"] is True
    (by,) = host["paused_by"]
    mtime = os.lstat(pause).st_mtime
    assert (by["file"], by["kind"]) == (str(pause), "flag")
    assert abs(by["until"] - (int(mtime) + 3600)) <= 1, "not an empty file's max_pause"
    assert arena.fired() == []
    assert snapshot(arena.root) == before

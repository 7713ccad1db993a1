"""watch.sh run directly, as a head's watch channel runs it on a host: it prints READY, then
every line appended to the event log after it started, and nothing from before. Both of
its ways are checked with the real ``tail``: GNU tail following the file, and the polling
loop a host without GNU tail gets (forced here by a ``tail`` on PATH that refuses
``--version`` and hands everything else to the real one)."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from distribute_ssh import remote

TAIL = shutil.which("tail")


def _lines(proc: subprocess.Popen, n: int, timeout: float = 10.0) -> list[str]:
    """The next ``n`` lines the watcher prints (fewer if it says nothing for ``timeout``).
    The pipe is unbuffered: a line read ahead into a buffer would be invisible to select."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    out: list[str] = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        if sel.select(end - time.monotonic()):
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line.decode().rstrip("\n"))
    sel.close()
    return out


@pytest.mark.skipif(TAIL is None, reason="no tail on this machine")
@pytest.mark.parametrize("how", ["gnu-tail", "polling"])
def test_watch_prints_what_is_appended_after_it_started(tmp_path: Path, how: str) -> None:
    script = tmp_path / "watch.sh"
    script.write_bytes(remote.script("watch")[1])
    env = dict(os.environ)
    if how == "polling":
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "tail").write_text(
            f'#!/bin/sh\n[ "$1" = --version ] && exit 1\nexec {TAIL} "$@"\n')
        (fake / "tail").chmod(0o755)
        env["PATH"] = f"{fake}:{env['PATH']}"
    # The log's dir does not exist yet; a line written before the watcher starts is old.
    log = tmp_path / "events" / "ns" / "sweep.log"
    first = subprocess.Popen(["sh", str(script), str(log)], stdout=subprocess.PIPE, env=env,
                             bufsize=0)
    try:
        assert _lines(first, 1) == ["READY"]
        # (a new log is empty: what is appended is all new)
        with open(log, "a") as f:
            f.write("job-0 0\n")
        assert _lines(first, 1) == ["job-0 0"]
    finally:
        first.kill()
        first.wait()
    assert log.is_file() and log.read_text() == "job-0 0\n"
    log.write_text("~old 1\n")
    proc = subprocess.Popen(["sh", str(script), str(log)], stdout=subprocess.PIPE, env=env,
                             bufsize=0)
    try:
        assert _lines(proc, 1) == ["READY"]
        assert (tmp_path / "events/ns/sweep.log.watcher").read_text().strip().isdigit()
        with open(log, "a") as f:
            f.write("job-a 1\n")
            f.flush()
            f.write("job-b 2\n")
        assert _lines(proc, 2) == ["job-a 1", "job-b 2"]
        with open(log, "a") as f:
            f.write("job-c 1\n")
        assert _lines(proc, 1) == ["job-c 1"]
        assert proc.poll() is None  # still following
    finally:
        proc.kill()
        proc.wait()

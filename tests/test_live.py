"""The live progress in a real terminal: dssh runs inside tmux, and the test reads the
screen as a person would (tmux capture-pane), again and again while the sweep runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import write_yaml


def _pythonpath() -> str:
    """The dssh under test, wherever this test run imports it from."""
    pp = os.environ.get("PYTHONPATH")
    return f" PYTHONPATH={pp}" if pp else ""


pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (CI installs it)")


def _watch_in_tmux(d: Path, sweep: str, width: int,
                   on_screen: Callable[[str], None] | None = None) -> list[str]:
    """Run `dssh run SWEEP` in a tmux window of ``width`` columns with only HOME, PATH and
    TERM set; return the screens read every 0.2 s until it exits."""
    session = f"dssh-{d.name[:20]}-{os.getpid()}"
    env = (f"env -i HOME={d} PATH={os.environ['PATH']} TERM=xterm-256color "
           f"DSSH_STATE={d / 'state.db'}{_pythonpath()}")
    cmd = f"cd {d} && {env} {sys.executable} -m distribute_ssh run {sweep}; " \
          "echo DSSH-EXIT=$?; sleep 60"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", "30",
                    cmd], check=True)
    screens: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            screens.append(screen)
            if on_screen is not None:
                on_screen(screen)
            if "DSSH-EXIT=" in screen:
                break
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return screens


def test_live_progress_in_tmux(tmp_path: Path) -> None:
    write_yaml(tmp_path / "live.yaml", {
        "name": "live", "run": {"command": "sleep 1.5; [ {i} != 3 ]", "cpus": 1},
        "params": {"i": list(range(1, 9))}})
    screens = _watch_in_tmux(tmp_path, "live.yaml", 100)
    final = screens[-1]
    assert "DSSH-EXIT=1" in final, final
    # the bar and its counts, redrawn in place while jobs ran
    during = [s for s in screens if "running" in s and "/8" in s and "DSSH-EXIT" not in s]
    assert during, screens[-3:]
    assert any("ETA " in s for s in during)  # once the first jobs finished
    # one line per host: what runs there
    assert any(line.startswith("  localhost") and " running " in line and "i-" in line
               for s in during for line in s.splitlines())
    # a failure is printed above the bars with where its log is; starts are not
    assert "i-3: FAILED (exit 1) on localhost; log: results/default/live/i-3/stderr.txt" \
        in final
    assert "started on" not in final
    assert "[########################] 8/8" in final
    assert "default/live: 8 jobs: 7 COMPLETED, 1 FAILED" in final
    for s in screens:  # never more than one copy of the bar on screen: redrawn, not appended
        assert s.count("] ") <= 1 or "DSSH-EXIT" in s


def test_a_stalled_sweep_says_why_in_the_live_display(tmp_path: Path) -> None:
    """Every host paused by its owner: the display says so instead of sitting still."""
    write_yaml(tmp_path / "stall.yaml", {
        "name": "stall", "run": {"command": "true", "cpus": 1}, "params": {"i": [1, 2]}})
    pause = tmp_path / ".distribute-pause"
    pause.write_text("")

    def owner_done(screen: str) -> None:
        if f"waiting: localhost paused by {pause}" in screen and pause.exists():
            pause.unlink()  # the owner is done: the jobs go on

    try:
        screens = _watch_in_tmux(tmp_path, "stall.yaml", 220, owner_done)
    finally:
        pause.unlink(missing_ok=True)
    assert any(f"waiting: localhost paused by {pause}  (dssh why)" in s for s in screens)
    assert "DSSH-EXIT=0" in screens[-1], screens[-1]
    assert "waiting:" not in screens[-1]

"""The nightly pattern of docs/cron.md, run as cron runs it: no terminal, stdin from
/dev/null, an environment of HOME, LOGNAME, SHELL and PATH=/usr/bin:/bin only (no ssh
agent), the working dir HOME, and the inventory in the user config dir."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_yaml

pytestmark = pytest.mark.sshd


def _cron_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}


def _cron(home: Path, *args: str, wait: bool = True) -> subprocess.Popen[str]:
    # What the crontab line runs: python3 -m distribute_ssh stands for the dssh script.
    proc = subprocess.Popen([sys.executable, "-m", "distribute_ssh", *args], cwd=home,
                            env=_cron_env(home), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if wait:
        proc.wait(timeout=120)
    return proc


@pytest.fixture
def home(tmp_path: Path, fresh_workdirs) -> Path:
    h = tmp_path / "home"
    fresh_workdirs.write_inventory(h / ".config/dssh/inventory.yaml", overrides={
        "ws1": {"cpus": 2}, "ws2": {"cpus": 2}, "ws3": {"cpus": 2}})
    return h


def test_nightly_run_from_cron(home: Path) -> None:
    write_yaml(home / "sweeps/nightly.yaml", {
        "name": "nightly", "run": {"command": "echo {x} > {output}/x.txt", "cpus": 1},
        "params": {"x": [1, 2, 3, 4]}})
    log = home / "logs/nightly.log"
    log.parent.mkdir()
    day = "nightly-2026-11-26"
    p = _cron(home, "run", "sweeps/nightly.yaml", "--name", day, "-q", "--log", str(log))
    out, err = p.communicate()
    assert p.returncode == 0, out + err
    assert out.splitlines() == [f"default/{day}: 4 jobs: 4 COMPLETED; results in "
                                f"sweeps/results/default/{day}"]
    assert err == ""
    lines = log.read_text().splitlines()
    assert lines[0].split(" ", 1)[1].startswith(
        f"start   dssh run sweeps/nightly.yaml --name {day} (pid ")
    assert sum(" job " in line and ": done on ws" in line for line in lines) == 4
    assert lines[-1].endswith("(exit 0)") and " end " in lines[-1]
    assert all(line[:4].isdigit() and line[10] == "T" for line in lines)  # timestamped
    # the state went to the default place under HOME: status finds it there
    st = _cron(home, "status", day)
    assert st.returncode == 0 and "4 jobs: done 4" in st.stdout.read()


def test_a_slow_night_does_not_overlap_the_next(home: Path) -> None:
    write_yaml(home / "sweeps/slow.yaml", {
        "name": "slow", "run": {"command": "sleep 4", "cpus": 1}, "params": {"x": [1, 2]}})
    log = home / "slow.log"
    first = _cron(home, "run", "sweeps/slow.yaml", "--name", "night", "-q", "--log", str(log),
                  wait=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "started on" not in (
                log.read_text() if log.exists() else ""):
            time.sleep(0.1)
        second = _cron(home, "run", "sweeps/slow.yaml", "--name", "night", "-q",
                       "--log", str(log))
        out, err = second.communicate()
        assert second.returncode == 3, out + err
        assert f"pid {first.pid}" in err and "dssh: error:" in err
        assert "(exit 3)" in log.read_text()
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err


def test_a_failing_night_exits_1_and_bad_input_exits_2_with_the_reason_logged(
        home: Path) -> None:
    write_yaml(home / "sweeps/bad.yaml", {
        "name": "bad", "run": {"command": "exit 5", "cpus": 1}})
    log = home / "bad.log"
    p = _cron(home, "run", "sweeps/bad.yaml", "-q", "--log", str(log))
    out, err = p.communicate()
    assert p.returncode == 1, out + err
    # -q: the failure as it happened, the summary line and the table of what failed
    lines = out.splitlines()
    assert " job     bad: FAILED (exit 5) on ws" in lines[0]
    assert lines[1].startswith("default/bad: 1 jobs: 1 FAILED")
    assert lines[2].split() == ["job", "status", "exit", "host", "see"]
    assert lines[3].split()[:3] == ["bad", "FAILED", "5"] and len(lines) == 4
    assert "FAILED (exit 5)" in log.read_text() and log.read_text().rstrip().endswith("(exit 1)")
    (home / "sweeps/typo.yaml").write_text("name: typo\nrun: {comand: 'true'}\n")
    p = _cron(home, "run", "sweeps/typo.yaml", "-q", "--log", str(log))
    out, err = p.communicate()
    assert p.returncode == 2 and "did you mean 'command'" in err
    assert "did you mean 'command'" in log.read_text().splitlines()[-1]
    assert os.path.getsize(log) > 0

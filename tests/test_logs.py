"""`dssh logs`: from the results after a job, from the host while it runs (--follow like
tail -f until it ends), earlier attempts, and build logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import dssh, explain, start_head, wait_until_running, write_yaml

pytestmark = pytest.mark.sshd


@pytest.fixture
def lab(tmp_path: Path, fresh_workdirs) -> Path:
    fresh_workdirs.write_inventory(tmp_path / "inventory.yaml", overrides={
        "ws1": {"cpus": 2}, "ws2": {"cpus": 2}, "ws3": {"cpus": 2}})
    return tmp_path


def test_logs_of_finished_jobs_earlier_attempts_and_builds(lab: Path) -> None:
    inv = lab / "inventory.yaml"
    sweep = write_yaml(lab / "lg.yaml", {
        "name": "lg", "build": {"command": "echo compiling the solver; echo warn >&2"},
        "run": {"command": "echo \"out of $DSSH_JOB attempt $DSSH_ATTEMPT\"; "
                           "echo \"err of $DSSH_JOB\" >&2; "
                           "[ {x} = 1 ] || [ $DSSH_ATTEMPT -ge 2 ]",
                "cpus": 1, "retries": 1},
        "params": {"x": [1, 2]}})
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    out = dssh("logs", "lg", "x-1", "-i", inv, cwd=lab)
    assert out.returncode == 0 and out.stdout == "out of x-1 attempt 1\n", explain(out)
    err = dssh("logs", "lg", "x-1", "--stderr", "-i", inv, cwd=lab)
    assert err.stdout == "err of x-1\n", explain(err)
    # x-2 failed once, then succeeded: both attempts' logs are there
    assert dssh("logs", "lg", "x-2", "-i", inv, cwd=lab).stdout == "out of x-2 attempt 2\n"
    first = dssh("logs", "lg", "x-2", "--attempt", "1", "-i", inv, cwd=lab)
    assert first.stdout == "out of x-2 attempt 1\n", explain(first)
    info = json.loads((lab / "results/default/lg/x-2/.attempts/1/job.json").read_text())
    assert info["status"] == "FAILED" and info["attempts"] == 1
    build = dssh("logs", "lg", "--build", "ws1", "-i", inv, cwd=lab)
    assert build.returncode == 0 and "compiling the solver" in build.stdout, explain(build)
    # mistakes say what is wrong, exit 2
    bad = dssh("logs", "lg", "x-9", "-i", inv, cwd=lab)
    assert bad.returncode == 2 and "no job 'x-9' in sweep default/lg" in bad.stderr
    bad = dssh("logs", "lg", "x-2", "--attempt", "3", "-i", inv, cwd=lab)
    assert bad.returncode == 2 and "--attempt 3: x-2 has had 2 attempt(s)" in bad.stderr
    bad = dssh("logs", "lg", "-i", inv, cwd=lab)
    assert bad.returncode == 2 and "name a JOB, or a host with --build HOST" in bad.stderr
    bad = dssh("logs", "lg", "--build", "ws9", "-i", inv, cwd=lab)
    assert bad.returncode == 2 and "no build of default/lg on ws9" in bad.stderr


def test_logs_of_a_running_job_and_follow_until_it_ends(lab: Path) -> None:
    inv = lab / "inventory.yaml"
    sweep = write_yaml(lab / "slow.yaml", {
        "name": "slow", "run": {"command": "i=1; while [ $i -le 12 ]; do echo line $i; "
                                           "sleep 0.5; i=$((i + 1)); done; echo bye >&2",
                                "cpus": 1}})
    head = start_head(lab, "run", sweep, "-i", inv, "--hosts", "ws2")
    try:
        wait_until_running(lab, "slow")
        time.sleep(0.8)
        now = dssh("logs", "slow", "slow", "-i", inv, cwd=lab)
        assert now.returncode == 0 and now.stdout.startswith("line 1\n"), explain(now)
        assert "line 12" not in now.stdout  # what it has written so far, from the host
        t0 = time.monotonic()
        follow = dssh("logs", "slow", "slow", "--follow", "-i", inv, cwd=lab, timeout=60)
        assert follow.returncode == 0, explain(follow)
        assert follow.stdout == "".join(f"line {i}\n" for i in range(1, 13))
        assert time.monotonic() - t0 > 1  # it waited for the job to end
    finally:
        out, _ = head.communicate(timeout=60)
    assert head.returncode == 0, out
    after = dssh("logs", "slow", "slow", "--stderr", "-i", inv, cwd=lab)
    assert after.stdout == "bye\n"

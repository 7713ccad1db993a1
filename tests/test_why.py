"""`dssh why`: while a head runs a sweep whose jobs mostly wait, each host of the
inventory says why it does not take one (real workstations; one of them paused by its
user, one too small, one without the capability, one unreachable)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from helpers import dssh, explain, start_head, wait_for, wait_until_running, write_yaml

from distribute_ssh import engine

pytestmark = pytest.mark.sshd


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_why_queued_jobs_wait(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    inv = tmp_path / "inventory.yaml"
    ws.write_inventory(inv, overrides={
        "ws1": {"cpus": 2, "capabilities": []},
        "ws2": {"cpus": 1, "capabilities": ["solver"]},
        "ws3": {"cpus": 2, "capabilities": ["solver"]}})
    doc = yaml.safe_load(inv.read_text())
    doc["hosts"]["gone"] = dict(doc["hosts"]["ws3"], port=_closed_port(), connect_timeout=2)
    inv.write_text(yaml.safe_dump(doc))
    pause = ws["ws2"].home / ".distribute-pause"
    sweep = write_yaml(tmp_path / "w.yaml", {
        "name": "waits", "requires": ["solver"],
        "run": {"command": "sleep 20", "cpus": 2}, "params": {"i": [1, 2, 3]}})
    head = start_head(tmp_path, "run", sweep, "-i", inv)
    try:
        wait_until_running(tmp_path, "waits")
        # The next job, linked on trial to the first while no job has ended (SPEC §5),
        # waits on ws3 until the first has run 2 s, then is queued again with the rest:
        # looked at once that is over (before, a look could come before the link).
        time.sleep(engine.TRIAL_SECONDS + 0.5)
        assert wait_for(lambda: not any(
            j["state"] == "STARTING" for j in json.loads(dssh(
                "status", "waits", "--json", cwd=tmp_path).stdout)["jobs"]), 30, 0.2)
        pause.write_text("")
        if os.geteuid() == 0:  # the workstation user's own pause file
            os.chown(pause, ws["ws2"].home.stat().st_uid, -1)
        why = dssh("why", "waits", "-i", inv, cwd=tmp_path)
        assert why.returncode == 0, explain(why)
        lines = why.stdout.splitlines()
        assert lines[0] == "default/waits: 2 job(s) queued"
        assert any("a head is driving it (pid " in line for line in lines)
        text = why.stdout
        assert "ws1   lacks solver (not among its capabilities in the inventory)" in text
        ws2 = text.split("\nws2", 1)[1].split("\nws3", 1)[0]
        assert "has 1 cpus; a job needs 2" in ws2
        assert f"paused by {pause}" in ws2
        ws3 = text.split("\nws3", 1)[1].split("\ngone", 1)[0]
        assert "busy now: 0 of 2 cpus free; held by " in ws3 and "default/waits: 1 job" in ws3
        assert "\ngone  unreachable: " in text
        data = json.loads(dssh("why", "waits", "i-3", "-i", inv, "--json", cwd=tmp_path).stdout)
        assert data["job"] == "i-3" and not any(h["can_run_now"] for h in data["hosts"])
        running = next(j for j in json.loads(dssh("status", "waits", "--json",
                                                  cwd=tmp_path).stdout)["jobs"]
                       if j["state"] == "RUNNING")
        about = dssh("why", "waits", running["job"], "-i", inv, cwd=tmp_path)
        assert f"{running['job']} is not queued: it is RUNNING on ws3" in about.stdout
        bad = dssh("why", "waits", "nojob", "-i", inv, cwd=tmp_path)
        assert bad.returncode == 2 and "no job 'nojob' in sweep default/waits" in bad.stderr
    finally:
        pause.unlink(missing_ok=True)
        dssh("cancel", "waits", "-i", inv, cwd=tmp_path)
        head.communicate(timeout=120)

"""The CLI as a user meets it: first run, lookup order, dry runs, templates, the lock,
progress on a terminal and in a pipe."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import dssh, explain, on_terminal, start_head, summary, wait_until_running, write_yaml

REPO = Path(__file__).resolve().parent.parent


def test_quickstart_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command: no inventory anywhere, so this machine alone is used."""
    ex = tmp_path / "quickstart"
    shutil.copytree(REPO / "examples/quickstart", ex, ignore=shutil.ignore_patterns("results"))
    proc = dssh("run", "quickstart/sweep.yaml", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    rows = summary(ex / "results/default/quickstart")
    assert len(rows) == 6 and {r["host"] for r in rows} == {"localhost"}
    out = (ex / "results/default/quickstart/alpha-0.5_steps-10/result.csv").read_text()
    assert out.splitlines()[0] == "step,x" and len(out.splitlines()) == 12
    assert "connected" in proc.stdout and "localhost" in proc.stdout


def test_template_runs_as_it_is(tmp_path: Path) -> None:
    proc = dssh("template", cwd=tmp_path)
    assert proc.returncode == 0 and "name:" in proc.stdout
    (tmp_path / "sweep.yaml").write_text(proc.stdout)
    proc = dssh("run", "sweep.yaml", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    rows = summary(tmp_path / "results/default/example-sweep")
    assert len(rows) == 6 and all(r["status"] == "COMPLETED" for r in rows)
    res = (tmp_path / "results/default/example-sweep/a0.1-coarse/result.txt").read_text()
    assert "alpha=0.1 mesh=coarse" in res


def test_python_template_runs_as_it_is(tmp_path: Path) -> None:
    proc = dssh("template", "python", cwd=tmp_path)
    assert proc.returncode == 0 and "requires: [python3]" in proc.stdout
    (tmp_path / "sweep.yaml").write_text(proc.stdout)
    inv = _local_inventory(tmp_path / "inventory.yaml", "here", ["python3"])
    proc = dssh("run", "sweep.yaml", "-i", inv, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    res = tmp_path / "results/default/python-sweep"
    rows = summary(res)
    assert len(rows) == 8 and all(r["status"] == "COMPLETED" for r in rows)
    out = json.loads((res / "re300-fine" / "drag.json").read_text())
    assert out["re"] == 300.0 and out["mesh"] == "fine" and out["drag"] > 0


def _local_inventory(path: Path, name: str, caps: list[str]) -> Path:
    return write_yaml(path, {"hosts": {name: {"connection": "local", "capabilities": caps}}})


def test_inventory_lookup_order(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "order", "run": {"command": "true"}})
    home = tmp_path / "home"
    cfg = _local_inventory(home / ".config/dssh/inventory.yaml", "from-config", [])
    cwd_inv = _local_inventory(tmp_path / "inventory.yaml", "from-cwd", [])
    env_inv = _local_inventory(tmp_path / "env.yaml", "from-env", [])
    flag_inv = _local_inventory(tmp_path / "flag.yaml", "from-flag", [])

    def used(*extra: str, env: dict | None = None) -> list[str]:
        proc = dssh("run", sweep, "--dry-run", "--json", *extra, cwd=tmp_path, home=home,
                    env=env)
        assert proc.returncode == 0, explain(proc)
        return list(json.loads(proc.stdout)["hosts"])

    assert used("-i", flag_inv, env={"DSSH_INVENTORY": str(env_inv)}) == ["from-flag"]
    assert used(env={"DSSH_INVENTORY": str(env_inv)}) == ["from-env"]
    assert used() == ["from-cwd"]
    cwd_inv.unlink()
    assert used() == ["from-config"]
    cfg.unlink()
    assert used() == ["localhost"]  # the embedded default


def test_dry_run_touches_nothing_and_shows_the_plan(tmp_path: Path) -> None:
    (tmp_path / "in.cfg").write_text("x\n")
    inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {
        "a": {"connection": "local", "capabilities": ["python3"], "cpus": 4},
        "b": {"connection": "local", "cpus": 2}}})
    sweep = write_yaml(tmp_path / "s.yaml", {
        "name": "plan", "requires": ["python3"],
        "run": {"command": "echo {x}", "files": ["in.cfg"], "cpus": 1},
        "params": {"x": [1, 2, 3]}})
    proc = dssh("run", sweep, "-i", inv, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "x-1" in proc.stdout and "x=3" in proc.stdout and "in.cfg" in proc.stdout
    assert "nothing was started" in proc.stdout and "not used" in proc.stdout
    lines = proc.stdout.splitlines()
    assert next(line for line in lines if line.startswith("x-1 ")).split() == [
        "x-1", "x=1", "in.cfg"]
    # The hosts that can take the jobs, once, not on every job's line.
    hosts = lines[lines.index("1 of 2 hosts can take these jobs:") + 3:]
    assert hosts[0].split()[:3] == ["a", "local", "4"] and hosts[1] == ""
    plan = json.loads(dssh("run", sweep, "-i", inv, "--dry-run", "--json", cwd=tmp_path).stdout)
    assert [j["name"] for j in plan["jobs"]] == ["x-1", "x-2", "x-3"]
    assert plan["jobs"][0]["hosts"] == ["a"] and plan["excluded_hosts"] == ["b"]
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "results").exists()
    assert not (tmp_path / "home/.dssh").exists()


def test_second_head_exits_3_and_names_the_first(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "locked",
                                             "run": {"command": "sleep 2", "cpus": 1}})
    first = start_head(tmp_path, "run", sweep)
    try:
        wait_until_running(tmp_path, "locked", timeout=20)
        second = dssh("run", sweep, cwd=tmp_path)
        assert second.returncode == 3, explain(second)
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
        assert "started" in second.stderr
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, (out, err)
    # The lock went with its head: the next run goes ahead (and finds nothing to do).
    again = dssh("run", sweep, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_killed_head_leaves_no_lock(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "killed",
                                             "run": {"command": "sleep 1", "cpus": 1}})
    head = start_head(tmp_path, "run", sweep)
    time.sleep(0.8)
    head.kill()
    head.wait()
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert summary(tmp_path / "results/default/killed")[0]["status"] == "COMPLETED"


def test_results_option_and_plain_progress_lines(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "where", "run": {
        "command": "echo hi > {output}/o.txt", "cpus": 1}, "params": {"i": [1, 2]}})
    proc = dssh("run", sweep, "--results", tmp_path / "elsewhere", cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert (tmp_path / "elsewhere/default/where/i-1/o.txt").read_text() == "hi\n"
    assert not (tmp_path / "results").exists()
    lines = proc.stdout.splitlines()
    # not a terminal: timestamped lines, no escape sequences that redraw
    assert "\x1b[" not in proc.stdout and "\r" not in proc.stdout
    assert all(line[:4].isdigit() and "T" in line[:11] for line in lines[:-1]), lines
    quiet = dssh("run", sweep, "-q", "--name", "where2", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout.count("\n") == 1


def test_live_progress_on_a_terminal(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "tty", "run": {
        "command": "sleep 0.5", "cpus": 1}, "params": {"i": [1, 2, 3, 4]}})
    code, text = on_terminal(tmp_path, ["run", str(sweep)], timeout=60)
    assert code == 0, text
    assert "\x1b[" in text  # the block is redrawn in place
    assert "[########################] 4/4" in text
    assert "done 4" in text and "localhost" in text


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["status"]])
def test_fast_commands_do_not_import_ssh(args: list[str], tmp_path: Path) -> None:
    code = ("import sys\nfrom distribute_ssh.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit: pass\n"
            "print('ASYNCSSH' if 'asyncssh' in sys.modules else 'LEAN')")
    env = dict(os.environ, DSSH_STATE=str(tmp_path / "s.db"), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env)
    assert proc.stdout.strip().endswith("LEAN"), proc.stdout + proc.stderr


def test_many_instant_jobs_finish(tmp_path: Path) -> None:
    """Jobs that end before their start is even recorded are collected all the same."""
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "instant", "run": {
        "command": "true", "cpus": 1}, "params": {"i": list(range(40))}})
    proc = dssh("run", sweep, "-q", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, explain(proc)
    assert len(summary(tmp_path / "results/default/instant")) == 40


def test_restart_asks_on_a_terminal(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "ask", "run": {
        "command": "echo {i} > {output}/o.txt", "cpus": 1}, "params": {"i": [1, 2]}})
    assert dssh("run", sweep, cwd=tmp_path).returncode == 0
    code, text = on_terminal(tmp_path, ["run", str(sweep), "--restart"], b"n\n")
    assert code == 2, text
    assert "forget 2 job(s)' state" in text and "Go ahead? [y/N]" in text
    assert "not confirmed; nothing was changed" in text
    assert not [p for p in (tmp_path / "results/default").iterdir() if ".replaced-" in p.name]
    code, text = on_terminal(tmp_path, ["run", str(sweep), "--restart"], b"y\n")
    assert code == 0, text
    assert "old results" in text
    assert [p for p in (tmp_path / "results/default").iterdir() if ".replaced-" in p.name]

"""The workstation belongs to its owner (SPEC §6): pause files, suspend and resume, with
and without a head, on real sshd workstations with a separate owner user."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    dssh,
    explain,
    owner_home,
    proc_states,
    start_head,
    summary,
    wait_for,
    write_yaml,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root to create the workstation owners' accounts")

OWNER = "dssh-owner"


@pytest.fixture(scope="module")
def owners() -> Iterator[Path]:
    """A directory of owners' homes: one open to others (0711), one closed (0700)."""
    base = Path(tempfile.mkdtemp(prefix="dssh-owners-"))
    base.chmod(0o755)
    for name, mode in ((f"{OWNER}1", 0o711), (f"{OWNER}2", 0o700)):
        owner_home(base, name, mode)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def as_owner(owner: str, *cmd: str) -> None:
    subprocess.run(["runuser", "-u", owner, "--", *cmd], check=True)


def flag(owners: Path, owner: str) -> Path:
    return owners / owner / ".distribute-pause"


# A job with a tree to stop: a busy child in its own session, a busy child in the job's
# group, and a main loop of short sleeps that counts running seconds into outputs/.
TREE_JOB = ("setsid sh -c 'while :; do :; done # dssh-busy-a' & "
            "sh -c 'while :; do :; done # dssh-busy-b' & "
            "n=0; while [ $n -lt {secs} ]; do sleep 1; n=$((n + 1)); echo $n > {output}/n.txt; "
            "done")


@pytest.fixture
def lab(tmp_path: Path, fresh_workdirs, owners: Path) -> dict:
    ws = fresh_workdirs
    for o in (f"{OWNER}1", f"{OWNER}2"):
        flag(owners, o).unlink(missing_ok=True)
    pause_files = ["~/.distribute-pause", str(owners / "*" / ".distribute-pause")]
    inv = ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w.name: {"cpus": 2, "pause_files": pause_files} for w in ws})
    return {"ws": ws, "inv": inv, "dir": tmp_path, "owners": owners}


def start_lab_head(lab: dict, sweep: Path, *extra: str) -> subprocess.Popen:
    return start_head(lab["dir"], "run", sweep, "-i", lab["inv"], *extra)


def test_owner_flag_suspends_whole_tree_and_job_completes(lab: dict) -> None:
    ws, owners, d = lab["ws"], lab["owners"], lab["dir"]
    w = ws.hosts[0]
    sweep = write_yaml(d / "s.yaml", {"name": "tree", "run": {
        "command": TREE_JOB.format(secs=4, output="{output}"), "cpus": 1, "timeout": "6s"}})
    head = start_lab_head(lab, sweep, "--hosts", "ws1")
    try:
        assert wait_for(lambda: len(proc_states(w.user, "dssh-busy")) == 2)
        time.sleep(1.2)
        as_owner(f"{OWNER}1", "touch", str(flag(owners, f"{OWNER}1")))
        t0 = time.monotonic()
        assert wait_for(lambda: set(proc_states(w.user, "dssh-busy")) == {"T"}, 3), \
            proc_states(w.user, "dssh-busy")
        stopped_after = time.monotonic() - t0
        assert stopped_after < 2.5
        st = json.loads(dssh("status", "tree", "--json", cwd=d).stdout)
        assert wait_for(lambda: json.loads(dssh("status", "tree", "--json", cwd=d).stdout)
                        ["jobs"][0]["state"] == "SUSPENDED", 5)
        st = json.loads(dssh("status", "tree", "--json", cwd=d).stdout)
        assert st["paused_hosts"][0]["host"] == "ws1"
        # Held for longer than the timeout's slack: paused time must not count.
        time.sleep(4)
        assert set(proc_states(w.user, "dssh-busy")) == {"T"}
        flag(owners, f"{OWNER}1").unlink()
        t0 = time.monotonic()
        assert wait_for(lambda: "T" not in proc_states(w.user, "dssh-busy"), 3)
        assert time.monotonic() - t0 < 2.5
        out, err = head.communicate(timeout=60)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, (out, err)
    assert "SUSPENDED" in out and "paused by" in out
    rows = summary(d / "results/default/tree")
    assert rows[0]["status"] == "COMPLETED"  # not TIMEOUT: 4 s of running time < 6 s
    assert float(rows[0]["seconds"]) > 7  # it really was held
    assert (d / "results/default/tree/tree/n.txt").read_text() == "4\n"
    assert proc_states(w.user, "dssh-busy") == []  # its leftovers went with it


def test_closed_home_is_invisible_and_named_by_hosts(lab: dict) -> None:
    owners, d = lab["owners"], lab["dir"]
    as_owner(f"{OWNER}2", "touch", str(flag(owners, f"{OWNER}2")))
    proc = dssh("hosts", "-i", lab["inv"], "--json", cwd=d)
    assert proc.returncode == 0, explain(proc)
    rows = {r["host"]: r for r in json.loads(proc.stdout)}
    r = rows["ws1"]
    assert not r["paused"]
    assert str(owners / f"{OWNER}2") in r["closed_homes"]
    assert any("chmod o+x ~" in n and "/tmp/.distribute-pause" in n
               and "so is a .distribute-policy" in n for n in r["notes"])
    text = dssh("hosts", "-i", lab["inv"], cwd=d).stdout
    assert f"cannot look into {owners / (OWNER + '2')}" in text
    # the open home's flag is seen, with its owner
    as_owner(f"{OWNER}1", "sh", "-c", f"echo 45m > {flag(owners, OWNER + '1')}")
    rows = {r["host"]: r for r in json.loads(
        dssh("hosts", "-i", lab["inv"], "--json", cwd=d).stdout)}
    p = rows["ws2"]["paused_by"][0]
    assert p["owner"] == f"{OWNER}1" and p["kind"] == "duration"
    assert 44 * 60 < p["until"] - time.time() <= 45 * 60
    # shown as a time, not as the file says it (a word of its own: the temp dirs' random
    # names in the same table may hold "45m", as in dssh-owners-yd245m6e)
    shown = dssh("hosts", "-i", lab["inv"], cwd=d).stdout
    assert re.search(r"\b45m\b", shown) is None, shown
    assert re.search(r"\buntil (\d\d-\d\d )?\d\d:\d\d\b", shown), shown


def test_paused_before_start_other_hosts_take_the_work(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    pf = ws.hosts[0].home / ".distribute-pause"
    pf.write_text("")  # the SSH user's own flag
    sweep = write_yaml(d / "p.yaml", {"name": "before", "run": {
        "command": "sleep 0.3", "cpus": 1}, "params": {"i": list(range(8))}})
    try:
        proc = dssh("run", sweep, "-i", lab["inv"], cwd=d)
    finally:
        pf.unlink()
    assert proc.returncode == 0, explain(proc)
    rows = summary(d / "results/default/before")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 8
    assert {r["host"] for r in rows} <= {"ws2", "ws3"}, rows  # none on the paused ws1
    assert "ws1: paused by" in proc.stdout


def test_only_capable_host_paused_waits_and_says_so(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    pf = ws.hosts[0].home / ".distribute-pause"
    pf.write_text("3s")
    sweep = write_yaml(d / "o.yaml", {"name": "only", "run": {
        "command": "echo ran > {output}/r.txt", "cpus": 1}})
    t0 = time.monotonic()
    try:
        proc = dssh("run", sweep, "-i", lab["inv"], "--hosts", "ws1", cwd=d)
    finally:
        pf.unlink()  # expired, but a later touch would pause ws1 for 3 s again
    assert proc.returncode == 0, explain(proc)
    assert time.monotonic() - t0 >= 2  # it waited for the pause (3 s from the file's mtime)
    assert "every capable host is paused" in proc.stdout
    assert "no longer paused" in proc.stdout


def test_expired_and_odd_pause_files(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    home = ws.hosts[1].home
    pf = home / ".distribute-pause"
    pf.write_text("1m")
    old = time.time() - 120
    os.utime(pf, (old, old))  # 1 minute from two minutes ago: expired
    rows = {r["host"]: r for r in json.loads(
        dssh("hosts", "-i", lab["inv"], "--json", cwd=d).stdout)}
    assert not rows["ws2"]["paused"]
    assert rows["ws2"]["expired_pause_files"][0]["file"] == str(pf)
    assert any("expired" in n for n in rows["ws2"]["notes"])
    # binary, huge, and symlinked files count as a plain flag; nothing outside is read
    def unreadable() -> None:
        pf.write_text("2h\n")
        pf.chmod(0)  # the SSH user cannot read the duration: a plain flag

    for make in (lambda: pf.write_bytes(os.urandom(200000)),
                 lambda: pf.symlink_to("/etc/shadow"),
                 lambda: pf.write_text("not a duration\n"),
                 unreadable):
        pf.unlink(missing_ok=True)
        make()
        rows = {r["host"]: r for r in json.loads(
            dssh("hosts", "-i", lab["inv"], "--json", cwd=d).stdout)}
        assert rows["ws2"]["paused"], pf
        assert rows["ws2"]["paused_by"][0]["kind"] == "flag"
        until = rows["ws2"]["paused_by"][0]["until"] - time.time()
        assert 23 * 3600 < until <= 24 * 3600  # max_pause, 24 h by default
    pf.unlink()


def test_drain_lets_running_jobs_finish(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    w = ws.hosts[2]
    inv = ws.write_inventory(d / "drain.yaml", overrides={
        "ws3": {"cpus": 1, "on_pause": "drain",
                "pause_files": ["~/.distribute-pause"]}})
    lab = dict(lab, inv=inv)
    sweep = write_yaml(d / "dr.yaml", {"name": "drain", "run": {
        "command": "sh -c 'while :; do :; done # dssh-busy-d' & sleep 3; kill $!",
        "cpus": 1}, "params": {"i": [1, 2]}})
    head = start_lab_head(lab, sweep, "--hosts", "ws3")
    try:
        assert wait_for(lambda: len(proc_states(w.user, "dssh-busy-d")) == 1)
        (w.home / ".distribute-pause").write_text("4s")
        time.sleep(2)
        assert proc_states(w.user, "dssh-busy-d") == ["R"]  # drain: not stopped
        out, err = head.communicate(timeout=60)
    finally:
        if head.poll() is None:
            head.kill()
        (w.home / ".distribute-pause").unlink(missing_ok=True)
    assert head.returncode == 0, (out, err)
    rows = {r["job"]: r for r in summary(d / "results/default/drain")}
    # the second job could only start once the 4 s pause was over
    first_end = time.mktime(time.strptime(rows["i-1"]["finished"][:19], "%Y-%m-%dT%H:%M:%S"))
    second_start = time.mktime(time.strptime(rows["i-2"]["started"][:19],
                                             "%Y-%m-%dT%H:%M:%S"))
    assert second_start >= first_end
    assert "paused by" in out


def test_pause_with_the_head_killed_then_a_new_head_collects(lab: dict) -> None:
    ws, owners, d = lab["ws"], lab["owners"], lab["dir"]
    w = ws.hosts[0]
    sweep = write_yaml(d / "k.yaml", {"name": "headless", "run": {
        "command": TREE_JOB.format(secs=3, output="{output}"), "cpus": 1}})
    head = start_lab_head(lab, sweep, "--hosts", "ws1")
    assert wait_for(lambda: len(proc_states(w.user, "dssh-busy")) == 2)
    head.send_signal(signal.SIGKILL)
    head.wait()
    as_owner(f"{OWNER}1", "touch", str(flag(owners, f"{OWNER}1")))
    assert wait_for(lambda: set(proc_states(w.user, "dssh-busy")) == {"T"}, 3)
    time.sleep(2)
    assert set(proc_states(w.user, "dssh-busy")) == {"T"}  # held with no head at all
    flag(owners, f"{OWNER}1").unlink()
    assert wait_for(lambda: "T" not in proc_states(w.user, "dssh-busy"), 3)
    proc = dssh("run", sweep, "-i", lab["inv"], "--hosts", "ws1", cwd=d)
    assert proc.returncode == 0, explain(proc)
    assert summary(d / "results/default/headless")[0]["status"] == "COMPLETED"


def test_pause_and_resume_from_afar(lab: dict) -> None:
    ws, owners, d = lab["ws"], lab["owners"], lab["dir"]
    w = ws.hosts[1]
    proc = dssh("pause", "ws2", "-i", lab["inv"], "--for", "2h", cwd=d)
    assert proc.returncode == 0, explain(proc)
    assert (w.home / ".distribute-pause").read_text() == "2h\n"
    rows = {r["host"]: r for r in json.loads(
        dssh("hosts", "-i", lab["inv"], "--json", cwd=d).stdout)}
    assert rows["ws2"]["paused"] and rows["ws2"]["paused_by"][0]["kind"] == "duration"
    as_owner(f"{OWNER}1", "touch", str(flag(owners, f"{OWNER}1")))
    proc = dssh("resume", "ws2", "-i", lab["inv"], cwd=d)
    assert proc.returncode == 0, explain(proc)
    assert not (w.home / ".distribute-pause").exists()
    assert "still paused by" in proc.stdout and f"{OWNER}1" in proc.stdout
    flag(owners, f"{OWNER}1").unlink()
    proc = dssh("resume", "ws2", "-i", lab["inv"], cwd=d)
    assert "no longer paused" in proc.stdout
    bad = dssh("pause", "ws2", "-i", lab["inv"], "--for", "forever", cwd=d)
    assert bad.returncode == 2 and "--for 'forever'" in bad.stderr
    bad = dssh("pause", "nohost", "-i", lab["inv"], cwd=d)
    assert bad.returncode == 2 and "no host 'nohost'" in bad.stderr


def test_a_build_in_progress_is_suspended_like_a_job(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    w = ws.hosts[1]
    (d / "build.sh").write_text(
        "sh -c 'while :; do :; done # dssh-busy-build' & b=$!\n"
        "n=0; while [ $n -lt 3 ]; do sleep 1; n=$((n + 1)); done\n"
        "kill $b; echo built > built.txt\n")
    sweep = write_yaml(d / "b.yaml", {"name": "buildpause",
                                      "build": {"files": ["build.sh"], "command": "sh build.sh"},
                                      "run": {"command": "cat {build}/built.txt", "cpus": 1}})
    head = start_lab_head(lab, sweep, "--hosts", "ws2")
    try:
        assert wait_for(lambda: proc_states(w.user, "dssh-busy-build") == ["R"])
        (w.home / ".distribute-pause").write_text("")
        assert wait_for(lambda: proc_states(w.user, "dssh-busy-build") == ["T"], 3)
        time.sleep(3)  # longer than the build's own 3 s: it must still be held
        assert proc_states(w.user, "dssh-busy-build") == ["T"]
        assert not list((w.workdir / "builds").glob("*/built.txt"))
        (w.home / ".distribute-pause").unlink()
        out, err = head.communicate(timeout=60)
    finally:
        (w.home / ".distribute-pause").unlink(missing_ok=True)
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, (out, err)
    assert (d / "results/default/buildpause/buildpause/stdout.txt").read_text() == "built\n"

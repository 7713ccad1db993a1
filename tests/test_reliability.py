"""SPEC §7 cases the fault-injection suite does not time at random: the head's own disk
refusing results, and a host lost past its grace that comes back with the old copy."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import dssh, explain, job_json, start_head, summary, write_yaml


def _starts(ws_set) -> dict[str, int]:
    out: dict[str, int] = {}
    for ws in ws_set:
        log = ws.home / "starts.log"
        if log.exists():
            for name in log.read_text().split():
                out[name] = out.get(name, 0) + 1
    return out


@pytest.fixture
def lab(tmp_path: Path, fresh_workdirs) -> Path:
    for w in fresh_workdirs:
        (w.home / "starts.log").unlink(missing_ok=True)
    fresh_workdirs.write_inventory(tmp_path / "inventory.yaml", overrides={
        "ws1": {"cpus": 2}, "ws2": {"cpus": 2}, "ws3": {"cpus": 2}})
    return tmp_path


def _immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True,
                   capture_output=True)


def _can_chattr(tmp: Path) -> bool:
    probe = tmp / "chattr-probe"
    probe.mkdir()
    try:
        _immutable(probe, True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False
    _immutable(probe, False)
    return True


def test_unwritable_results_dir_leaves_jobs_uncollected_and_a_later_run_collects(
        lab: Path, fresh_workdirs) -> None:
    if not _can_chattr(lab):
        pytest.skip("chattr +i does not work on this file system (as root it is the only "
                    "way to make a dir unwritable)")
    ws = fresh_workdirs
    sweep = write_yaml(lab / "ro.yaml", {"name": "ro", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; echo {i} > {output}/o.txt",
        "cpus": 1}, "params": {"i": [1, 2, 3, 4]}})
    results = lab / "results/default/ro"
    results.mkdir(parents=True)
    _immutable(results, True)
    try:
        proc = dssh("run", sweep, "-i", lab / "inventory.yaml", cwd=lab)
        assert proc.returncode == 1, explain(proc)
        assert "not collected" in proc.stdout, explain(proc)
        assert "4 job(s) ended but could not be collected" in proc.stderr, explain(proc)
        assert "Operation not permitted" in proc.stderr
        assert f"dssh run {sweep}" in proc.stderr  # says how to collect them later
        status = dssh("status", "ro", "--json", cwd=lab)
        jobs = json.loads(status.stdout)["jobs"]
        assert {j["state"] for j in jobs} == {"RUNNING"}, status.stdout
        assert all("not collected" in (j.get("reason") or "") for j in jobs), status.stdout
        # the outputs wait on the hosts
        left = [p for w in ws for p in w.workdir.glob("jobs/default/ro/*/1/outputs/o.txt")]
        assert len(left) == 4
    finally:
        _immutable(results, False)
    proc = dssh("run", sweep, "-i", lab / "inventory.yaml", cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert _starts(ws) == {f"i-{i}": 1 for i in (1, 2, 3, 4)}  # collected, not run again
    rows = summary(results)
    assert {r["status"] for r in rows} == {"COMPLETED"} and len(rows) == 4
    for i in (1, 2, 3, 4):
        assert (results / f"i-{i}/o.txt").read_text() == f"{i}\n"
        assert job_json(results, f"i-{i}")["attempts"] == 1


def test_full_results_disk_is_reported_and_nothing_half_written_is_done(
        lab: Path, fresh_workdirs) -> None:
    """A results dir on a small file system: the outputs that do not fit stay on the host."""
    mnt = lab / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        sweep = write_yaml(lab / "big.yaml", {"name": "big", "run": {
            "command": "echo $DSSH_JOB >> $HOME/starts.log; "
                       "head -c 1500000 /dev/zero > {output}/blob.bin", "cpus": 1},
            "params": {"i": [1, 2, 3, 4]}})
        proc = dssh("run", sweep, "-i", lab / "inventory.yaml", "--results", mnt, cwd=lab)
        assert proc.returncode == 1, explain(proc)
        assert "not collected" in proc.stdout and "No space left" in proc.stderr, explain(proc)
        results = mnt / "default/big"
        done = [d for d in results.iterdir() if (d / "job.json").exists()]
        assert 1 <= len(done) < 4
        for d in done:  # what is there is whole
            assert (d / "blob.bin").stat().st_size == 1500000
        assert not list(results.glob(".incoming/*"))  # no half-written leftovers
        # more room: move the results to a bigger disk and run again
        bigger = lab / "results"
        shutil.copytree(mnt, bigger)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    proc = dssh("run", sweep, "-i", lab / "inventory.yaml", "--results", bigger, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert _starts(fresh_workdirs) == {f"i-{i}": 1 for i in (1, 2, 3, 4)}
    rows = summary(bigger / "default/big")
    assert {r["status"] for r in rows} == {"COMPLETED"} and len(rows) == 4


def _wait(cond, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def _head(cwd: Path, *args: str | Path, hosts=()) -> Iterator[subprocess.Popen[str]]:
    """A head started in the background; afterwards it is killed if still running, and
    any of ``hosts`` a test stopped is started again."""
    head = start_head(cwd, *args)
    try:
        yield head
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        for w in hosts:
            if not w.running:
                w.start()


def _procs(user: str, needle: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "user:32,args"], capture_output=True, text=True).stdout
    return [ln for ln in ps.splitlines() if ln.split(None, 1)[0] == user and needle in ln]


def test_lost_host_back_after_its_grace_has_its_old_copy_stopped(lab: Path,
                                                                  fresh_workdirs) -> None:
    """ws1 vanishes, its job is requeued on ws2 after ws1's grace; when ws1 comes back with
    the old copy still running, that copy is stopped and removed: one result, one live copy."""
    hosts = fresh_workdirs.hosts
    inv = write_yaml(lab / "three.yaml", {"hosts": {
        w.name: w.inventory_entry(cpus=1, host_grace="2s") for w in hosts}})
    sweep = write_yaml(lab / "lost.yaml", {"name": "lost", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; sleep 15; echo $HOME > {output}/o.txt",
        "cpus": 1}, "params": {"i": [1, 2]}})
    with _head(lab, "run", sweep, "-i", inv, hosts=hosts) as head:
        _wait(lambda: len(_starts(hosts)) == 2, what="2 starts")
        ws1 = next(w for w in hosts if _starts([w]))
        (moved,) = _starts([ws1])
        ws1.stop()  # the job on ws1 runs on, unseen
        _wait(lambda: _starts(hosts).get(moved) == 2, what="the requeued copy")
        (ws2,) = [w for w in hosts if w is not ws1 and moved in _starts([w])]
        assert _procs(ws1.user, "sleep 15")  # the old copy is still alive
        ws1.start()
        out, err = head.communicate(timeout=120)
    assert head.returncode == 0, (out, err)
    assert f"{moved}: stopped and removed an old copy (attempt 1) on {ws1.name}" in out, out
    assert not _procs(ws1.user, "sleep 15")
    assert not list(ws1.workdir.glob(f"jobs/default/lost/{moved}/*"))
    results = lab / "results/default/lost"
    info = job_json(results, moved)
    assert info["host"] == ws2.name and info["attempts"] == 2
    assert (results / moved / "o.txt").read_text().strip() == str(ws2.home)
    assert {r["status"] for r in summary(results)} == {"COMPLETED"}
    events = dssh("status", "lost", "--events", cwd=lab)
    assert "stray-stopped" in events.stdout, explain(events)


def test_old_copy_is_taken_back_when_the_job_was_not_restarted_elsewhere(
        lab: Path, fresh_workdirs) -> None:
    """The only host vanishes past its grace: the head gives up (exit 4). The next run finds
    the host back with the job's copy still going, and follows it instead of starting anew."""
    ws1 = fresh_workdirs.hosts[0]
    inv = write_yaml(lab / "one.yaml", {"hosts": {
        "a": ws1.inventory_entry(cpus=1, host_grace="2s")}})
    sweep = write_yaml(lab / "back.yaml", {"name": "back", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; sleep 6; echo done > {output}/o.txt",
        "cpus": 1}, "params": {"i": [1]}})
    with _head(lab, "run", sweep, "-i", inv, hosts=[ws1]) as head:
        _wait(lambda: len(_starts([ws1])) == 1, what="the start")
        ws1.stop()
        out, err = head.communicate(timeout=60)
    assert head.returncode == 4, (out, err)
    assert "requeued" in out
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert "re-attached" in proc.stdout, explain(proc)
    assert _starts([ws1]) == {"i-1": 1}
    assert job_json(lab / "results/default/back", "i-1")["attempts"] == 1
    assert (lab / "results/default/back/i-1/o.txt").read_text() == "done\n"


def test_two_heads_on_one_sweep_never_start_a_job_twice_on_a_host(lab: Path,
                                                                    fresh_workdirs) -> None:
    """Two heads with their own state files (as on two machines) drive the same sweep at
    once: the host-side job dirs keep each job to one start per host, and every job's
    results end up complete in one head's results dir or both."""
    ws = fresh_workdirs
    sweep = write_yaml(lab / "twin.yaml", {"name": "twin", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; sleep 1; echo ok > {output}/o.txt",
        "cpus": 1}, "params": {"i": list(range(9))}})
    heads = []
    for side in ("a", "b"):
        d = lab / side
        d.mkdir()
        heads.append((d, start_head(d, "run", sweep, "-i", lab / "inventory.yaml",
                                    "--results", d / "results")))
    outs = {}
    for d, head in heads:
        try:
            outs[d.name] = head.communicate(timeout=120)
        finally:
            if head.poll() is None:
                head.kill()
    for w in ws:  # the guarantee: never the same job twice on one host
        per_host = _starts([w])
        assert all(n == 1 for n in per_host.values()), (w.name, per_host, outs)
    done: dict[str, list[str]] = {}
    for d, _ in heads:
        for row in summary(d / "results/default/twin"):
            if row["status"] == "COMPLETED":
                assert (d / "results/default/twin" / row["job"] / "o.txt").read_text() == "ok\n"
                done.setdefault(row["job"], []).append(d.name)
            else:
                assert row["status"] == "FAILED", row
                status = json.loads(dssh("status", "twin", "--json", cwd=d).stdout)
                (mine,) = [j for j in status["jobs"] if j["job"] == row["job"]]
                assert "another head took its results" in mine["reason"], mine
    assert set(done) == {f"i-{i}" for i in range(9)}, (done, outs)
    for w in ws:  # what stays on the hosts: the marks of collected runs (who claimed the
        # dir, who took its results), nothing else
        for d in w.workdir.glob("jobs/default/twin/*/*"):
            left = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
            assert left == [".dssh", ".dssh/claim", ".dssh/collected"], (d, left)


def test_a_head_that_lost_its_state_runs_the_sweep_again_and_old_marks_are_tidied(
        lab: Path, fresh_workdirs) -> None:
    """The marks collected runs leave on hosts stop other heads, not this one: with its
    state file gone, a head runs the sweep anew. Marks a week old are removed."""
    ws = fresh_workdirs
    sweep = write_yaml(lab / "again.yaml", {"name": "again", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; echo {i} > {output}/o.txt",
        "cpus": 1}, "params": {"i": [1, 2, 3]}})
    assert dssh("run", sweep, "-i", lab / "inventory.yaml", cwd=lab).returncode == 0
    marks = [p for w in ws for p in w.workdir.glob("jobs/default/again/*/1/.dssh/collected")]
    assert len(marks) == 3
    old = ws.hosts[0].workdir / "jobs/default/ancient/j/1/.dssh/collected"
    old.parent.mkdir(parents=True)
    old.write_text("someone@elsewhere:/results\n")
    subprocess.run(["touch", "-d", "10 days ago", str(old)], check=True)
    subprocess.run(["chown", "-R", ws.hosts[0].user, str(ws.hosts[0].workdir / "jobs")],
                   check=True)
    (lab / "state.db").unlink()
    proc = dssh("run", sweep, "-i", lab / "inventory.yaml", cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert _starts(ws) == {"i-1": 2, "i-2": 2, "i-3": 2}
    assert {r["status"] for r in summary(lab / "results/default/again")} == {"COMPLETED"}
    _wait(lambda: not old.exists(), timeout=10, what="the week-old mark to go")
    assert marks[0].parent.parent.parent.exists()  # this week's marks stay


def test_old_marks_are_tidied_while_the_last_jobs_run_not_after_them(
        lab: Path, fresh_workdirs) -> None:
    """Once nothing is left to start, a host's week-old marks go in the background while
    the last jobs run: a run whose end waited for that look through every collected run
    on the host ended later than its last job by as much. Here the job waits for the
    old mark to go: it would wait in vain, were the tidy kept for the end."""
    w = fresh_workdirs.hosts[0]
    inv = write_yaml(lab / "one.yaml", {"hosts": {w.name: w.inventory_entry(cpus=1)}})
    old = w.workdir / "jobs/default/ancient/j/1/.dssh/collected"
    old.parent.mkdir(parents=True)
    old.write_text("someone@elsewhere:/results\n")
    subprocess.run(["touch", "-d", "10 days ago", str(old)], check=True)
    subprocess.run(["chown", "-R", w.user, str(w.workdir)], check=True)
    sweep = write_yaml(lab / "tidy.yaml", {"name": "tidy", "run": {
        "command": f"i=0; while [ -e {old} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); "
                   f"done; if [ -e {old} ]; then echo still; else echo gone; fi "
                   "> {output}/o.txt", "cpus": 1}, "params": {"i": [1]}})
    assert old.exists()
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert (lab / "results/default/tidy/i-1/o.txt").read_text() == "gone\n"
    assert not old.exists()


def test_old_copy_on_a_host_still_gone_at_the_end_is_stopped_by_the_next_run(
        lab: Path, fresh_workdirs) -> None:
    hosts = fresh_workdirs.hosts
    inv = write_yaml(lab / "three.yaml", {"hosts": {
        w.name: w.inventory_entry(cpus=1, host_grace="1s") for w in hosts}})
    sweep = write_yaml(lab / "gone.yaml", {"name": "gone", "run": {
        # the first attempt outlives the run of the second
        "command": "echo $DSSH_JOB >> $HOME/starts.log; "
                   "if [ $DSSH_ATTEMPT = 1 ]; then sleep 60; fi; echo ok > {output}/o.txt",
        "cpus": 1}, "params": {"i": [1]}})
    with _head(lab, "run", sweep, "-i", inv, hosts=hosts) as head:
        _wait(lambda: len(_starts(hosts)) == 1, what="the start")
        ws1 = next(w for w in hosts if _starts([w]))
        ws1.stop()
        out, err = head.communicate(timeout=60)
        assert head.returncode == 0, (out, err)
        assert "may still run on " + ws1.name in out, out
        assert _procs(ws1.user, "sleep 60")  # out of reach, still running
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert "already complete" in proc.stdout
    assert "stopped and removed an old copy (attempt 1)" in proc.stdout, explain(proc)
    assert not _procs(ws1.user, "sleep 60")


def test_a_rebooted_host_has_its_vanished_jobs_requeued(lab: Path, fresh_workdirs) -> None:
    """A reboot, as seen from the head: the connection drops, and when the host answers
    again the job's processes are gone, its dir is there, and the host's boot id differs
    from the one the wrapper wrote. Not the job's fault: it runs again, retries or not."""
    ws1 = fresh_workdirs.hosts[0]
    inv = write_yaml(lab / "one.yaml", {"hosts": {"a": ws1.inventory_entry(cpus=1)}})
    sweep = write_yaml(lab / "boot.yaml", {"name": "boot", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; "
                   "if [ $DSSH_ATTEMPT = 1 ]; then sleep 60; fi; echo ok > {output}/o.txt",
        "cpus": 1, "retries": 0}, "params": {"i": [1]}})
    with _head(lab, "run", sweep, "-i", inv, hosts=[ws1]) as head:
        _wait(lambda: _starts([ws1]) == {"i-1": 1}, what="the start")
        boot_id = ws1.workdir / "jobs/default/boot/i-1/1/.dssh/boot_id"
        _wait(boot_id.exists, what="the wrapper's boot id")
        ws1.stop(user_processes=True)  # every process of the user dies, as in a reboot
        boot_id.write_text("00000000-0000-0000-0000-000000000000\n")  # ...and a new boot
        time.sleep(1)
        ws1.start()
        out, err = head.communicate(timeout=60)
    assert head.returncode == 0, (out, err)
    assert "i-1: lost on a (it rebooted); requeued" in out, out
    assert _starts([ws1]) == {"i-1": 2}
    info = job_json(lab / "results/default/boot", "i-1")
    assert info["status"] == "COMPLETED" and info["attempts"] == 2
    # the vanished attempt's dir is gone (only the collected run's mark is left)
    assert not (ws1.workdir / "jobs/default/boot/i-1/1").exists()


@pytest.mark.parametrize("retries", [0, 1])
def test_a_job_killed_with_its_wrapper_is_a_failure_retried_as_retries_allow(
        lab: Path, fresh_workdirs, retries: int) -> None:
    """kill -9 of every process of the job, its wrapper too (as the OOM killer or an
    impatient owner might), on a host that did not reboot: FAILED with exit 137 and a
    note, its stdout kept; retried only if `retries` allows."""
    ws1 = fresh_workdirs.hosts[0]
    inv = write_yaml(lab / "one.yaml", {"hosts": {"a": ws1.inventory_entry(cpus=1)}})
    sweep = write_yaml(lab / f"k{retries}.yaml", {"name": f"k{retries}", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; echo partial; "
                   "if [ $DSSH_ATTEMPT = 1 ]; then sleep 60; fi; echo ok > {output}/o.txt",
        "cpus": 1, "retries": retries}, "params": {"i": [1]}})
    with _head(lab, "run", sweep, "-i", inv) as head:
        _wait(lambda: _starts([ws1]) == {"i-1": 1}, what="the start")
        _wait(lambda: (ws1.workdir / f"jobs/default/k{retries}/i-1/1/.dssh/pid").exists(),
              what="the wrapper's pid")
        ws1.kill_user_processes()  # the job and its wrapper; the sshd sessions survive
        out, err = head.communicate(timeout=60)
    results = lab / f"results/default/k{retries}"
    info = job_json(results, "i-1")
    status = json.loads(dssh("status", f"k{retries}", "--json", cwd=lab).stdout)["jobs"][0]
    if retries:
        assert head.returncode == 0, (out, err)
        assert _starts([ws1]) == {"i-1": 2}
        assert info["status"] == "COMPLETED" and info["attempts"] == 2
    else:
        assert head.returncode == 1, (out, err)
        assert _starts([ws1]) == {"i-1": 1}
        assert info["status"] == "FAILED" and info["exit_code"] == 137
        assert "killed from outside" in status["reason"], status
        assert (results / "i-1/stdout.txt").read_text() == "partial\n"
    assert not _procs(ws1.user, "sleep 60")


def test_a_start_cut_short_before_its_wrapper_ran_is_started_again(lab: Path,
                                                                    fresh_workdirs) -> None:
    """A head killed between marking a run launched and forking its wrapper leaves a dir
    that says "launched" with no wrapper pid. Once that is older than a start can take
    (30 s), the next head starts the job afresh instead of waiting for it forever."""
    ws1 = fresh_workdirs.hosts[0]
    inv = write_yaml(lab / "one.yaml", {"hosts": {"a": ws1.inventory_entry(cpus=1)}})
    sweep = write_yaml(lab / "cut.yaml", {"name": "cut", "run": {
        "command": "echo $DSSH_JOB >> $HOME/starts.log; if [ -e $HOME/slow ]; then sleep 30; "
                   "fi; echo ok > {output}/o.txt", "cpus": 1}, "params": {"i": [1]}})
    (ws1.home / "slow").touch()
    head = start_head(lab, "run", sweep, "-i", inv)
    ctl = ws1.workdir / "jobs/default/cut/i-1/1/.dssh"
    try:
        _wait(lambda: (ctl / "job_pid").exists(), what="the start")
    finally:
        head.kill()
        head.wait()
    # Make the host look as if the wrapper had never been forked: no processes, no pid.
    ws1.kill_user_processes()
    for f in ("pid", "job_pid", "boot_id", "started", "stdout.txt", "stderr.txt"):
        (ctl / f).unlink(missing_ok=True)
    subprocess.run(["touch", "-d", "1 minute ago", str(ctl / "launched")], check=True)
    (ws1.home / "starts.log").unlink()
    (ws1.home / "slow").unlink()
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert _starts([ws1]) == {"i-1": 1}
    assert job_json(lab / "results/default/cut", "i-1")["status"] == "COMPLETED"

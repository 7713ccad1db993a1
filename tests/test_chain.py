"""Chains (SPEC §5): a slot of a host is handed a few short jobs at once, and its wrapper
starts each when the one before it has ended. First the wrapper itself, run here by
``sh`` on run dirs made as a head makes them; then whole sweeps on real sshd workstations:
every job runs exactly once, through a pause, and through a head killed and resumed."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from helpers import dssh, start_head, summary, wait_for, write_yaml

WRAPPER = Path(__file__).resolve().parent.parent / "distribute_ssh" / "remote" / "wrapper.sh"


def _chain(base: Path, n: int, command: str = "echo $$ > outputs/me.txt") -> list[Path]:
    """n run dirs, each naming the next in its .dssh/next, as a batch of starts makes them."""
    dirs = [base / "jobs" / f"j{i}.1" for i in range(n)]
    for i, d in enumerate(dirs):
        (d / ".dssh").mkdir(parents=True)
        (d / "outputs").mkdir()
        (d / ".dssh" / "command.sh").write_text(command + "\n")
        if i + 1 < n:
            (d / ".dssh" / "next").write_text(f"{dirs[i + 1]}\nj{i + 1}.1\n")
    (dirs[0] / ".dssh" / "launched").write_text("")
    return dirs


def _start_wrapper(base: Path, first: Path, pause_files: str = "/nonexistent/pause",
                   on_pause: str = "drain", timeout: int = 0) -> subprocess.Popen[bytes]:
    """Start the wrapper on the chain from ``first``, as a batch starts it."""
    conf = base / "pause.conf"
    conf.write_text(f"max_pause 3600\non_pause {on_pause}\nfile {pause_files}\n")
    claim = base / "claim"
    claim.write_text("user me\njob j0.1\ndir x\n")
    return subprocess.Popen(["sh", str(WRAPPER), str(first), str(timeout),
                             str(base / "events"), "j0.1", str(conf), str(claim)],
                            stdin=subprocess.DEVNULL)


def _run_wrapper(base: Path, first: Path, pause_files: str = "/nonexistent/pause") -> Path:
    """Run the wrapper on the chain from ``first`` to its end; its claim."""
    assert _start_wrapper(base, first, pause_files).wait(timeout=60) == 0
    return base / "claim"


def test_a_chain_runs_in_one_wrapper_one_job_after_the_other(tmp_path: Path) -> None:
    dirs = _chain(tmp_path, 5)
    claim = _run_wrapper(tmp_path, dirs[0])
    pids = {(d / ".dssh" / "pid").read_text() for d in dirs}
    assert len(pids) == 1, pids  # one wrapper for the whole chain
    assert all((d / ".dssh" / "exit_code").read_text() == "0\n" for d in dirs)
    # each job ran on its own (its own shell, its own dir), after the one before it ended
    assert len({(d / "outputs" / "me.txt").read_text() for d in dirs}) == 5
    starts = [(d / ".dssh" / "started").stat().st_mtime_ns for d in dirs]
    ends = [(d / ".dssh" / "finished").stat().st_mtime_ns for d in dirs]
    assert all(ends[i] <= starts[i + 1] for i in range(4)), (starts, ends)
    # (a chain's runs are not told as taken: a head knows what it handed over)
    assert (tmp_path / "events").read_text().splitlines() == [f"j{i}.1 0" for i in range(5)]
    # the claim went on from job to job, and was given back once, at the end
    text = claim.read_text().splitlines()
    assert [ln for ln in text if ln.startswith("job ")][-1] == "job j4.1"
    assert [ln for ln in text if ln.startswith("dir ")][-1] == f"dir {dirs[4]}"
    assert text[-1] == "ended" and text.count("ended") == 1
    assert sum(ln.startswith("pid ") for ln in text) == 1


def test_a_paused_host_gives_the_rest_of_the_chain_back(tmp_path: Path) -> None:
    flag = tmp_path / "pause-me"
    dirs = _chain(tmp_path, 4, command=f"echo ran > outputs/r.txt; touch {flag}")
    claim = _run_wrapper(tmp_path, dirs[0], pause_files=str(flag))
    # the first job ran (and its owner paused the host meanwhile): nothing more started
    assert (dirs[0] / ".dssh" / "exit_code").read_text() == "0\n"
    assert not any(d.exists() for d in dirs[1:]), "the jobs given back must be gone"
    # (given back before the end is told: a head hearing the end knows what follows)
    assert (tmp_path / "events").read_text().splitlines() == [
        "~withdrawn j1.1", "~withdrawn j2.1", "~withdrawn j3.1", "j0.1 0"]
    assert claim.read_text().splitlines()[-1] == "ended"


def test_a_run_taken_back_first_is_not_started_and_the_chain_stops(tmp_path: Path) -> None:
    dirs = _chain(tmp_path, 3)
    # a head took j1 back (remote.withdraw): its launched is there before the wrapper's
    from distribute_ssh import remote

    out = subprocess.run(["sh", "-c", remote.withdraw([str(dirs[1])])], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["0", "gone"] and not dirs[1].exists()
    claim = _run_wrapper(tmp_path, dirs[0])
    assert (dirs[0] / ".dssh" / "exit_code").read_text() == "0\n"
    assert not (dirs[2] / ".dssh" / "launched").exists()  # not reached: the head takes it
    assert claim.read_text().splitlines()[-1] == "ended"
    # and the other way round: a run its wrapper launched is not taken back
    (dirs[2] / ".dssh" / "launched").write_text("123\n")
    (dirs[2] / ".dssh" / "pid").write_text("123\n")
    out = subprocess.run(["sh", "-c", remote.withdraw([str(dirs[2])])], capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["0", "launched"] and dirs[2].exists()


def test_a_run_cancelled_before_its_turn_never_runs(tmp_path: Path) -> None:
    dirs = _chain(tmp_path, 3, command="echo ran > outputs/r.txt")
    (dirs[1] / ".dssh" / "cancelled").write_text("")
    _run_wrapper(tmp_path, dirs[0])
    assert (dirs[1] / ".dssh" / "exit_code").read_text() == "143\n"
    assert not (dirs[1] / "outputs" / "r.txt").exists()
    assert (dirs[2] / "outputs" / "r.txt").read_text() == "ran\n"  # the chain went on


def test_the_watch_follows_the_chain_a_pause_stops_the_job_running_now(tmp_path: Path) -> None:
    """One watch loop serves the whole chain: a pause file stops whichever job is running
    (its whole tree, SIGSTOP) and its removal continues it."""
    flag = tmp_path / "pause-me"
    dirs = _chain(tmp_path, 3, command="sleep 1.5; echo done > outputs/r.txt")
    w = _start_wrapper(tmp_path, dirs[0], pause_files=str(flag), on_pause="suspend")
    try:
        assert wait_for(lambda: (dirs[1] / ".dssh" / "job_pid").exists(), 30, 0.02)
        flag.touch()  # the owner sits down while the chain's second job runs
        job = int((dirs[1] / ".dssh" / "job_pid").read_text())

        def stopped() -> bool:
            with open(f"/proc/{job}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        assert wait_for(stopped, 5, 0.05), "the running job of the chain was not stopped"
        assert wait_for((dirs[1] / ".dssh" / "suspended").exists, 5, 0.05)
        time.sleep(2)  # stopped jobs do not end
        assert not (dirs[1] / ".dssh" / "exit_code").exists()
        flag.unlink()
        assert w.wait(timeout=60) == 0
    finally:
        flag.unlink(missing_ok=True)
        if w.poll() is None:
            w.kill()
    assert all((d / "outputs" / "r.txt").read_text() == "done\n" for d in dirs)
    events = (tmp_path / "events").read_text().splitlines()
    # (a job whose time was up while stopped ends at once when continued: its end may be
    # told before the resume is)
    assert events[:2] == ["j0.1 0", "~suspend j1.1"] and events[-1] == "j2.1 0", events
    assert sorted(events[2:4]) == ["j1.1 0", "~resume j1.1"], events


def test_a_job_of_a_chain_past_its_timeout_is_stopped_and_the_chain_goes_on(
        tmp_path: Path) -> None:
    dirs = _chain(tmp_path, 3)
    (dirs[1] / ".dssh" / "command.sh").write_text("sleep 60\n")
    for d in (dirs[0], dirs[2]):
        (d / ".dssh" / "command.sh").write_text("echo ran > outputs/r.txt\n")
    t0 = time.monotonic()
    assert _start_wrapper(tmp_path, dirs[0], timeout=2).wait(timeout=60) == 0
    assert time.monotonic() - t0 < 30
    assert (dirs[1] / ".dssh" / "timed_out").exists()
    assert (dirs[1] / ".dssh" / "exit_code").read_text().strip() in ("143", "137")
    assert not (dirs[0] / ".dssh" / "timed_out").exists()
    assert (dirs[2] / "outputs" / "r.txt").read_text() == "ran\n"
    assert not (dirs[2] / ".dssh" / "timed_out").exists()  # counted afresh


# ------------------------------------------------- look-ahead: a run linked to a running one


def _link(run: Path, nxt: Path, name: str) -> bool:
    """Link ``nxt`` as the next run of the running ``run``, as a head's look-ahead does: its
    dir and command first, then ``.dssh/next`` made with link(2), which fails if the name
    exists (the wrapper closed the slot, having ended)."""
    (nxt / ".dssh").mkdir(parents=True, exist_ok=True)
    (nxt / "outputs").mkdir(exist_ok=True)
    if not (nxt / ".dssh" / "command.sh").exists():
        (nxt / ".dssh" / "command.sh").write_text("echo $$ > outputs/me.txt\n")
    src = nxt / ".dssh" / "as-next"
    src.write_text(f"{nxt}\n{name}\n")
    try:
        os.link(src, run / ".dssh" / "next")
    except FileExistsError:
        return False
    return True


def test_a_run_linked_while_a_lone_job_runs_follows_it_in_the_same_wrapper(
        tmp_path: Path) -> None:
    [first] = _chain(tmp_path, 1, command="sleep 1; echo $$ > outputs/me.txt")
    second = tmp_path / "jobs" / "j1.1"
    w = _start_wrapper(tmp_path, first)
    try:
        assert wait_for((first / ".dssh" / "job_pid").exists, 30, 0.02)
        assert _link(first, second, "j1.1")
        assert w.wait(timeout=60) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert (second / ".dssh" / "exit_code").read_text() == "0\n"
    # one wrapper for both, and the second started once the first had ended
    assert (first / ".dssh" / "pid").read_text() == (second / ".dssh" / "pid").read_text()
    assert ((first / ".dssh" / "finished").stat().st_mtime_ns
            <= (second / ".dssh" / "started").stat().st_mtime_ns)
    # taking it is told before the end of the job it follows: a head hearing that end knows
    # the slot went on
    assert (tmp_path / "events").read_text().splitlines() == ["~took j1.1", "j0.1 0", "j1.1 0"]
    text = (tmp_path / "claim").read_text().splitlines()
    assert "job j1.1" in text and f"dir {second}" in text
    assert text[-1] == "ended" and text.count("ended") == 1
    # the second run closed its slot at its end: a link made now is refused
    assert not _link(second, tmp_path / "jobs" / "j2.1", "j2.1")
    assert not (tmp_path / "jobs" / "j2.1" / ".dssh" / "started").exists()


def test_a_link_racing_the_end_of_the_job_either_runs_once_or_not_at_all(
        tmp_path: Path) -> None:
    """The head's link and the wrapper's close race at the job's end: exactly one wins,
    whatever the moment. Linked: the run was taken and told; refused: it never started."""
    rng = random.Random(7)
    outcomes = collections.Counter()
    for t in range(20):
        base = tmp_path / f"t{t}"
        [first] = _chain(base, 1, command=f"sleep 0.{rng.randrange(1, 3)}")
        second = base / "jobs" / "j1.1"
        w = _start_wrapper(base, first)
        try:
            time.sleep(rng.uniform(0.05, 0.4))
            linked = _link(first, second, "j1.1")
            assert w.wait(timeout=60) == 0
        finally:
            if w.poll() is None:
                w.kill()
        events = (base / "events").read_text().splitlines()
        if linked:
            assert (second / ".dssh" / "exit_code").read_text() == "0\n", t
            assert events == ["~took j1.1", "j0.1 0", "j1.1 0"], (t, events)
        else:
            assert (first / ".dssh" / "next").read_text() == "", t  # closed by the wrapper
            assert not (second / ".dssh" / "launched").exists(), t
            assert not (second / ".dssh" / "started").exists(), t
            assert events == ["j0.1 0"], (t, events)
        outcomes[linked] += 1
    # (the moments were drawn to fall on both sides of the end)
    assert outcomes[True] and outcomes[False], outcomes


def test_a_linked_run_is_given_back_when_the_host_is_paused_at_the_end(tmp_path: Path) -> None:
    flag = tmp_path / "pause-me"
    [first] = _chain(tmp_path, 1, command=f"sleep 0.5; touch {flag}")
    second = tmp_path / "jobs" / "j1.1"
    w = _start_wrapper(tmp_path, first, pause_files=str(flag))
    try:
        assert wait_for((first / ".dssh" / "job_pid").exists, 30, 0.02)
        assert _link(first, second, "j1.1")
        assert w.wait(timeout=60) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert not second.exists(), "the run given back must be gone"
    assert (tmp_path / "events").read_text().splitlines() == ["~withdrawn j1.1", "j0.1 0"]
    assert (tmp_path / "claim").read_text().splitlines()[-1] == "ended"


def test_the_watch_follows_a_linked_run_a_pause_stops_it(tmp_path: Path) -> None:
    """A lone job's watch learns of the run linked after it (no chain when it began)."""
    flag = tmp_path / "pause-me"
    [first] = _chain(tmp_path, 1, command="sleep 0.5")
    second = tmp_path / "jobs" / "j1.1"
    (second / ".dssh").mkdir(parents=True)
    (second / ".dssh" / "command.sh").write_text("sleep 2; echo done > outputs/r.txt\n")
    w = _start_wrapper(tmp_path, first, pause_files=str(flag), on_pause="suspend")
    try:
        assert wait_for((first / ".dssh" / "job_pid").exists, 30, 0.02)
        assert _link(first, second, "j1.1")
        assert wait_for((second / ".dssh" / "job_pid").exists, 30, 0.02)
        flag.touch()
        job = int((second / ".dssh" / "job_pid").read_text())

        def stopped() -> bool:
            with open(f"/proc/{job}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"

        assert wait_for(stopped, 5, 0.05), "the linked run was not stopped"
        flag.unlink()
        assert w.wait(timeout=60) == 0
    finally:
        flag.unlink(missing_ok=True)
        if w.poll() is None:
            w.kill()
    assert (second / "outputs" / "r.txt").read_text() == "done\n"
    events = (tmp_path / "events").read_text().splitlines()
    assert events[:3] == ["~took j1.1", "j0.1 0", "~suspend j1.1"], events


# --------------------------------------------------------------- on real sshd workstations

def _ran(ws, tag: str) -> collections.Counter[str]:
    """How many times each job ran, from the lines jobs appended on every workstation."""
    seen: collections.Counter[str] = collections.Counter()
    for w in ws.hosts:
        f = w.home / f"ran-{tag}.txt"
        if f.exists():
            seen.update(f.read_text().split())
            f.unlink()
    return seen


def _sweep(d: Path, name: str, n: int, command: str) -> Path:
    return write_yaml(d / "sweep.yaml", {"name": name, "run": {"command": command, "cpus": 1},
                                         "params": {"i": list(range(n))}})


def _events(d: Path, kind: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(d / "state.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM events WHERE kind=?", (kind,)).fetchall()
    finally:
        db.close()


def _two_hosts(ws, d: Path, cpus: int):
    """The first two workstations, with ``cpus`` each, in ``d/inventory.yaml``."""
    w1, w2 = ws.hosts[0], ws.hosts[1]
    ws.write_inventory(d / "inventory.yaml",
                       overrides={w1.name: {"cpus": cpus}, w2.name: {"cpus": cpus}})
    return w1, w2


def _run_on_first_host(ws, d: Path, name: str, n: int, cpus: int, command: str):
    """Run a sweep of n jobs of ``command`` on the first workstation alone, with ``cpus``;
    it must end with exit 0. That workstation."""
    w1 = ws.hosts[0]
    ws.write_inventory(d / "inventory.yaml", overrides={w1.name: {"cpus": cpus}})
    sweep = _sweep(d, name, n, command)
    r = dssh("run", sweep, "-i", d / "inventory.yaml", "--hosts", w1.name, cwd=d,
             timeout=300)
    assert r.returncode == 0, r.stderr
    return w1


def _each_once_and_completed(ws, d: Path, name: str, n: int) -> tuple[Path, list[dict]]:
    """Each of the sweep's n jobs ran exactly once (by what the jobs wrote on the
    workstations), is COMPLETED, and took one attempt; its results dir and summary rows."""
    ran = _ran(ws, name)
    assert sorted(ran) == sorted(str(i) for i in range(n)) and set(ran.values()) == {1}, ran
    results = d / "results/default" / name
    rows = summary(results)
    assert len(rows) == n and {row["status"] for row in rows} == {"COMPLETED"}
    assert all(json.loads((results / row["job"] / "job.json").read_text())["attempts"] == 1
               for row in rows)
    return results, rows


def test_short_jobs_run_in_chains_each_exactly_once(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1, w2 = _two_hosts(ws, tmp_path, cpus=2)
    n = 160
    sweep = _sweep(tmp_path, "chained", n,
                   'echo "$PPID" > outputs/wrapper.txt; echo {i} >> "$HOME/ran-chained.txt"')
    r = dssh("run", sweep, "-i", tmp_path / "inventory.yaml", "--hosts",
             f"{w1.name},{w2.name}", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    results, rows = _each_once_and_completed(ws, tmp_path, "chained", n)
    # The jobs shared wrappers: far fewer wrappers than jobs (one per job without chains).
    wrappers = collections.Counter((row["host"], (results / row["job"] / "wrapper.txt")
                                    .read_text().strip()) for row in rows)
    assert len(wrappers) < n // 2, f"{len(wrappers)} wrappers for {n} jobs"
    assert max(wrappers.values()) > 1
    # The jobs that waited on a host behind another of their chain were recorded so (`dssh
    # status` counts them as queued on hosts, not running); none keeps the note once done.
    notes = [json.loads(e["detail"]).get("reason") for e in _events(tmp_path, "starting")]
    queued = [x for x in notes if x]
    assert len(queued) >= n // 2, notes  # (fewer than n // 2 wrappers: see above)
    assert all(x.startswith((f"queued on {w1.name} after ", f"queued on {w2.name} after "))
               for x in queued), queued
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE reason IS NOT NULL").fetchone() == (0,)
    # Every slot's claim was given back in the end: none left live in the ledgers.
    for w in (w1, w2):
        ledger = Path(w.ledger_dir)
        for c in ledger.glob("c-*") if ledger.is_dir() else ():
            assert "ended" in c.read_text().split("\n"), c.read_text()


def test_a_sweep_run_again_on_a_new_state_file_ends_every_job(tmp_path: Path,
                                                              fresh_workdirs) -> None:
    """The state file and results removed by hand, the sweep run again: on the hosts the
    first run's job dirs are still there, so some jobs' first attempts "exist" there (and
    are found collected by someone else: run again), among jobs handed out in chains. A
    chain's job that did not join it there, and a chain's first job that ended before the
    answer to its start came, once left the job after it waiting forever."""
    ws = fresh_workdirs
    w1, w2 = _two_hosts(ws, tmp_path, cpus=4)
    n = 600
    sweep = _sweep(tmp_path, "again", n, 'echo {i} >> "$HOME/ran-again.txt"')
    for run in (1, 2):
        r = dssh("run", sweep, "-i", tmp_path / "inventory.yaml", "--hosts",
                 f"{w1.name},{w2.name}", cwd=tmp_path, timeout=120)
        assert r.returncode == 0, (run, r.stdout[-2000:], r.stderr[-2000:])
        rows = summary(tmp_path / "results/default/again")
        assert len(rows) == n and {row["status"] for row in rows} == {"COMPLETED"}, run
        ran = _ran(ws, "again")
        assert sorted(ran) == sorted(str(i) for i in range(n)) and set(ran.values()) == {1}
        if run == 1:
            (tmp_path / "state.db").unlink()
            shutil.rmtree(tmp_path / "results")


def test_jobs_of_about_the_same_length_are_linked_ahead_each_exactly_once(
        tmp_path: Path, fresh_workdirs) -> None:
    """Jobs too long for chains, all about as long: once enough have ended to tell, each
    slot's next job is linked to the running one shortly before it ends, and the slot's
    wrapper goes on to it with no round trip in between."""
    ws = fresh_workdirs
    n = 24
    w1 = _run_on_first_host(ws, tmp_path, "ahead", n, 3,
                            'sleep 0.8; echo "$PPID" > outputs/wrapper.txt; '
                            'echo {i} >> "$HOME/ran-ahead.txt"')
    results, rows = _each_once_and_completed(ws, tmp_path, "ahead", n)
    # Linked: recorded as queued on the host behind a running job (no chains: the jobs
    # take longer than a chain's turn), and taken by that job's wrapper, which said so.
    notes = [json.loads(e["detail"]).get("reason") for e in _events(tmp_path, "starting")]
    linked = [x for x in notes if x and x.startswith(f"queued on {w1.name} after ")]
    log = w1.workdir / "events" / "default" / "ahead.log"
    took = [ln for ln in log.read_text().splitlines() if ln.startswith("~took ")]
    assert 3 <= len(took) <= len(linked), (took, linked)
    wrappers = collections.Counter((results / row["job"] / "wrapper.txt").read_text()
                                   for row in rows)
    assert len(wrappers) <= n - len(took), wrappers
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM jobs WHERE reason IS NOT NULL").fetchone() == (0,)


def test_a_first_wave_is_linked_on_trial_and_its_slots_go_on_with_no_round_trip(
        tmp_path: Path, fresh_workdirs) -> None:
    """Before any job has ended nothing tells how long they take, and a first wave of
    equal jobs ends all at once. Its jobs, still running a moment after they started,
    are linked their slots' next jobs on trial: the wrappers take them as the first wave
    ends, and say so before they tell of its ends."""
    ws = fresh_workdirs
    n = 9
    w1 = _run_on_first_host(ws, tmp_path, "trial", n, 3,
                            'sleep 1; echo {i} >> "$HOME/ran-trial.txt"')
    _each_once_and_completed(ws, tmp_path, "trial", n)
    lines = (w1.workdir / "events" / "default" / "trial.log").read_text().splitlines()
    # The first wave's jobs are i-0 to i-2: the next three were taken as they ended
    # (later waves start as before: too few jobs have ended by then to tell).
    took = sorted(ln for ln in lines if ln.startswith("~took "))
    assert took == ["~took i-3.1", "~took i-4.1", "~took i-5.1"], lines
    assert lines[0].startswith("~took "), lines
    assert not _events(tmp_path, "taken-back")


def test_trial_links_behind_long_jobs_are_taken_back_and_each_job_runs_once(
        tmp_path: Path, fresh_workdirs) -> None:
    """A first wave of jobs longer than a trial's turn: the next jobs linked to them on
    trial are taken back, queued again with their attempts untouched, and started when
    slots free, each exactly once."""
    ws = fresh_workdirs
    n = 4
    w1 = _run_on_first_host(ws, tmp_path, "recall", n, 2,
                            'sleep 3; echo {i} >> "$HOME/ran-recall.txt"')
    _each_once_and_completed(ws, tmp_path, "recall", n)
    back = _events(tmp_path, "taken-back")
    assert sorted(json.loads(e["detail"])["attempt"] for e in back) == [1, 1], [
        dict(e) for e in back]
    assert all("linked on trial" in json.loads(e["detail"])["why"] for e in back)
    lines = (w1.workdir / "events" / "default" / "recall.log").read_text().splitlines()
    assert not [ln for ln in lines if ln.startswith("~took ")], lines


def test_a_head_killed_with_runs_linked_ahead_is_resumed_and_each_job_runs_once(
        tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1 = ws.hosts[0]
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={w1.name: {"cpus": 3}})
    n = 24
    sweep = _sweep(tmp_path, "linkkill", n, 'sleep 0.8; echo {i} >> "$HOME/ran-linkkill.txt"')
    args = ("run", sweep, "-i", tmp_path / "inventory.yaml", "--hosts", w1.name)

    def linked_waiting() -> bool:
        """A job linked to a running one, its turn not come yet (or its link on its way)."""
        try:
            with sqlite3.connect(tmp_path / "state.db", timeout=0.1) as db:
                return db.execute("SELECT COUNT(*) FROM jobs WHERE state='STARTING' AND "
                                  "reason LIKE 'queued on %'").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    head = start_head(tmp_path, *args)
    killed = False
    try:
        if wait_for(linked_waiting, 120, 0.01) and head.poll() is None:
            head.send_signal(signal.SIGKILL)
            killed = True
        head.communicate(timeout=60)
    finally:
        if head.poll() is None:
            head.kill()
    assert killed, "no run was linked ahead before the sweep ended"
    head = start_head(tmp_path, *args)
    try:
        out, err = head.communicate(timeout=300)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, err
    ran = _ran(ws, "linkkill")
    assert sorted(ran) == sorted(str(i) for i in range(n)), sorted(
        set(map(str, range(n))) - set(ran))
    assert set(ran.values()) == {1}, {k: v for k, v in ran.items() if v > 1}
    rows = summary(tmp_path / "results/default/linkkill")
    assert len(rows) == n and {row["status"] for row in rows} == {"COMPLETED"}


def test_a_drained_host_gives_back_its_chains_and_nothing_is_lost(
        tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1 = ws.hosts[0]
    ws.write_inventory(tmp_path / "inventory.yaml",
                       overrides={w1.name: {"cpus": 2, "on_pause": "drain"}})
    n = 120
    sweep = _sweep(tmp_path, "drained", n, 'sleep 0.05; echo {i} >> "$HOME/ran-drained.txt"')
    flag = w1.home / ".distribute-pause"
    head = start_head(tmp_path, "run", sweep, "-i", tmp_path / "inventory.yaml", "--hosts",
                      w1.name)
    try:
        def ended(k: int) -> bool:
            f = w1.home / "ran-drained.txt"
            return f.exists() and len(f.read_text().split()) >= k

        def mid_chain() -> bool:
            """A running job with at least three runs of its chain still queued after it:
            a pause now comes before the chain ends, however late this look is."""
            for d in w1.home.glob(".dssh/jobs/default/drained/*/*/.dssh"):
                k = 0
                with contextlib.suppress(OSError):
                    if not (d / "launched").exists() or (d / "exit_code").exists():
                        continue
                    while k < 3 and (d / "next").exists():
                        d = Path((d / "next").read_text().split("\n")[0]) / ".dssh"
                        if (d / "launched").exists():
                            break
                        k += 1
                if k >= 3:
                    return True
            return False

        assert wait_for(lambda: ended(40), 120, 0.02), "the jobs did not start"
        # Paused mid-chain, not between two (a start refused by a paused host is not a
        # chain given back).
        assert wait_for(mid_chain, 60, 0.005), "no chain of four or more ran"
        flag.touch()  # the owner sits down: the running jobs finish, no more start
        time.sleep(3)
        f = w1.home / "ran-drained.txt"
        held = len(f.read_text().split())
        time.sleep(2)
        assert len(f.read_text().split()) == held, "jobs started on a paused host"
        flag.unlink()
        out, err = head.communicate(timeout=240)
    finally:
        flag.unlink(missing_ok=True)
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, err
    ran = _ran(ws, "drained")
    assert sorted(ran) == sorted(str(i) for i in range(n)) and set(ran.values()) == {1}, ran
    rows = summary(tmp_path / "results/default/drained")
    assert len(rows) == n and {row["status"] for row in rows} == {"COMPLETED"}
    given = _events(tmp_path, "given-back")
    assert given, ("no chain was given back though one was paused mid-chain; jobs requeued: "
                   f"{len(_events(tmp_path, 'requeued'))}")
    assert "given back by" in out + err


def test_a_head_killed_mid_chain_is_resumed_and_each_job_runs_once(
        tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1, w2 = _two_hosts(ws, tmp_path, cpus=2)
    n = 240
    sweep = _sweep(tmp_path, "killed", n, 'sleep 0.02; echo {i} >> "$HOME/ran-killed.txt"')
    args = ("run", sweep, "-i", tmp_path / "inventory.yaml", "--hosts", f"{w1.name},{w2.name}")

    def ran(want: int) -> bool:
        return sum(len((w.home / "ran-killed.txt").read_text().split())
                   for w in (w1, w2) if (w.home / "ran-killed.txt").exists()) >= want

    def wrappers(sig: str) -> None:
        for w in (w1, w2):
            subprocess.run(["pkill", f"-{sig}", "-u", w.user, "-f", "bin/wrapper-"])

    kills = 0
    # Killed at two moments the head does not choose: the chains run on without it.
    for k in (1, 2):
        head = start_head(tmp_path, *args)
        try:
            if wait_for(lambda k=k: ran(40 * k), 120, 0.01) and head.poll() is None:
                head.send_signal(signal.SIGKILL)
                kills += 1
            head.communicate(timeout=60)
        finally:
            if head.poll() is None:
                head.kill()
    def held_with_runs_to_take() -> int:
        """Runs a chain's wrapper was handed and has not launched, that wrapper held: only a
        head taking them back can now make them go (a wrapper that started after the STOP,
        from a start on its way, may still run free: its runs do not count)."""
        n = 0
        try:  # (runs collected meanwhile are removed under the walk)
            nexts = [f for w in (w1, w2) for f in w.home.glob("**/.dssh/next")]
        except OSError:
            return 0
        for nxt in nexts:
            try:
                run = Path(nxt.read_text().splitlines()[0]) / ".dssh"
                pid = (nxt.parent / "pid").read_text().strip()
                if not pid.isdigit():
                    continue  # (being written: "/proc//stat" would be the system's)
                stat = Path(f"/proc/{pid}/stat").read_text()
            except (OSError, IndexError):
                continue
            if ((run / "command.sh").exists() and not (run / "launched").exists()
                    and stat.rsplit(")", 1)[1].split()[0] == "T"):
                n += 1
        return n

    def held_mid_chain() -> bool:
        if not ran(120):
            return False
        wrappers("STOP")
        if held_with_runs_to_take():
            return True
        wrappers("CONT")
        return False

    # Killed once more, with the wrappers held (a machine thrashing, say) while a chain still
    # has runs it was handed and has not launched: the next head must take those back, and
    # the wrappers must then start none of them. Held first, so that the moment is certain.
    head = start_head(tmp_path, *args)
    try:
        if wait_for(lambda: head.poll() is not None or held_mid_chain(), 120, 0.05) and (
                head.poll() is None):
            head.send_signal(signal.SIGKILL)
            kills += 1
        head.communicate(timeout=60)
    finally:
        if head.poll() is None:
            head.kill()
    assert kills == 3, "the sweep ended before the head could be killed mid-way"

    def taken_back() -> list[sqlite3.Row]:
        return [e for e in _events(tmp_path, "requeued")
                if json.loads(e["detail"]).get("reason") == "its start was interrupted"]

    head = start_head(tmp_path, *args)
    try:
        # The wrappers go on once it has looked at what it finds and taken runs back.
        wait_for(taken_back, 60, 0.1)
        wrappers("CONT")
        out, err = head.communicate(timeout=300)
    finally:
        wrappers("CONT")
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, err
    done = _ran(ws, "killed")
    assert sorted(done) == sorted(str(i) for i in range(n)), sorted(
        set(map(str, range(n))) - set(done))
    twice = {k: v for k, v in done.items() if v > 1}
    assert not twice, f"jobs ran more than once: {twice}"
    rows = summary(tmp_path / "results/default/killed")
    assert len(rows) == n and {row["status"] for row in rows} == {"COMPLETED"}
    # The resumed heads took back jobs handed over in chains and not started yet.
    assert taken_back(), "no chain was cut by the kills: the test did not test taking back"

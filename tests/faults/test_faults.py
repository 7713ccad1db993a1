"""Fault injection against real sshd workstations (SPEC §7 "Nothing is lost").

Each test runs a sweep of 40 short jobs (faultkit.py) and injects one kind of fault,
repeatedly and at random moments drawn from a seeded ``random.Random`` (the seed is in
the header and in every failure; ``DSSH_FAULT_SEED=N`` replays it), then checks with
``check_sweep`` that every job ended as designed exactly once, no job started more often
than allowed, nothing is left running on the hosts, and summary.csv, job.json and
``dssh status`` agree.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from faultkit import (
    STATS,
    FaultSweep,
    Head,
    check_sweep,
    make_sweep,
    phases,
    ps_lines,
    running_on,
    starts,
)
from helpers import explain
from workstations import Workstations

# ---------------------------------------------------------------------- 1. head SIGKILLed

MIN_KILLS = 10


def _kill_point(head: Head, sw: FaultSweep, plan: str, rng: random.Random) -> set[str] | None:
    """Wait for the moment ``plan`` names, then SIGKILL the head; returns what was going
    on at that moment, or None if the head ended by itself first."""
    deadline = time.monotonic() + rng.uniform(2.5, 3.5)
    if plan == "connecting":
        until = time.monotonic() + rng.uniform(0.2, 0.8)
    elif plan == "random":
        until = time.monotonic() + rng.uniform(0.2, 3.0)
    else:
        until = None
    wanted = {"building": "building", "uploading": "uploading", "ended": "ended",
              "collecting": "collecting"}.get(plan)
    delay_after = rng.uniform(0.0, 0.6) if plan == "building" else 0.0
    while head.alive:
        now = time.monotonic()
        if until is not None and now >= until:
            break
        if plan == "collected" and now >= deadline:
            break
        if wanted is not None:
            if wanted in phases(sw):
                if delay_after:
                    time.sleep(delay_after)
                break
            if now >= deadline:
                break
        time.sleep(0.002 if wanted else 0.02)
    seen = phases(sw)
    if not head.saw(": connected"):
        seen.add("connecting")
    if not head.alive:
        head.wait(30)
        return None if head.killed_on is None else seen
    head.kill()
    return seen


@pytest.mark.timeout(240)
def test_head_killed_at_random_points(fx: Workstations, rng: random.Random, tmp_path: Path,
                                      fault_seed: str) -> None:
    """SIGKILL the head at >= 10 points over one sweep (while connecting, building,
    uploading inputs, between a job's end and its collection, mid-collection, at random),
    start it again each time, then let a last run finish: every job ran exactly once,
    every host built once, and the results are whole."""
    # 48 jobs, one at a time per host: long enough for 13 kills with room to spare.
    sw = make_sweep(tmp_path, fx, rng, "headkill", fault_seed, n=48, build=True, slots=1)
    # A build runs only at first; then each targeted moment once, and random ones.
    n_kills = rng.randint(MIN_KILLS, MIN_KILLS + 3)
    targeted = ["connecting", "uploading", "ended", "collecting", "collected"]
    rest = targeted + ["random"] * (n_kills - 1 - len(targeted))
    rng.shuffle(rest)
    plans = ["building", *rest]
    kills: list[tuple[str, float, set[str]]] = []
    finished_alone = None
    for k, plan in enumerate(plans):
        # "collected": the reader thread kills the head the moment it reports a job done
        # (its result is home, its dir on the host is being removed).
        head = Head(sw, kill_on=": done on " if plan == "collected" else None)
        seen = _kill_point(head, sw, plan, rng)
        if head.killed_on is not None:
            seen = {"collected"} | (seen or set())
        if seen is None:
            finished_alone = head
            sw.note(f"head {k + 1} ({plan}) ended by itself: exit {head.wait(5)}")
            break
        kills.append((plan, head.elapsed(), seen))
        sw.note(f"kill {k + 1}: plan {plan}, after {head.elapsed():.2f} s, seen "
                f"{sorted(seen)}; last line: {head.out[-1] if head.out else ''}")
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.0, 1.5))  # jobs end while no head is there
    STATS["faults: head SIGKILL"] += len(kills)
    covered = set().union(*(s for _p, _t, s in kills)) if kills else set()
    print(f"\n{len(kills)} kills; phases seen at a kill: {sorted(covered)}")
    for line in sw.log:
        print("  " + line)
    assert len(kills) >= MIN_KILLS, (
        f"the sweep finished after only {len(kills)} kills (test too short for this "
        f"machine?)\n{sw.context()}\n{finished_alone.output() if finished_alone else ''}")
    try:
        final = sw.run(timeout=150)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the last run did not finish within 150 s after {len(kills)} "
                             f"kills\n{e.stdout}\n{e.stderr}\n{sw.status()}\n"
                             f"{sw.context()}") from None
    assert final.returncode == 0, f"{explain(final)}\n{sw.context()}"
    check_sweep(sw, extra=f"--- last run\n{final.stdout[-3000:]}")
    builds = {w.name: len((w.home / "builds.log").read_text().split("\n")) - 1
              if (w.home / "builds.log").exists() else 0 for w in fx}
    assert all(n <= 1 for n in builds.values()), (
        f"a host built more than once: {builds}\n{sw.context()}")


# ------------------------------------------------------- 2. sshd restarted within the grace


@pytest.mark.timeout(180)
def test_sshd_restarted_within_grace_reattaches(fx: Workstations, rng: random.Random,
                                                tmp_path: Path, fault_seed: str) -> None:
    """Stop a workstation's sshd (dropping its connections) while it runs jobs and start it
    again 1-4 s later, three times: its jobs are re-attached, never started again."""
    sw = make_sweep(tmp_path, fx, rng, "sshdrestart", fault_seed, slots=1)
    head = Head(sw)
    cycles = 0
    try:
        # On a loaded machine the head may still be connecting and building after the
        # first pause: the faults are for a sweep whose jobs run.
        deadline = time.monotonic() + 60
        while head.alive and time.monotonic() < deadline and not any(
                running_on(w) for w in fx):
            time.sleep(0.2)
        for _ in range(3):
            time.sleep(rng.uniform(0.5, 2.5))
            busy = [w for w in fx if running_on(w)]
            if not head.alive or not busy:
                break
            victim = rng.choice(busy)
            down = rng.uniform(1.0, 4.0)
            sw.note(f"stop sshd of {victim.name} (running {running_on(victim)}) for "
                    f"{down:.1f} s, {head.elapsed():.1f} s into the run")
            victim.stop(sessions=True)
            try:
                time.sleep(down)
            finally:
                victim.start()
            cycles += 1
        rc = head.wait(120)
    finally:
        if head.alive:
            head.kill()
    STATS["faults: sshd restarted"] += cycles
    assert cycles >= 2, f"only {cycles} restarts before the sweep ended\n{sw.context()}"
    assert rc == 0, f"head exit {rc}\n{head.output()}\n{sw.context()}"
    check_sweep(sw, extra=head.output())


# ---------------------------------------------------------- 3. a workstation lost for good


@pytest.mark.timeout(180)
def test_workstation_lost_for_good_its_jobs_run_elsewhere(fx: Workstations,
                                                          rng: random.Random, tmp_path: Path,
                                                          fault_seed: str) -> None:
    """A workstation's sshd stops for good while it runs jobs; with host_grace 3s for it,
    its jobs are requeued on the others and the sweep completes."""
    victim = rng.choice(fx.hosts)
    sw = make_sweep(tmp_path, fx, rng, "hostlost", fault_seed, slots=1,
                    host_overrides={victim.name: {"host_grace": "3s"}})
    head = Head(sw)
    try:
        deadline = time.monotonic() + 30
        while not running_on(victim) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 3.0))
        while not running_on(victim) and time.monotonic() < deadline:
            time.sleep(0.02)
        at_loss = running_on(victim)
        sw.note(f"stop sshd of {victim.name} for good {head.elapsed():.1f} s into the run, "
                f"running {at_loss}")
        victim.stop(sessions=True)
        STATS["faults: host lost for good"] += 1
        rc = head.wait(150)
    finally:
        if head.alive:
            head.kill()
    assert at_loss, f"{victim.name} never ran a job\n{sw.context()}"
    assert rc == 0, f"head exit {rc}\n{head.output()}\n{sw.context()}"
    seen = starts(fx)
    # The copies left on the lost host end by themselves (they are short), so the orphan
    # check waits a little.
    check_sweep(sw, once={j for j in sw.jobs
                          if not any(r.host == victim.name for r in seen.get(j, []))},
                lost={victim.name}, orphan_wait=5.0, extra=head.output())
    for job in at_loss:
        info = (sw.results / job / "job.json").read_text()
        assert f'"host": "{victim.name}"' not in info, (
            f"{job} ran on {victim.name} when it was lost, yet its result says it "
            f"completed there\n{info}\n{sw.context()}")


# ------------------------------------------------------ 4. a job's processes killed outside


def _job_pids(ws: Workstations, job: str) -> list[int]:
    """The job's shell (``sh input/job.sh JOB ...``) and its children (the ``sleep``)."""
    procs = ps_lines(ws)
    shells = {pid for _u, pid, _pp, _c, args in procs if f"input/job.sh {job} " in args}
    return sorted(shells | {pid for _u, pid, ppid, _c, _a in procs if ppid in shells})


@pytest.mark.timeout(180)
def test_job_killed_from_outside_is_retried(fx: Workstations, rng: random.Random,
                                            tmp_path: Path, fault_seed: str) -> None:
    """SIGKILL the shell and the sleep of 4 running jobs (at most 2 per host, so no host
    looks like a black hole): with retries: 1 each is retried and ends COMPLETED."""
    sw = make_sweep(tmp_path, fx, rng, "jobkill", fault_seed, slots=2, retries=1)
    candidates = [j for j, d in sw.jobs.items() if d["dur"] >= 0.6]
    rng.shuffle(candidates)
    victims: dict[str, str] = {}  # job -> host
    per_host: dict[str, int] = {}
    head = Head(sw)
    try:
        while head.alive and len(victims) < 4:
            for w in fx:
                if per_host.get(w.name, 0) >= 2:
                    continue
                for job in running_on(w):
                    if job not in candidates or job in victims or len(victims) >= 4:
                        continue
                    time.sleep(rng.uniform(0.05, 0.3))
                    pids = _job_pids(fx, job)
                    if not pids:
                        continue
                    for pid in pids:
                        subprocess.run(["kill", "-KILL", str(pid)], capture_output=True)
                    victims[job] = w.name
                    per_host[w.name] = per_host.get(w.name, 0) + 1
                    sw.note(f"killed {job} on {w.name} (pids {pids}) {head.elapsed():.1f} s "
                            "into the run")
                    break
            time.sleep(0.02)
        rc = head.wait(120)
    finally:
        if head.alive:
            head.kill()
    STATS["faults: job processes killed"] += len(victims)
    assert len(victims) >= 3, (f"only {len(victims)} jobs could be killed (head exit {rc})\n"
                               f"{head.output()}\n{sw.context()}")
    assert rc == 0, f"head exit {rc}\n{head.output()}\n{sw.context()}"
    seen = starts(fx)
    # A kill that came as the job was ending anyway is no failure: only the kills that cut
    # a run short (no end line) must show up as a second attempt.
    cut = {j for j in victims if any(r.attempt == 1 and r.end is None for r in seen.get(j, []))}
    check_sweep(sw, once=set(sw.jobs) - set(victims), extra=head.output())
    for job in cut:
        info = (sw.results / job / "job.json").read_text()
        assert '"attempts": 2' in info, f"{job} was killed in attempt 1:\n{info}"


# -------------------------------------------------------------- 5. a job hangs past timeout


@pytest.mark.timeout(180)
def test_hanging_job_times_out_after_its_retries(fx: Workstations, rng: random.Random,
                                                 tmp_path: Path, fault_seed: str) -> None:
    """One or two jobs run ``sleep 600`` under a 3 s timeout with retries: 1: they end
    TIMEOUT after two attempts, the other jobs COMPLETED, and no sleep is left behind."""
    names = [f"j{i:02d}" for i in range(40)]
    hang = frozenset(rng.sample(names, rng.randint(1, 2)))
    sw = make_sweep(tmp_path, fx, rng, "hang", fault_seed, slots=2, retries=1, timeout="3s",
                    hang=hang)
    sw.note(f"jobs that hang: {sorted(hang)}")
    STATS["faults: job hangs past its timeout"] += len(hang)
    t0 = time.monotonic()
    proc = sw.run(timeout=150)
    assert proc.returncode == 1, f"{explain(proc)}\n{sw.context()}"
    check_sweep(sw, statuses={j: "TIMEOUT" for j in hang}, once=set(sw.jobs) - hang,
                extra=proc.stdout[-3000:])
    for job in hang:
        info = (sw.results / job / "job.json").read_text()
        assert '"attempts": 2' in info and '"exit_code": 143' in info, (
            f"{job}: expected 2 attempts ended by SIGTERM (exit 143):\n{info}")
        assert len(starts(fx)[job]) == 2
    assert time.monotonic() - t0 < 100


# ------------------------------------------------------ 6. the results dir becomes read-only


def _sh(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True).returncode == 0


class ReadOnlySwitch:
    """Makes a directory unwritable even for root, mid-run, and writable again:
    ``chattr +i`` on it, or else a tmpfs mounted there before the run and remounted
    read-only (``DSSH_FAULT_READONLY=tmpfs`` forces the latter)."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.dir: Path | None = None

    def prepare(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        if self.how == "tmpfs" and not _sh("mount", "-t", "tmpfs", "-o", "size=400m",
                                           "tmpfs", str(d)):
            raise AssertionError(f"mounting a tmpfs on {d} failed, though the probe worked")

    def on(self) -> None:
        assert self.dir is not None
        if self.how == "chattr":
            assert _sh("chattr", "+i", str(self.dir)), f"chattr +i {self.dir} failed"
            return
        # A remount read-only fails (EBUSY) while a file there is open for writing.
        deadline = time.monotonic() + 5
        while not _sh("mount", "-o", "remount,ro", str(self.dir)):
            assert time.monotonic() < deadline, f"could not remount {self.dir} read-only"
            time.sleep(0.01)

    def off(self) -> None:
        if self.dir is not None:
            if self.how == "chattr":
                _sh("chattr", "-i", str(self.dir))
            else:
                _sh("mount", "-o", "remount,rw", str(self.dir))

    def cleanup(self) -> None:
        self.off()
        if self.dir is not None and self.how == "tmpfs":
            _sh("umount", "-l", str(self.dir))


@pytest.fixture
def read_only(tmp_path: Path):  # noqa: ANN201
    """A ReadOnlySwitch that works on this machine; skips (saying why) if none does."""
    probe = tmp_path / "probe"
    probe.mkdir()
    tried = []
    forced = os.environ.get("DSSH_FAULT_READONLY")
    if forced not in (None, "", "chattr", "tmpfs"):
        raise pytest.UsageError("DSSH_FAULT_READONLY must be chattr or tmpfs")
    how = None
    if forced in (None, "", "chattr"):
        if shutil.which("chattr") and _sh("chattr", "+i", str(probe)):
            denied = not _sh("touch", str(probe / "x"))
            _sh("chattr", "-i", str(probe))
            if denied:
                how = "chattr"
        tried.append("chattr +i (needs e2fsprogs and a filesystem with the immutable flag)")
    if how is None and forced in (None, "", "tmpfs"):
        if _sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)):
            if _sh("mount", "-o", "remount,ro", str(probe)) and not _sh("touch",
                                                                         str(probe / "x")):
                how = "tmpfs"
            _sh("umount", "-l", str(probe))
        tried.append("a tmpfs remounted read-only (needs CAP_SYS_ADMIN)")
    if how is None:
        pytest.skip("cannot make a directory read-only for root here; tried "
                    + " and ".join(tried))
    switch = ReadOnlySwitch(how)
    yield switch
    switch.cleanup()


@pytest.mark.timeout(240)
def test_read_only_results_dir_leaves_jobs_uncollected(fx: Workstations, rng: random.Random,
                                                       tmp_path: Path, fault_seed: str,
                                                       read_only: ReadOnlySwitch) -> None:
    """The results dir becomes read-only mid-run: jobs that end then are left uncollected
    (not COMPLETED, their files still on their host), the head says "not collected", runs
    the other jobs to their end and exits 1 saying to run again; once the dir is writable,
    a new run collects them without starting them again."""
    sw = make_sweep(tmp_path, fx, rng, "readonly", fault_seed, slots=2)
    after = rng.randint(4, 14)
    read_only.prepare(sw.results)
    head = Head(sw)
    try:
        deadline = time.monotonic() + 60
        while head.alive and time.monotonic() < deadline:
            done = [p for p in sw.results.glob("j*/job.json")] if sw.results.is_dir() else []
            if len(done) >= after:
                break
            time.sleep(0.02)
        read_only.on()
        collected = sorted(p.parent.name for p in sw.results.glob("j*/job.json"))
        sw.note(f"{read_only.how}: {sw.results} read-only after {len(collected)} jobs were "
                "collected, "
                f"{head.elapsed():.1f} s into the run")
        STATS["faults: results dir read-only"] += 1
        # Every job ends within ~15 s; then the head has 20 s to see that nothing is left.
        deadline = time.monotonic() + 60
        while head.alive and time.monotonic() < deadline and not all(
                runs and runs[-1].end for runs in (starts(fx).get(j) for j in sw.jobs)):
            time.sleep(0.2)
        sw.note(f"every job has ended on its host, {head.elapsed():.1f} s into the run")
        rc = head.wait(20)
        if rc is None:
            sw.note("the head was still running 20 s later: killed")
            head.kill()
    finally:
        read_only.off()
        if head.alive:
            head.kill()
    out = "\n".join(head.out + head.err)
    assert rc == 1, (f"head exit {rc} (expected 1: jobs left uncollected)\n{head.output()}\n"
                     f"{sw.context()}")
    assert "not collected" in out, f"{head.output()}\n{sw.context()}"
    assert f"dssh run {sw.file}" in "\n".join(head.err), (
        f"the head's last words should give the command that collects the jobs\n"
        f"{head.output()}")
    st = {j["job"]: j for j in sw.status()["jobs"]}
    uncollected = sorted(set(sw.jobs) - set(collected))
    for job in uncollected:
        assert st[job]["state"] != "COMPLETED", (
            f"{job} is COMPLETED though the results dir could not take it: {st[job]}")
    left = {p.parent.name for w in fx
            for p in (w.workdir / "jobs/default/readonly").glob("*/*") if
            (p / ".dssh/exit_code").exists() and (p / "outputs/data.bin").exists()}
    assert set(uncollected) <= left, (
        f"uncollected jobs whose files are gone from the hosts: "
        f"{sorted(set(uncollected) - left)}\n{sw.context()}")
    again = sw.run(timeout=120)
    assert again.returncode == 0, f"{explain(again)}\n{sw.context()}"
    check_sweep(sw, extra=again.stdout[-3000:])

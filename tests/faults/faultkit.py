"""What the fault-injection tests share: the sweep they run, a head that can be killed,
what the workstations saw (starts, processes, job dirs), and the checker every scenario
ends with (SPEC §7 "Nothing is lost").

Every job of a fault sweep runs ``sh input/job.sh JOB DUR MODE BYTES``: it appends
``start ATTEMPT EPOCH`` to ``$HOME/starts/JOB`` on its host (outside dssh's workdir, so it
survives dssh's clean-up), sleeps DUR seconds (``MODE=hang``: 600 first), writes
``outputs/result.txt`` (its name, the md5 of its input file, the build's marker) and
``outputs/data.bin`` (BYTES bytes of its name repeated), then appends ``end ATTEMPT EPOCH``.
The test reads the workstation homes directly (the suite runs as root).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import dssh, explain, start_head, write, write_yaml
from workstations import Workstation, Workstations

JOB_SH = r"""
# job.sh JOB DUR MODE BYTES: one job of the fault-injection sweeps
mkdir -p "$HOME/starts"
echo "start $DSSH_ATTEMPT $(date +%s.%N)" >> "$HOME/starts/$DSSH_JOB"
if [ "$3" = hang ]; then sleep 600; fi
sleep "$2"
{
  echo "job=$DSSH_JOB"
  echo "input=$(md5sum < input/in.dat | cut -d' ' -f1)"
  echo "build=$(cat "$DSSH_BUILD/built.txt" 2>/dev/null)"
} > outputs/result.txt
yes "$DSSH_JOB" | head -c "$4" > outputs/data.bin
echo "end $DSSH_ATTEMPT $(date +%s.%N)" >> "$HOME/starts/$DSSH_JOB"
"""

BUILD_SH = r"""
echo "build $(date +%s.%N)" >> "$HOME/builds.log"
sleep 1
echo built-ok > built.txt
"""

# Counted over the session and printed at its end (numbers for the docs).
STATS: Counter[str] = Counter()


@dataclass
class FaultSweep:
    """A sweep written for one test, with what each job should produce."""

    dir: Path
    ws: Workstations
    name: str
    file: Path
    inventory: Path
    jobs: dict[str, dict[str, Any]]  # name -> {"dur", "mode", "md5"}
    retries: int
    build: bool
    out_bytes: int
    seed: str
    log: list[str] = field(default_factory=list)  # what the test did, for failure messages

    @property
    def results(self) -> Path:
        return self.dir / "results" / "default" / self.name

    def note(self, text: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``dssh run`` of this sweep to its end (blocking)."""
        return dssh("run", self.file, "-i", self.inventory, *args, cwd=self.dir,
                    timeout=timeout)

    def status(self) -> dict[str, Any]:
        proc = dssh("status", f"default/{self.name}", "--json", cwd=self.dir)
        if proc.returncode != 0:
            raise AssertionError(f"dssh status failed: {explain(proc)}")
        return json.loads(proc.stdout)

    def context(self) -> str:
        return (f"seed: DSSH_FAULT_SEED={self.seed}\nwhat the test did:\n  "
                + "\n  ".join(self.log[-60:]))


def make_sweep(root: Path, ws: Workstations, rng: random.Random, name: str, seed: str, *,
               n: int = 40, build: bool = False, retries: int = 0, timeout: str | None = None,
               hang: frozenset[str] = frozenset(), slots: int = 1,
               host_overrides: dict[str, dict[str, Any]] | None = None,
               input_bytes: int = 400_000, out_bytes: int = 2_000_000) -> FaultSweep:
    """Write a sweep of ``n`` jobs ``j00``.. (each with its own input file of
    ``input_bytes`` and a sleep of 0.2-1.5 s) and an inventory giving every workstation
    ``slots`` cpus (one job each) under ``root``."""
    write(root / "job.sh", JOB_SH)
    pad = random.Random(rng.random()).randbytes(input_bytes)
    jobs: dict[str, dict[str, Any]] = {}
    entries = []
    for i in range(n):
        job = f"j{i:02d}"
        data = f"input of {job}\n".encode() + pad[: input_bytes - 20]
        (root / "inputs").mkdir(exist_ok=True)
        (root / "inputs" / f"{job}.dat").write_bytes(data)
        mode = "hang" if job in hang else "ok"
        dur = round(rng.uniform(0.2, 1.5), 2)
        jobs[job] = {"dur": dur, "mode": mode, "md5": hashlib.md5(data).hexdigest()}
        entries.append({"name": job, "params": {"i": i, "dur": dur, "mode": mode},
                        "files": [{"path": f"inputs/{job}.dat", "as": "in.dat"}]})
    run: dict[str, Any] = {"command": f"sh input/job.sh {{job}} {{dur}} {{mode}} {out_bytes}",
                           "files": ["job.sh"], "cpus": 1, "retries": retries}
    if timeout:
        run["timeout"] = timeout
    doc: dict[str, Any] = {"name": name}
    if build:
        write(root / "build.sh", BUILD_SH)
        doc["build"] = {"files": ["build.sh"], "command": "sh build.sh"}
    doc["run"] = run
    doc["jobs"] = entries
    sweep_file = write_yaml(root / f"{name}.yaml", doc)
    over = {w.name: {"cpus": slots, **(host_overrides or {}).get(w.name, {})} for w in ws}
    inventory = ws.write_inventory(root / "inventory.yaml", overrides=over)
    STATS["jobs"] += n
    return FaultSweep(root, ws, name, sweep_file, inventory, jobs, retries, build, out_bytes,
                      seed)


# --------------------------------------------------------------------------- the head


class Head:
    """``dssh run`` in the background; its output is read by threads, so the test can look
    for a progress line without blocking, and kill it at any moment."""

    def __init__(self, sw: FaultSweep, *args: str, kill_on: str | None = None) -> None:
        self.sw = sw
        self.t0 = time.monotonic()
        self.kill_on = kill_on  # SIGKILL it as soon as a line of its output holds this
        self.killed_on: str | None = None  # the line that did
        self.proc = start_head(sw.dir, "run", sw.file, "-i", sw.inventory, *args)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out),
                                        (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any, buf: list[str]) -> None:
        for line in stream:
            if self.kill_on is not None and self.kill_on in line and self.killed_on is None:
                self.killed_on = line
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
            buf.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.out))

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.wait(30)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(5)
        return rc

    def output(self, last: int = 40) -> str:
        return ("--- head stdout (last lines)\n" + "\n".join(self.out[-last:])
                + "\n--- head stderr\n" + "\n".join(self.err[-last:]))


# --------------------------------------------------------------------------- the hosts


@dataclass
class Start:
    host: str
    attempt: int
    start: float
    end: float | None = None


def starts(ws: Workstations) -> dict[str, list[Start]]:
    """Every start of every job on every workstation, from ``$HOME/starts/JOB``."""
    out: dict[str, list[Start]] = {}
    for w in ws:
        d = w.home / "starts"
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            runs: list[Start] = []
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) != 3 or not parts[1].isdigit():
                    continue
                kind, attempt, t = parts[0], int(parts[1]), float(parts[2])
                if kind == "start":
                    runs.append(Start(w.name, attempt, t))
                elif kind == "end":
                    for r in reversed(runs):
                        if r.attempt == attempt and r.end is None:
                            r.end = t
                            break
            out.setdefault(f.name, []).extend(runs)
    return out


def running_on(w: Workstation) -> list[str]:
    """Jobs whose latest start on ``w`` has no end yet."""
    d = w.home / "starts"
    names = []
    if d.is_dir():
        for f in d.iterdir():
            try:
                lines = f.read_text().splitlines()
            except OSError:
                continue
            if lines and lines[-1].startswith("start "):
                names.append(f.name)
    return names


def ps_lines(ws: Workstations) -> list[tuple[str, int, int, str, str]]:
    """(user, pid, ppid, comm, args) of every live process of the workstation users."""
    users = {w.user for w in ws}
    ps = subprocess.run(["ps", "-ww", "-eo", "user:40=,pid=,ppid=,stat=,comm=,args="],
                        capture_output=True, text=True, check=True).stdout
    out = []
    for line in ps.splitlines():
        parts = line.split(None, 5)
        # Zombies are dead: PID 1 of some containers never reaps what it inherits.
        if len(parts) >= 5 and parts[0] in users and not parts[3].startswith("Z"):
            out.append((parts[0], int(parts[1]), int(parts[2]), parts[4],
                        parts[5] if len(parts) > 5 else ""))
    return out


def orphans(ws: Workstations, wait: float) -> list[str]:
    """Processes of the workstation users other than sshd's session processes, once
    ``wait`` seconds have passed without them all ending."""
    deadline = time.monotonic() + wait
    while True:
        left = [f"{u} pid {pid} ppid {ppid}: {args}" for u, pid, ppid, comm, args in ps_lines(ws)
                if not comm.startswith("sshd")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def retired(d: Path) -> bool:
    """Is the attempt dir ``d`` only the mark a collected run leaves (``.dssh/collected``,
    and ``.dssh/claim``, who started it: SPEC "Where jobs live on a host")?"""
    try:
        return ([e.name for e in os.scandir(d)] == [".dssh"]
                and sorted(e.name for e in os.scandir(d / ".dssh")) in (
                    ["collected"], ["claim", "collected"]))
    except OSError:
        return False


def _listing(d: Path, limit: int = 8) -> str:
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.is_dir())
    return ", ".join(files[:limit]) + (", ..." if len(files) > limit else "") or "nothing"


def job_dirs(w: Workstation, sweep: str) -> list[Path]:
    """The attempt dirs (``jobs/default/SWEEP/JOB/ATTEMPT``) on ``w``."""
    top = w.workdir / "jobs" / "default" / sweep
    out = []
    try:
        for job in os.scandir(top):
            try:
                out += [Path(a.path) for a in os.scandir(job.path)]
            except OSError:
                pass
    except OSError:
        pass
    return out


def phases(sw: FaultSweep) -> set[str]:
    """What is going on right now, as seen on the hosts and in the results dir:
    ``building`` (a build runs), ``uploading`` (a job dir is claimed, its start not yet
    made), ``running``, ``ended`` (a job's exit code is written, its result not yet home:
    between its end and its collection, or being collected), ``collecting`` (files are
    arriving in the results' staging dir)."""
    seen = set()
    for w in sw.ws:
        try:
            for b in os.scandir(w.workdir / "builds"):
                ctl = Path(b.path) / ".dssh"
                if ctl.is_dir() and not (ctl / "exit_code").exists():
                    seen.add("building")
        except OSError:
            pass
        for d in job_dirs(w, sw.name):
            ctl = d / ".dssh"
            if (ctl / "collected").exists():
                continue  # the mark a collected run leaves
            if (ctl / "exit_code").exists():
                if not (sw.results / d.parent.name / "job.json").exists():
                    seen.add("ended")  # (not a dir left behind by a collected job)
            elif (ctl / "launched").exists():
                seen.add("running")
            elif ctl.is_dir() and (d / "input").is_dir():  # (a dir being retired has none)
                seen.add("uploading")
    try:
        if any(os.scandir(sw.results / ".incoming")):
            seen.add("collecting")
    except OSError:
        pass
    return seen


# --------------------------------------------------------------------------- the checker


def _read_summary(results: Path) -> list[dict[str, str]]:
    with open(results / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_sweep(sw: FaultSweep, *, statuses: dict[str, str] | None = None,
                once: set[str] | None = None, lost: set[str] = frozenset(),
                orphan_wait: float = 3.0, extra: str = "") -> None:
    """What must hold after every scenario (SPEC §7), all checked, all problems reported:

    - every job has one result dir with ``job.json`` whose status is COMPLETED (or the one
      ``statuses`` designs for it) and, when COMPLETED, its outputs, made from its own
      complete input; nothing else is in the results dir but ``summary.csv`` and build logs;
    - ``summary.csv`` has one row per result dir with the same status, host and attempts
      as its ``job.json``, and ``dssh status --json`` agrees;
    - the jobs in ``once`` (default: all) started exactly once; every job started at most
      as often as the attempts recorded and at most 1 + retries times (+1 when a start was
      on a host in ``lost``, lost for good); a COMPLETED job's recorded attempt really ran
      to its end on its recorded host; no two copies of a job ran at the same time;
    - no process of a workstation user is left but sshd's (after ``orphan_wait`` s);
    - no job dir is left on a host that was not lost, but the mark ``.dssh/collected`` a
      collected run leaves (SPEC "Where jobs live on a host").
    """
    statuses = statuses or {}
    want = {job: statuses.get(job, "COMPLETED") for job in sw.jobs}
    once = set(sw.jobs) if once is None else once
    problems: list[str] = []
    res = sw.results

    # -- the results dir
    infos: dict[str, dict[str, Any]] = {}
    if not res.is_dir():
        problems.append(f"no results dir {res}")
        entries = []
    else:
        entries = sorted(p.name for p in res.iterdir())
    extra_entries = [e for e in entries if e not in sw.jobs and e != "summary.csv"
                     and not re.fullmatch(r"build-ws\d+\.log", e)]
    if extra_entries:
        problems.append(f"unexpected entries in {res}: {extra_entries}")
    for job, status in want.items():
        d = res / job
        try:
            info = json.loads((d / "job.json").read_text())
        except (OSError, ValueError) as e:
            problems.append(f"{job}: no readable job.json in its result dir ({e})")
            continue
        infos[job] = info
        if info.get("job") != job:
            problems.append(f"{job}: job.json names job {info.get('job')!r}")
        if info.get("status") != status:
            problems.append(f"{job}: status {info.get('status')} in job.json, expected "
                            f"{status} (attempts {info.get('attempts')}, exit "
                            f"{info.get('exit_code')}, host {info.get('host')})")
            continue
        for f in ("stdout.txt", "stderr.txt"):
            if not (d / f).is_file():
                problems.append(f"{job}: {f} missing from its result dir")
        if status == "COMPLETED":
            if sorted(info.get("outputs") or []) != ["data.bin", "result.txt"]:
                problems.append(f"{job}: job.json outputs {info.get('outputs')}")
            want_text = (f"job={job}\ninput={sw.jobs[job]['md5']}\n"
                         f"build={'built-ok' if sw.build else ''}\n")
            try:
                text = (d / "result.txt").read_text()
            except OSError as e:
                problems.append(f"{job}: result.txt: {e}")
            else:
                if text != want_text:
                    problems.append(f"{job}: result.txt is {text!r}, expected {want_text!r} "
                                    "(a wrong md5 means a job ran on an incomplete input)")
            try:
                data = (d / "data.bin").read_bytes()
            except OSError as e:
                problems.append(f"{job}: data.bin: {e}")
            else:
                unit = f"{job}\n".encode()
                good = (unit * (sw.out_bytes // len(unit) + 1))[: sw.out_bytes]
                if data != good:
                    problems.append(f"{job}: data.bin has {len(data)} bytes, not the "
                                    f"{sw.out_bytes} the job wrote")
            if info.get("exit_code") != 0:
                problems.append(f"{job}: COMPLETED with exit code {info.get('exit_code')}")
        if status == "TIMEOUT" and info.get("timed_out") is not True:
            problems.append(f"{job}: TIMEOUT but job.json timed_out={info.get('timed_out')}")

    # -- summary.csv and dssh status
    rows: dict[str, dict[str, str]] = {}
    try:
        summary_rows = _read_summary(res)
    except OSError as e:
        problems.append(f"summary.csv: {e}")
        summary_rows = []
    for r in summary_rows:
        if r["job"] in rows:
            problems.append(f"summary.csv: job {r['job']} has two rows")
        rows[r["job"]] = r
    dirs = {e for e in entries if (res / e).is_dir()}
    if summary_rows and set(rows) != dirs:
        problems.append(f"summary.csv rows and result dirs differ: only in summary.csv "
                        f"{sorted(set(rows) - dirs)}, only as dirs {sorted(dirs - set(rows))}")
    for job, info in infos.items():
        r = rows.get(job)
        if r is None:
            continue
        got = (r["status"], r["host"], r["attempts"])
        exp = (info.get("status"), info.get("host"), str(info.get("attempts")))
        if got != exp:
            problems.append(f"{job}: summary.csv says status/host/attempts {got}, its job.json "
                            f"{exp}")
    try:
        st = {j["job"]: j for j in sw.status()["jobs"]}
    except (AssertionError, ValueError, KeyError) as e:
        problems.append(f"dssh status --json: {e}")
        st = {}
    if st and set(st) != set(sw.jobs):
        problems.append(f"dssh status lists jobs {sorted(set(st) ^ set(sw.jobs))} wrongly")
    for job, j in st.items():
        r = rows.get(job)
        if r is not None and (j["state"], str(j["attempts"])) != (r["status"], r["attempts"]):
            problems.append(f"{job}: dssh status says {j['state']} after {j['attempts']} "
                            f"attempt(s), summary.csv {r['status']} after {r['attempts']}")

    # -- starts, as the hosts saw them
    seen = starts(sw.ws)
    STATS["starts"] += sum(len(v) for v in seen.values())
    for job in sw.jobs:
        runs = seen.get(job, [])
        n = len(runs)
        info = infos.get(job, {})
        attempts = info.get("attempts")
        where = ", ".join(f"{r.host}#{r.attempt}{'' if r.end else ' (no end)'}" for r in runs)
        if job in once and n != 1:
            problems.append(f"{job}: started {n} times ({where}), expected exactly once")
        if isinstance(attempts, int) and n > attempts:
            problems.append(f"{job}: started {n} times ({where}) but {attempts} attempt(s) "
                            "recorded")
        allowed = 1 + sw.retries + (1 if any(r.host in lost for r in runs) else 0)
        if n > allowed:
            problems.append(f"{job}: started {n} times ({where}), at most {allowed} allowed")
        if info.get("status") == "COMPLETED" and not any(
                r.host == info.get("host") and r.attempt == attempts and r.end for r in runs):
            problems.append(f"{job}: COMPLETED as attempt {attempts} on {info.get('host')}, "
                            f"but no such run ended there (runs: {where or 'none'})")
        done = sorted((r for r in runs if r.end is not None), key=lambda r: r.start)
        for a, b in zip(done, done[1:], strict=False):
            if b.start < a.end:  # type: ignore[operator]
                problems.append(f"{job}: two copies ran at once: {a.host}#{a.attempt} "
                                f"({a.start:.2f}-{a.end:.2f}) and {b.host}#{b.attempt} "
                                f"({b.start:.2f}-{b.end:.2f})")

    # -- what is left on the hosts
    left = orphans(sw.ws, orphan_wait)
    if left:
        problems.append(f"processes left on the hosts {orphan_wait:.0f} s after the run:\n    "
                        + "\n    ".join(left))
    for w in sw.ws:
        if w.name in lost:
            continue
        dirs_left = sorted(f"{p.relative_to(w.workdir)} (holding {_listing(p)})"
                           for p in job_dirs(w, sw.name) if not retired(p))
        if dirs_left:
            problems.append(f"{w.name}: job dirs left on the host (more than the marks "
                            f".dssh/claim and .dssh/collected): {dirs_left}")

    lost_jobs = [j for j in sw.jobs if infos.get(j, {}).get("status") != want[j]]
    STATS["jobs lost"] += len(lost_jobs)
    if problems:
        status_rows = {j: st.get(j) for j in sorted({p.split(':')[0] for p in problems}
                                                     & set(sw.jobs))}
        raise AssertionError(
            f"{len(problems)} problem(s) after the {sw.name} scenario:\n  "
            + "\n  ".join(problems)
            + f"\n{sw.context()}\n"
            + "dssh status of the jobs named above:\n  "
            + "\n  ".join(f"{j}: {s}" for j, s in list(status_rows.items())[:15])
            + (f"\n{extra}" if extra else ""))

"""The measurements of ``bench/speed`` (issue 11): one function per section, and the tools they
run (dssh, GNU Parallel plain and with ``--controlmaster``, ``xargs`` over ssh ControlMasters,
local ``xargs``).

Every section returns a dict of raw numbers (what goes into ``--json``) and appends its rows to
the final table through ``Report.row``. A tool whose results are wrong (non-zero exit, a job
missing from its summary or joblog) raises ``BenchError``: the section is FAILED, the others
still run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import json
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    BenchError,
    Timed,
    Workstations,
    clean_env,
    count_logins,
    log_sizes,
    run_rusage,
    say,
    write_ssh_wrapper,
)

DSSH = "dssh"
DSSH_PLAIN = "dssh, no priority"
PAR = "parallel"
PAR_CM = "parallel --controlmaster"
PAR_CM_SORTED = "parallel --controlmaster, input longest-first"
XSSH = "xargs -P ssh via ControlMasters"
LOCAL = "xargs -P true (local)"

# Targets of issue 11.
T_PAR = 10.0  # dssh jobs/s >= 10x GNU Parallel without ControlMaster
T_PAR_CM = 3.0  # >= 3x with --controlmaster
T_MAKESPAN = 1.1  # makespan <= 1.1x the ideal / the offline LPT schedule
T_RSS_MB = 300.0  # peak head RSS of the 100-host, 20,000-job sweep
T_CONNECT = 10.0  # connection set-up of 100 hosts
T_STATUS = 0.3  # dssh status on a 100,000-job state file
T_HOSTS = 5.0  # dssh hosts on 100 hosts
T_STARTUP = 0.25  # dssh --help / status / template
T_SLOPE = 1.2  # log-log slope of a growth curve above this: worse than linear


def dssh_script() -> str:
    """The ``dssh`` console script next to this interpreter (not a pyenv shim, which adds
    ~50 ms of bash), else the one on PATH."""
    here = Path(sys.executable).parent / "dssh"
    if here.is_file():
        return str(here)
    found = shutil.which("dssh")
    if not found:
        raise BenchError("no `dssh` console script: pip install -e . first")
    return found


def dssh_module() -> list[str]:
    return [sys.executable, "-m", "distribute_ssh"]


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f} jobs/s" if x >= 100 else f"{x:.1f} jobs/s"


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} s" if x < 1 else f"{x:.2f} s"


# --------------------------------------------------------------------------- the report


class Report:
    """The one table: what, dssh, peer, dssh/peer, target, result; plus the raw numbers."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.sections: dict[str, Any] = {}
        self.failures: dict[str, str] = {}

    def row(self, what: str, dssh: str, peer: str = "-", ratio: str = "-", target: str = "-",
            result: str = "info") -> None:
        self.rows.append({"what": what, "dssh": dssh, "peer": peer, "ratio": ratio,
                          "target": target, "result": result})

    def failed(self, section: str, error: str) -> None:
        self.failures[section] = error
        self.row(section, "-", result="FAILED")


def met(ok: bool) -> str:
    return "MET" if ok else "MISSED"


# --------------------------------------------------------------------------- sweeps, results


def write_sweep(path: Path, name: str, command: str, *, params: dict[str, Any] | None = None,
                jobs: list[dict[str, Any]] | None = None, priority: str | None = None) -> Path:
    doc: dict[str, Any] = {"name": name, "run": {"command": command, "cpus": 1}}
    if priority is not None:
        doc["run"]["priority"] = priority
    if params is not None:
        doc["params"] = params
    if jobs is not None:
        doc["jobs"] = jobs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")  # JSON is YAML
    return path


def check_summary(d: Path, expect: int) -> None:
    """``expect`` COMPLETED rows in the one ``summary.csv`` under ``d/results``."""
    found = sorted((d / "results").rglob("summary.csv"))
    if len(found) != 1:
        raise BenchError(f"dssh: expected one summary.csv under {d / 'results'}, "
                         f"found {len(found)}")
    with open(found[0], newline="") as f:
        rows = list(csv.DictReader(f))
    done = sum(r["status"] == "COMPLETED" for r in rows)
    if len(rows) != expect or done != expect:
        raise BenchError(f"dssh: {found[0]} lists {len(rows)} jobs, {done} COMPLETED "
                         f"(expected {expect})")


def state_phases(state: Path, start_epoch: float, seconds: float) -> dict[str, Any]:
    """From the state file dssh wrote: when jobs started and ended, relative to the start of
    the dssh process, and per host when its first job started.

    ``connect_all`` is the connection set-up of the whole set of hosts: from the last
    ``queued`` event (``Head.prepare`` has put every job in the state; next the head connects
    to every host at once) to the first ``starting`` event of the host that got its first job
    last. It covers the SSH connection, the login, the workdir and script set-up, the ledger
    and the first start's round trip, for every host.
    """
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        started, finished = db.execute("SELECT min(started), max(finished) FROM jobs").fetchone()
        queued_last = db.execute("SELECT max(time) FROM events WHERE kind='queued'").fetchone()[0]
        first_by_host = dict(db.execute(
            "SELECT host, min(time) FROM events WHERE kind='starting' GROUP BY host").fetchall())
    finally:
        db.close()
    out: dict[str, Any] = {
        "first_start": started - start_epoch, "last_end": finished - start_epoch,
        "exit_after_last_end": start_epoch + seconds - finished,
        "hosts_used": len(first_by_host),
    }
    if queued_last is not None and first_by_host:
        out["prepared"] = queued_last - start_epoch
        out["connect_all"] = max(first_by_host.values()) - queued_last
        out["connect_first"] = min(first_by_host.values()) - queued_last
    return out


# --------------------------------------------------------------------------- the lab


class Lab:
    """A set of started workstations, with inventories and ssh wrappers for subsets of it."""

    def __init__(self, ws: Workstations, scratch: Path) -> None:
        self.ws = ws
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.wrappers = [write_ssh_wrapper(w, scratch / "bin" / f"{w.name}-ssh") for w in ws]
        self.runs = 0
        self._inventories: dict[tuple[int, int], Path] = {}

    def inventory(self, hosts: int, slots: int) -> Path:
        """An inventory of the first ``hosts`` workstations with ``cpus: slots`` each."""
        key = (hosts, slots)
        if key not in self._inventories:
            import yaml

            doc = self.ws.inventory(overrides={w.name: {"cpus": slots} for w in self.ws})
            doc["hosts"] = dict(list(doc["hosts"].items())[:hosts])
            path = self.scratch / f"inventory-{hosts}x{slots}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            self._inventories[key] = path
        return self._inventories[key]

    def fresh(self, tool: str, hosts: int | None = None) -> Path:
        """A new scratch dir for one run; the workstations emptied of the last one's leftovers."""
        self.runs += 1
        for w in list(self.ws)[:hosts]:
            w.kill_user_processes()  # spares sshd sessions; nothing should be left anyway
            w.clean_workdir()
        d = self.scratch / f"run{self.runs:03d}-{tool.split()[0].replace('/', '')}"
        d.mkdir()
        return d

    # -- the tools ----------------------------------------------------------------------------
    def dssh(self, hosts: int, slots: int, command: str, *, params: dict[str, Any] | None = None,
             jobs: list[dict[str, Any]] | None = None, expect: int, name: str,
             timeout: float | None = None, priority: str | None = None) -> dict[str, Any]:
        """``python -m distribute_ssh run sweep.yaml -i inventory.yaml --state <fresh> -q``,
        checked: exit 0 and ``expect`` COMPLETED rows in summary.csv. Killed (and FAILED)
        after ``timeout`` s, by default 300 s + 0.2 s per job: far beyond any sane run."""
        timeout = timeout or 300 + 0.2 * expect
        d = self.fresh(DSSH, hosts)
        sweep = write_sweep(d / "sweep.yaml", name, command, params=params, jobs=jobs,
                            priority=priority)
        state = d / "state.sqlite"
        since = log_sizes(self.ws)
        t = run_rusage([*dssh_module(), "run", sweep, "-i", self.inventory(hosts, slots),
                        "--state", state, "-q"], env=clean_env(d / "home"), cwd=d,
                       timeout=timeout)
        if t.seconds >= timeout:
            raise BenchError(f"dssh run of {expect} jobs on {hosts} hosts did not end within "
                             f"{timeout:.0f} s (killed); its files: {d}")
        t.check("dssh run")
        check_summary(d, expect)
        return {"seconds": t.seconds, "jobs": expect, "cpu": t.cpu_seconds,
                "max_rss_kib": t.max_rss_kib, "machine_cpu": t.machine_cpu_seconds,
                "logins": count_logins(self.ws, since),
                **state_phases(state, t.start_epoch, t.seconds)}

    def floor(self, hosts: int) -> dict[str, Any]:
        """``bench/_floor.py`` on the first ``hosts`` workstations: Python, asyncssh, one
        connection and one ``true`` per host, nothing of dssh's. Timed like dssh's runs."""
        d = self.fresh("floor", hosts)
        t = run_rusage([sys.executable, REPO / "bench" / "_floor.py",
                        self.inventory(hosts, 1)], env=clean_env(d / "home"), cwd=d,
                       timeout=120)
        t.check("bench/_floor.py")
        return {"seconds": t.seconds, **json.loads(t.stdout.strip().splitlines()[-1])}

    def parallel(self, hosts: int, slots: int, command: str, inputs: Sequence[str], *,
                 controlmaster: bool, n0: bool = True) -> dict[str, Any]:
        """GNU Parallel over one-word ssh wrappers (``S/WRAPPER 127.0.0.1``), joblog checked."""
        tool = PAR_CM if controlmaster else PAR
        d = self.fresh(tool, hosts)
        joblog = d / "joblog.tsv"
        logins = ",".join(f"{slots}/{w} {self.ws[i].address}"
                          for i, w in enumerate(self.wrappers[:hosts]))
        argv = ["parallel", "--will-cite", *(["-N0"] if n0 else []), "--joblog", joblog,
                "--sshlogin", logins, *(["--controlmaster"] if controlmaster else []), command]
        since = log_sizes(self.ws)
        t = run_rusage(argv, env=clean_env(d / "home"), cwd=d,
                       input="".join(f"{x}\n" for x in inputs), timeout=3600)
        t.check(tool)
        with open(joblog, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        ok = [r for r in rows if r["Exitval"] == "0" and r["Signal"] == "0"]
        if len(rows) != len(inputs) or len(ok) != len(inputs):
            raise BenchError(f"{tool}: {joblog} lists {len(rows)} jobs, {len(ok)} with exit 0 "
                             f"(expected {len(inputs)})")
        starts = [float(r["Starttime"]) for r in rows]
        ends = [float(r["Starttime"]) + float(r["JobRuntime"]) for r in rows]
        return {"seconds": t.seconds, "jobs": len(inputs), "cpu": t.cpu_seconds,
                "max_rss_kib": t.max_rss_kib, "machine_cpu": t.machine_cpu_seconds,
                "logins": count_logins(self.ws, since),
                "first_start": min(starts) - t.start_epoch, "last_end": max(ends) - t.start_epoch}

    def xargs_ssh(self, hosts: int, slots: int, n: int) -> dict[str, Any]:
        """``xargs -P H*S -L1 ssh`` of ``true``, round robin over one running ControlMaster per
        host (the issue's "xargs -P16 ssh through running ControlMasters"). Masters are started
        before the clock runs and stopped after; checked: xargs exits 0 (every ssh did)."""
        d = self.fresh(XSSH, hosts)
        env = clean_env(d / "home")
        socks = [d / f"cm{i}" for i in range(hosts)]
        for w, wrapper, sock in zip(self.ws, self.wrappers, socks, strict=False):
            # -f: into the background once logged in. Its stdout/stderr stay open in the
            # background, so they go to a file, not to a pipe we would wait on.
            with open(d / "master.log", "ab") as log:
                r = subprocess.run([wrapper, "-o", "ControlMaster=yes", "-o",
                                    f"ControlPath={sock}", "-o", "ControlPersist=no", "-f",
                                    "-N", w.address], env=env, stdout=log, stderr=log,
                                   timeout=60, stdin=subprocess.DEVNULL)
            if r.returncode:
                raise BenchError(f"{XSSH}: starting a ControlMaster failed: "
                                 f"{(d / 'master.log').read_text()[-500:]}")
        try:
            lines = "".join(f"-F /dev/null -o ControlMaster=no -S {socks[i % hosts]} "
                            f"{self.ws[i % hosts].address} true\n" for i in range(n))
            t = run_rusage(["xargs", "-P", str(hosts * slots), "-L1", "ssh"], env=env, cwd=d,
                           input=lines, timeout=3600)
            t.check(XSSH)
        finally:
            for w, sock in zip(self.ws, socks, strict=False):
                subprocess.run(["ssh", "-F", "/dev/null", "-S", str(sock), "-O", "exit",
                                w.address], env=env, capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        return {"seconds": t.seconds, "jobs": n, "cpu": t.cpu_seconds,
                "max_rss_kib": t.max_rss_kib, "machine_cpu": t.machine_cpu_seconds}


def xargs_local(n: int, procs: int, scratch: Path) -> dict[str, Any]:
    """``xargs -P procs -n1 true`` of n inputs on this machine: the local limit of dispatch."""
    d = scratch / "xargs-local"
    d.mkdir(parents=True, exist_ok=True)
    t = run_rusage(["xargs", "-P", str(procs), "-n1", "true"], env=clean_env(d / "home"),
                   cwd=d, input="".join(f"{i}\n" for i in range(n)))
    t.check(LOCAL)
    return {"seconds": t.seconds, "jobs": n, "cpu": t.cpu_seconds,
            "machine_cpu": t.machine_cpu_seconds}


def _summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool, rs in runs.items():
        if not rs:
            continue
        secs = [r["seconds"] for r in rs]
        m = median(secs)
        out[tool] = {"median_s": round(m, 3), "min_s": round(min(secs), 3),
                     "max_s": round(max(secs), 3), "jobs": rs[0]["jobs"],
                     "jobs_per_s": round(rs[0]["jobs"] / m, 2),
                     **{f"{k}_median": round(median([r[k] for r in rs]), 3)
                        for k in ("cpu", "logins", "first_start", "last_end", "max_rss_kib")
                        if all(k in r for r in rs)}}
    return out


def _repeat(tools: dict[str, Callable[[], dict[str, Any]]], repeat: int, label: str,
            unit: Callable[[dict[str, Any]], str]) -> dict[str, list[dict[str, Any]]]:
    """Every tool ``repeat`` times, in alternating order (so none always goes first)."""
    names = list(tools)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in names}
    for rep in range(repeat):
        for tool in names if rep % 2 == 0 else names[::-1]:
            r = tools[tool]()
            runs[tool].append(r)
            say(f"{label} {rep + 1}/{repeat} {tool}: {r['seconds']:.2f} s, {unit(r)}")
    return runs


# --------------------------------------------------------------------------- dispatch


def dispatch(lab: Lab, args: argparse.Namespace, pv: str | None, rep: Report) -> dict[str, Any]:
    n, h, s = args.jobs, args.hosts, args.slots
    inputs = [str(i) for i in range(1, n + 1)]
    tools: dict[str, Callable[[], dict[str, Any]]] = {
        DSSH: lambda: lab.dssh(h, s, "true", params={"i": list(range(1, n + 1))}, expect=n,
                               name=f"dispatch-{n}")}
    if pv:
        tools[PAR] = lambda: lab.parallel(h, s, "true", inputs, controlmaster=False)
        tools[PAR_CM] = lambda: lab.parallel(h, s, "true", inputs, controlmaster=True)
    tools[XSSH] = lambda: lab.xargs_ssh(h, s, n)
    tools[LOCAL] = lambda: xargs_local(n, h * s, lab.scratch)
    runs = _repeat(tools, args.repeat, "dispatch",
                   lambda r: f"{r['jobs'] / r['seconds']:.1f} jobs/s")
    summary = _summarize(runs)
    d = summary[DSSH]["jobs_per_s"]
    what = f"dispatch: {n} x true, {h} hosts x {s} slots (jobs/s)"
    for peer, target in ((PAR, T_PAR), (PAR_CM, T_PAR_CM), (XSSH, None), (LOCAL, None)):
        p = summary.get(peer)
        if p is None:
            rep.row(f"{what} vs {peer}", fmt_rate(d), "not run", result="n/a")
            continue
        ratio = d / p["jobs_per_s"]
        rep.row(f"{what} vs {peer}", fmt_rate(d), fmt_rate(p["jobs_per_s"]), f"{ratio:.2f}x",
                f">= {target:g}x" if target else "-",
                met(ratio >= target) if target else "info")
    return {"config": {"jobs": n, "hosts": h, "slots": s, "repeat": args.repeat},
            "summary": summary, "runs": runs}


# --------------------------------------------------------------------------- makespan


def makespan(lab: Lab, args: argparse.Namespace, pv: str | None, rep: Report) -> dict[str, Any]:
    n, h, s, sec = args.makespan_jobs, args.hosts, args.slots, args.makespan_seconds
    ideal = math.ceil(n / (h * s)) * sec
    cmd = f"sleep {sec:g}"
    tools: dict[str, Callable[[], dict[str, Any]]] = {
        DSSH: lambda: lab.dssh(h, s, cmd, params={"i": list(range(1, n + 1))}, expect=n,
                               name=f"makespan-{n}")}
    if pv:
        tools[PAR_CM] = lambda: lab.parallel(h, s, cmd, [str(i) for i in range(n)],
                                             controlmaster=True)
    runs = _repeat(tools, args.repeat, "makespan",
                   lambda r: f"{r['seconds'] / ideal:.2f}x ideal")
    summary = _summarize(runs)
    d = summary[DSSH]["median_s"]
    what = f"makespan: {n} x sleep {sec:g}, {h} x {s} (ideal {ideal:g} s)"
    rep.row(what, fmt_s(d), f"ideal {ideal:g} s", f"{d / ideal:.2f}x ideal",
            f"<= {T_MAKESPAN:g}x ideal", met(d / ideal <= T_MAKESPAN))
    span = statistics.median(r["last_end"] - r["first_start"] for r in runs[DSSH])
    first = statistics.median(r["first_start"] for r in runs[DSSH])
    rep.row(f"makespan: the same, from dssh's first job start to its last job end "
            f"(start-up, {first:.2f} s, left out)", fmt_s(span), f"ideal {ideal:g} s",
            f"{span / ideal:.2f}x ideal", f"<= {T_MAKESPAN:g}x ideal",
            met(span / ideal <= T_MAKESPAN))
    prepared = [r["prepared"] for r in runs[DSSH] if "prepared" in r]
    if prepared:
        # Where the start-up goes: Python, dssh's modules, the sweep and the state file;
        # then asyncssh (imported only once there is a host to connect to), the
        # connections, each host's set-up and the first batch of starts.
        p0 = statistics.median(prepared)
        rep.row(f"makespan: dssh's start-up, from its process start to its first job start "
                f"(Python, dssh's modules, sweep and state file {p0:.2f} s; asyncssh, "
                f"connections, set-up and the first start {first - p0:.2f} s)", fmt_s(first))
    fl = floor_rows(lab, args, rep, "makespan", ideal, f"ideal {ideal:g} s")
    if PAR_CM in summary:
        p = summary[PAR_CM]["median_s"]
        rep.row(f"{what} vs {PAR_CM}", fmt_s(d), fmt_s(p), f"{d / p:.2f}x")
    return {"config": {"jobs": n, "hosts": h, "slots": s, "seconds": sec,
                       "repeat": args.repeat}, "ideal_s": ideal, "summary": summary,
            "runs": runs, "floor": fl}


def floor_rows(lab: Lab, args: argparse.Namespace, rep: Report, section: str, best: float,
               what: str) -> dict[str, Any]:
    """The floor (``bench/_floor.py``), run ``--repeat`` times, and what it leaves of the
    1.1x target: a whole-command time of ``best`` plus the floor over 1.1x ``best`` means no
    head on Python and asyncssh can meet the target on this machine, whatever it schedules."""
    runs = [lab.floor(args.hosts) for _ in range(args.repeat)]
    for r in runs:
        say(f"{section} floor: {r['seconds']:.3f} s (import {r['import_s']:.3f} s, "
            f"connected {r['connected_s']:.3f} s, ran {r['ran_s']:.3f} s)")
    f = statistics.median(r["seconds"] for r in runs)
    rep.row(f"{section}: the floor of any head on Python and asyncssh (bench/_floor.py: "
            f"start, import asyncssh, connect to the {args.hosts} hosts, run `true` on each, "
            f"exit; nothing of dssh)", fmt_s(f), f"room {best * (T_MAKESPAN - 1):.2f} s",
            f"{f / (best * (T_MAKESPAN - 1)):.2f}x room", "-", "info")
    rep.row(f"{section}: {what} + that floor: the best a whole command can do here",
            fmt_s(best + f), what,
            f"{(best + f) / best:.2f}x, "
            + ("within" if (best + f) / best <= T_MAKESPAN else "over") + f" {T_MAKESPAN:g}x",
            "-", "info")
    return {"median_s": f, "runs": runs}


# --------------------------------------------------------------------------- mixed durations


def mixed_durations(n: int, mean: float, cap: float, seed: int) -> list[float]:
    """``n`` durations from a lognormal (sigma 1: heavy-tailed) with the given mean, clipped to
    [0.1, cap] and rounded to 10 ms, in the order drawn."""
    rng = random.Random(seed)
    sigma = 1.0
    mu = math.log(mean) - sigma * sigma / 2
    return [round(min(cap, max(0.1, rng.lognormvariate(mu, sigma))), 2) for _ in range(n)]


def list_schedule(durations: Sequence[float], slots: int) -> float:
    """Makespan of greedy list scheduling: each job, in the given order, onto the least loaded
    of ``slots`` slots (what a dispatcher that takes jobs in order achieves at best)."""
    loads = [0.0] * slots
    heapq.heapify(loads)
    for d in durations:
        heapq.heappush(loads, heapq.heappop(loads) + d)
    return max(loads)


def lpt(durations: Sequence[float], slots: int) -> float:
    """Makespan of the longest-processing-time-first schedule: each job, longest first, onto
    the least loaded of ``slots`` slots (Graham: within 4/3 of the optimum)."""
    return list_schedule(sorted(durations, reverse=True), slots)


def mixed(lab: Lab, args: argparse.Namespace, pv: str | None, rep: Report) -> dict[str, Any]:
    h, s = args.hosts, args.slots
    durs = mixed_durations(args.mixed_jobs, args.mixed_mean, args.mixed_cap, args.seed)
    best = lpt(durs, h * s)
    in_order = list_schedule(durs, h * s)  # the best a dispatcher taking them as drawn can do
    bound = max(max(durs), sum(durs) / (h * s))
    width = len(str(len(durs)))
    # The sweep lists the jobs as drawn; with run.priority "{d}" (the expected run time,
    # as a user who knows it writes it) dssh starts the longest first. Without it, dssh
    # keeps the order written: shown for comparison.
    as_drawn = [{"name": f"j{i + 1:0{width}d}", "params": {"d": d}} for i, d in enumerate(durs)]
    tools: dict[str, Callable[[], dict[str, Any]]] = {
        DSSH: lambda: lab.dssh(h, s, "sleep {d}", jobs=as_drawn, expect=len(durs),
                               name="mixed", priority="{d}"),
        DSSH_PLAIN: lambda: lab.dssh(h, s, "sleep {d}", jobs=as_drawn, expect=len(durs),
                                     name="mixed-plain")}
    if pv:
        tools[PAR_CM_SORTED] = lambda: lab.parallel(
            h, s, "sleep {}", [f"{d:g}" for d in sorted(durs, reverse=True)],
            controlmaster=True, n0=False)
    runs = _repeat(tools, args.repeat, "mixed", lambda r: f"{r['seconds'] / best:.2f}x LPT")
    summary = _summarize(runs)
    what = (f"mixed: {len(durs)} lognormal durations (mean {statistics.mean(durs):.2f} s, "
            f"max {max(durs):g} s, seed {args.seed}), {h} x {s} vs offline LPT {best:.2f} s")
    d = summary[DSSH]["median_s"]
    rep.row(what + ', priority "{d}"', fmt_s(d), f"LPT {best:.2f} s", f"{d / best:.2f}x LPT",
            f"<= {T_MAKESPAN:g}x", met(d / best <= T_MAKESPAN))
    dp = summary[DSSH_PLAIN]["median_s"]
    rep.row("mixed: dssh without priority (sweep order) vs the offline schedule in that order",
            fmt_s(dp), f"in order {in_order:.2f} s", f"{dp / in_order:.2f}x")
    span = statistics.median(r["last_end"] - r["first_start"] for r in runs[DSSH])
    rep.row('mixed: the same (priority "{d}"), from dssh\'s first job start to its last job '
            "end", fmt_s(span), f"LPT {best:.2f} s", f"{span / best:.2f}x LPT",
            f"<= {T_MAKESPAN:g}x", met(span / best <= T_MAKESPAN))
    if PAR_CM_SORTED in summary:
        p = summary[PAR_CM_SORTED]["median_s"]
        rep.row(f"mixed: dssh (priority) vs {PAR_CM_SORTED}", fmt_s(d), fmt_s(p),
                f"{d / p:.2f}x", "-", "info")
    fl = floor_rows(lab, args, rep, "mixed", best, f"LPT {best:.2f} s")
    return {"config": {"jobs": len(durs), "mean": args.mixed_mean, "cap": args.mixed_cap,
                       "seed": args.seed, "distribution": "lognormal sigma 1, clipped",
                       "hosts": h, "slots": s, "repeat": args.repeat},
            "durations": durs, "lpt_s": best, "in_order_s": in_order, "lower_bound_s": bound,
            "summary": summary, "runs": runs, "floor": fl}


# --------------------------------------------------------------------------- the curve


def curve(lab: Lab, args: argparse.Namespace, pv: str | None, rep: Report,
          done: dict[str, Any]) -> dict[str, Any]:
    """Throughput (250 x true per host) and makespan (16 x sleep per host) at each host count,
    once per tool; the point that equals the dispatch / makespan section is reused."""
    s, sec = args.slots, args.makespan_seconds
    par = [(PAR, False), (PAR_CM, True)] if pv else []
    points: list[dict[str, Any]] = []
    for h in args.host_counts:
        n = args.jobs_per_host * h
        point: dict[str, Any] = {"hosts": h, "jobs": n}
        disp = done.get("dispatch")
        if disp and h == args.hosts and n == args.jobs:
            point["throughput"] = {t: v["jobs_per_s"] for t, v in disp["summary"].items()
                                   if t in (DSSH, PAR, PAR_CM)}
            point["throughput_from"] = "dispatch section (median)"
        else:
            inputs = [str(i) for i in range(1, n + 1)]
            runs = {DSSH: lab.dssh(h, s, "true", params={"i": list(range(1, n + 1))},
                                   expect=n, name=f"curve-{n}")}
            for tool, cm in par:
                runs[tool] = lab.parallel(h, s, "true", inputs, controlmaster=cm)
            point["throughput"] = {t: round(n / r["seconds"], 2) for t, r in runs.items()}
            for t, r in runs.items():
                say(f"curve {h} hosts {t}: {n} x true in {r['seconds']:.2f} s, "
                    f"{n / r['seconds']:.1f} jobs/s")
        m = args.makespan_per_host * h
        ideal = math.ceil(m / (h * s)) * sec
        point["makespan_jobs"], point["makespan_ideal_s"] = m, ideal
        mk = done.get("makespan")
        if mk and h == args.hosts and m == args.makespan_jobs:
            point["makespan_s"] = {t: v["median_s"] for t, v in mk["summary"].items()}
            point["makespan_from"] = "makespan section (median)"
        else:
            runs = {DSSH: lab.dssh(h, s, f"sleep {sec:g}", params={"i": list(range(1, m + 1))},
                                   expect=m, name=f"curve-makespan-{m}")}
            if pv:
                runs[PAR_CM] = lab.parallel(h, s, f"sleep {sec:g}", [str(i) for i in range(m)],
                                            controlmaster=True)
            point["makespan_s"] = {t: round(r["seconds"], 3) for t, r in runs.items()}
            for t, r in runs.items():
                say(f"curve {h} hosts {t}: {m} x sleep {sec:g} in {r['seconds']:.2f} s "
                    f"({r['seconds'] / ideal:.2f}x ideal)")
        points.append(point)
    for p in points:
        tp = p["throughput"]
        if DSSH in tp:
            peers = ", ".join(f"{t} {v:.0f}" for t, v in tp.items() if t != DSSH)
            rep.row(f"throughput at {p['hosts']} hosts x {s} ({p['jobs']} x true)",
                    fmt_rate(tp[DSSH]), peers or "-",
                    f"{tp[DSSH] / tp[PAR_CM]:.2f}x vs -CM" if PAR_CM in tp else "-")
        mk_ = p["makespan_s"]
        if DSSH in mk_:
            rep.row(f"makespan at {p['hosts']} hosts ({p['makespan_jobs']} x sleep "
                    f"{sec:g}, ideal {p['makespan_ideal_s']:g} s)",
                    fmt_s(mk_[DSSH]),
                    fmt_s(mk_[PAR_CM]) if PAR_CM in mk_ else "-",
                    f"{mk_[DSSH] / p['makespan_ideal_s']:.2f}x ideal")
    return {"slots": s, "points": points}


def plot(path: Path, curve_data: dict[str, Any], machine: dict[str, Any]) -> None:
    """Two panels: throughput (jobs/s) and makespan / ideal, against the host count."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("--plot needs matplotlib (pip install -e '.[bench]' or "
                         "pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = curve_data["points"]
    hosts = [p["hosts"] for p in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {DSSH: "o-", PAR: "s--", PAR_CM: "^--"}
    for tool in (DSSH, PAR, PAR_CM):
        ys = [p["throughput"].get(tool) for p in pts]
        if any(y is not None for y in ys):
            ax1.plot(hosts, [y if y is not None else float("nan") for y in ys], style[tool],
                     label=tool)
    ax1.set_xlabel(f"workstations (each with {curve_data['slots']} slots)")
    ax1.set_ylabel("jobs/s (true; whole command)")
    ax1.set_title("dispatch throughput")
    ax1.set_ylim(bottom=0)
    ax1.set_xticks(hosts)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    for tool in (DSSH, PAR_CM):
        ys = [p["makespan_s"].get(tool) for p in pts]
        if any(y is not None for y in ys):
            ax2.plot(hosts, [y / p["makespan_ideal_s"] if y is not None else float("nan")
                             for y, p in zip(ys, pts, strict=True)], style[tool], label=tool)
    ax2.axhline(T_MAKESPAN, color="grey", linestyle=":", label=f"target {T_MAKESPAN:g}x")
    ax2.axhline(1.0, color="black", linewidth=0.8)
    ax2.set_xlabel("workstations")
    ax2.set_ylabel("makespan / ideal")
    ax2.set_title(f"makespan (sleep jobs, {pts[0]['makespan_jobs'] // hosts[0]} per host)")
    ax2.set_xticks(hosts)
    top = max([T_MAKESPAN, *(v / p["makespan_ideal_s"] for p in pts
                             for v in p["makespan_s"].values())])
    ax2.set_ylim(0.95, top * 1.15)  # room for the legend above the curves
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper left", ncol=3, fontsize=8)
    fig.suptitle(f"bench/speed, nproc {machine['nproc']}, {machine['date']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- workstations' cost


def sshd_memory(ws: Workstations) -> dict[str, Any]:
    """RSS and PSS (shared pages split among sharers) of the listening sshd processes."""
    rss = pss = 0
    for w in ws:
        if not w.pid:
            continue
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{w.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return {"listeners": len(ws), "rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1),
            "start_seconds": round(ws.start_seconds, 2)}


# --------------------------------------------------------------------------- scale, hosts


def scale(lab: Lab, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    h, n, s = args.scale_hosts, args.scale_jobs, args.scale_slots
    say(f"scale: {n} x true on {h} hosts x {s} slots")
    r = lab.dssh(h, s, "true", params={"i": {"start": 1, "stop": n}}, expect=n,
                 name=f"scale-{n}")
    rss_mb = r["max_rss_kib"] / 1024
    say(f"scale: {r['seconds']:.1f} s ({n / r['seconds']:.0f} jobs/s), head CPU "
        f"{r['cpu']:.1f} s, peak RSS {rss_mb:.0f} MiB, every host started a job "
        f"{r.get('connect_all', float('nan')):.2f} s after the head began connecting")
    what = f"scale: {n} x true on {h} hosts x {s}"
    rep.row(f"{what}: completes", f"{n}/{n} COMPLETED in {r['seconds']:.1f} s",
            target="completes", result="MET")
    rep.row(f"{what}: throughput", fmt_rate(n / r["seconds"]))
    rep.row(f"{what}: head peak RSS", f"{rss_mb:.0f} MiB", target=f"< {T_RSS_MB:g} MB",
            result=met(rss_mb * 1.048576 < T_RSS_MB))
    rep.row(f"{what}: head CPU per job", f"{1000 * r['cpu'] / n:.2f} ms "
            f"({r['cpu']:.1f} s total)")
    if "connect_all" in r:
        rep.row(f"connection set-up of {h} hosts (until each has started a job)",
                fmt_s(r["connect_all"]), target=f"< {T_CONNECT:g} s",
                result=met(r["connect_all"] < T_CONNECT))
    if r["hosts_used"] != h:
        raise BenchError(f"scale: jobs ran on {r['hosts_used']} of {h} hosts")
    return {"config": {"hosts": h, "jobs": n, "slots": s}, "run": r}


def hosts_probe(lab: Lab, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    h = args.scale_hosts
    inv = lab.inventory(h, args.scale_slots)
    runs = []
    for i in range(args.hosts_repeat):
        d = lab.fresh("hosts", h)
        t = run_rusage([dssh_script(), "hosts", "-i", inv, "--json"],
                       env=clean_env(d / "home"), cwd=d, timeout=600)
        t.check("dssh hosts")
        rows = json.loads(t.stdout)
        up = sum(bool(x.get("reachable")) for x in rows)
        if len(rows) != h or up != h:
            raise BenchError(f"dssh hosts: {len(rows)} rows, {up} reachable (expected {h})")
        runs.append({"seconds": t.seconds, "cpu": t.cpu_seconds, "max_rss_kib": t.max_rss_kib})
        say(f"dssh hosts {i + 1}/{args.hosts_repeat} on {h} hosts: {t.seconds:.2f} s")
    m = median([x["seconds"] for x in runs])
    rep.row(f"dssh hosts on {h} hosts (median of {len(runs)})", fmt_s(m),
            target=f"< {T_HOSTS:g} s", result=met(m < T_HOSTS))
    return {"hosts": h, "median_s": m, "runs": runs}


# --------------------------------------------------------------------------- state files


def big_sweep(path: Path, name: str, n: int) -> Path:
    return write_sweep(path, name, "true", params={"i": {"start": 1, "stop": n}})


def fake_inventory(path: Path, hosts: int = 4, cpus: int = 4) -> Path:
    """Hosts that are never contacted (``status`` and ``--dry-run`` read no host)."""
    import yaml

    path.write_text(yaml.safe_dump({"hosts": {f"ws{i}": {"address": "127.0.0.1", "cpus": cpus}
                                              for i in range(1, hosts + 1)}}))
    return path


def build_state(state: Path, sweep_file: Path, inventory: Path, results: Path,
                n_hosts: int = 4) -> dict[str, Any]:
    """A state file as ``dssh run`` leaves it mid-sweep, written by dssh's own code:
    ``Head.prepare`` queues every job, then each job goes through the transitions the engine
    records (``State.set_job`` for ``starting``, ``running`` and its end, the ``attempts`` row as
    ``Head._dispatch_inner`` and ``_collect_inner`` write it): 2% still queued, up to 16
    running, 1% of the finished ones FAILED (exit 1), the rest COMPLETED."""
    from distribute_ssh import load_inventory, load_sweep
    from distribute_ssh import state as st
    from distribute_ssh.engine import Head, RunOptions

    t0 = time.perf_counter()
    head = Head(load_sweep(sweep_file), load_inventory(inventory),
                RunOptions(state_path=state, results=results), sweep_file=str(sweep_file))
    try:
        head.prepare()
        jobs = head.in_order
        n = len(jobs)
        queued = n // 50
        running = min(16, n // 100)
        finished = n - queued - running
        base = time.time() - n * 0.05 - 3600
        db = head.state
        for k, job in enumerate(jobs[:finished + running]):
            host = f"ws{k % n_hosts + 1}"
            jdir = f"/home/u/.dssh/jobs/{head.sweep.namespace}/{head.sweep.name}/" \
                   f"{job.planned.name}/1"
            started = base + k * 0.05
            db.set_job(job.id, "starting", state=st.STARTING, attempts=1, host=host,
                       remote_dir=jdir, cpus=1, gpus="[]", exit_code=None, reason=None)
            with db.tx() as c:
                c.execute("INSERT OR REPLACE INTO attempts (job_id, attempt, host, remote_dir, "
                          "state, started) VALUES (?,?,?,?,?,?)",
                          (job.id, 1, host, jdir, st.STARTING, started))
            db.set_job(job.id, "running", state=st.RUNNING, pid=10000 + k, started=started)
            if k >= finished:
                continue
            status, code = (st.FAILED, 1) if k % 100 == 99 else (st.COMPLETED, 0)
            end = started + 1.0 + (k % 7) * 0.1
            with db.tx() as c:
                c.execute("UPDATE attempts SET state=?, exit_code=?, finished=? "
                          "WHERE job_id=? AND attempt=?", (status, code, end, job.id, 1))
            db.set_job(job.id, status.lower(), state=status, exit_code=code, finished=end,
                       started=started, reason=None)
            db.set_retired(job.id, 1)
        counts = db.counts(head.sweep_id)
    finally:
        head.lock.release()
        head.close()
    return {"jobs": n, "counts": counts, "build_seconds": round(time.perf_counter() - t0, 1),
            "bytes": state.stat().st_size, "sweep": f"{head.sweep.namespace}/{head.sweep.name}"}


def timed_median(argv: Sequence[Any], repeat: int, d: Path, what: str
                 ) -> tuple[float, list[Timed]]:
    ts = []
    for _ in range(repeat):
        t = run_rusage(argv, env=clean_env(d / "home"), cwd=d, timeout=600)
        t.check(what)
        ts.append(t)
    return median([t.seconds for t in ts]), ts


def status(args: argparse.Namespace, scratch: Path, rep: Report) -> dict[str, Any]:
    """State files of every size in --growth-jobs and --status-jobs (built once, shared with
    the growth section); ``dssh status`` on the largest, overview and per-job listing."""
    d = scratch / "status"
    d.mkdir(parents=True, exist_ok=True)
    inv = fake_inventory(d / "inventory.yaml")
    files: dict[int, dict[str, Any]] = {}
    for n in sorted({*args.growth_jobs, args.status_jobs}):
        sw = big_sweep(d / f"sweep-{n}.yaml", f"status-{n}", n)
        state = d / f"state-{n}.sqlite"
        say(f"status: building a state file of {n} jobs with dssh's own code")
        info = build_state(state, sw, inv, d / "results")
        say(f"status: {n} jobs written in {info['build_seconds']} s "
            f"({info['bytes'] / 1e6:.1f} MB): {info['counts']}")
        files[n] = {**info, "state": str(state), "sweep_file": str(sw)}
    n = args.status_jobs
    f = files[n]
    out: dict[str, Any] = {"files": {str(k): v for k, v in files.items()}}
    for label, argv in (("python -m distribute_ssh status", [*dssh_module(), "status"]),
                        ("dssh status", [dssh_script(), "status"])):
        m, ts = timed_median([*argv, "--state", f["state"]], args.status_repeat, d, label)
        if str(n) not in ts[0].stdout and f"{n:,}" not in ts[0].stdout:
            raise BenchError(f"{label}: the output does not show the {n} jobs:\n{ts[0].stdout}")
        out[label] = {"median_s": m, "runs": [t.seconds for t in ts],
                      "max_rss_kib": ts[0].max_rss_kib}
        say(f"{label} on {n} jobs: median {m:.3f} s")
        rep.row(f"`{label} --state F`, {n:,} jobs (median of {len(ts)})", fmt_s(m),
                target=f"< {T_STATUS:g} s", result=met(m < T_STATUS))
    m, ts = timed_median([dssh_script(), "status", f["sweep"], "--state", f["state"]],
                         args.status_repeat, d, "dssh status SWEEP")
    lines = ts[0].stdout.count("\n")
    if lines < n:
        raise BenchError(f"dssh status {f['sweep']}: {lines} lines for {n} jobs")
    out["dssh status SWEEP"] = {"median_s": m, "runs": [t.seconds for t in ts],
                                "max_rss_kib": ts[0].max_rss_kib, "lines": lines}
    say(f"dssh status {f['sweep']} ({n} job rows): median {m:.3f} s")
    rep.row(f"`dssh status SWEEP` listing all {n:,} jobs", fmt_s(m))
    return out


# --------------------------------------------------------------------------- start-up


def startup(args: argparse.Namespace, scratch: Path, rep: Report) -> dict[str, Any]:
    d = scratch / "startup"
    d.mkdir(parents=True, exist_ok=True)
    empty = d / "no-such-state.sqlite"
    cmds = {"dssh --help": ["--help"], "dssh status": ["status", "--state", empty],
            "dssh template": ["template"]}
    out: dict[str, Any] = {"script": dssh_script()}
    for label, rest in cmds.items():
        m, ts = timed_median([dssh_script(), *rest], args.startup_repeat, d, label)
        # Which modules load: python -X importtime on the same console script.
        t = run_rusage([sys.executable, "-X", "importtime", dssh_script(), *rest],
                       env=clean_env(d / "home"), cwd=d)
        t.check(f"{label} (-X importtime)")
        mods = [line.rsplit("|", 1)[-1].strip() for line in t.stderr.splitlines()
                if line.startswith("import time:") and "|" in line]
        heavy = sorted({x.split(".")[0] for x in mods} & {"asyncssh", "cryptography", "cffi"})
        out[label] = {"median_s": m, "runs": [x.seconds for x in ts], "modules": len(mods),
                      "heavy_imports": heavy, "max_rss_kib": ts[0].max_rss_kib}
        say(f"{label}: median {m:.3f} s, {len(mods)} modules imported"
            f"{', imports ' + ', '.join(heavy) if heavy else ''}")
        rep.row(f"start-up: `{label}` (median of {len(ts)})", fmt_s(m),
                target=f"< {T_STARTUP:g} s", result=met(m < T_STARTUP))
        rep.row(f"start-up: `{label}` imports asyncssh", "yes" if "asyncssh" in heavy else "no",
                target="no", result=met("asyncssh" not in heavy))
    return out


# --------------------------------------------------------------------------- growth


def _slope(xs: Sequence[float], ys: Sequence[float]) -> list[float | None]:
    """Log-log slope between each point and the one before (None for the first): 1 is
    linear growth, below 1 sub-linear (fixed costs dominate), above 1 worse than linear."""
    out: list[float | None] = [None]
    for i in range(1, len(xs)):
        if ys[i - 1] > 0 and ys[i] > 0:
            out.append(math.log(ys[i] / ys[i - 1]) / math.log(xs[i] / xs[i - 1]))
        else:
            out.append(None)
    return out


def _series(name: str, unit: str, pts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-unit costs and slopes of one curve; ``pts``: size, seconds, cpu, max_rss_kib."""
    xs = [p["n"] for p in pts]
    cpu_slope = _slope(xs, [p["cpu"] for p in pts])
    rows = []
    for i, p in enumerate(pts):
        row = {**p, "cpu_per_unit_ms": 1000 * p["cpu"] / p["n"], "cpu_slope": cpu_slope[i]}
        if i:
            q = pts[i - 1]
            row["marginal_cpu_ms"] = 1000 * (p["cpu"] - q["cpu"]) / (p["n"] - q["n"])
            row["marginal_rss_kib"] = (p["max_rss_kib"] - q["max_rss_kib"]) / (p["n"] - q["n"])
        rows.append(row)
    worst = max((s for s in cpu_slope if s is not None), default=None)
    # Memory: the marginal KiB per unit must not grow from one step to the next by more than
    # the noise (a linear curve has a flat marginal cost).
    return {"series": name, "unit": unit, "points": rows, "worst_cpu_slope": worst}


def growth_jobs(args: argparse.Namespace, scratch: Path, status_out: dict[str, Any] | None,
                rep: Report) -> dict[str, Any]:
    d = scratch / "growth"
    d.mkdir(parents=True, exist_ok=True)
    inv = fake_inventory(d / "inventory.yaml")
    files = (status_out or {}).get("files", {})
    st_pts, dry_pts = [], []
    for n in sorted(args.growth_jobs):
        f = files.get(str(n))
        if f is None:  # the status section did not run: build it here
            sw = big_sweep(d / f"sweep-{n}.yaml", f"status-{n}", n)
            f = {**build_state(d / f"state-{n}.sqlite", sw, inv, d / "results"),
                 "state": str(d / f"state-{n}.sqlite"), "sweep_file": str(sw)}
        for label, argv, pts in (
                ("dssh status SWEEP", [dssh_script(), "status", f["sweep"], "--state",
                                       f["state"]], st_pts),
                ("dssh run --dry-run", [dssh_script(), "run", f["sweep_file"], "-i", inv,
                                        "--dry-run", "--state", d / "dry.sqlite"], dry_pts)):
            t = run_rusage(argv, env=clean_env(d / "home"), cwd=d, timeout=3600)
            t.check(label)
            if t.stdout.count("\n") < n:
                raise BenchError(f"{label}: {t.stdout.count(chr(10))} lines for {n} jobs")
            pts.append({"n": n, "seconds": t.seconds, "cpu": t.cpu_seconds,
                        "max_rss_kib": t.max_rss_kib})
            say(f"growth: {label} on {n} jobs: {t.seconds:.2f} s, CPU {t.cpu_seconds:.2f} s, "
                f"peak RSS {t.max_rss_kib / 1024:.0f} MiB")
    series = [_series("dssh status SWEEP (all job rows)", "job", st_pts),
              _series("dssh run --dry-run", "job", dry_pts)]
    _growth_rows(series, rep)
    return {"series": series}


def growth_hosts(lab: Lab, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    n, s = args.growth_host_jobs, args.scale_slots
    pts = []
    for h in sorted(args.growth_hosts):
        r = lab.dssh(h, s, "true", params={"i": {"start": 1, "stop": n}}, expect=n,
                     name=f"growth-{h}-hosts")
        pts.append({"n": h, "seconds": r["seconds"], "cpu": r["cpu"],
                    "max_rss_kib": r["max_rss_kib"], "connect_all": r.get("connect_all")})
        say(f"growth: {n} x true on {h} hosts: {r['seconds']:.2f} s, head CPU {r['cpu']:.2f} s, "
            f"peak RSS {r['max_rss_kib'] / 1024:.0f} MiB, all connected "
            f"{r.get('connect_all', float('nan')):.2f} s")
    series = [_series(f"dssh run, {n} x true, by hosts", "host", pts)]
    _growth_rows(series, rep)
    return {"series": series}


def _growth_rows(series: list[dict[str, Any]], rep: Report) -> None:
    for sr in series:
        pts = sr["points"]
        curve_ = ", ".join(f"{p['n']:,}: {p['cpu']:.2f} s/{p['max_rss_kib'] / 1024:.0f} MiB"
                           for p in pts)
        w = sr["worst_cpu_slope"]
        rep.row(f"growth: {sr['series']} (head CPU / peak RSS per size)", curve_,
                ratio=f"CPU slope {w:.2f}" if w is not None else "-",
                target=f"slope <= {T_SLOPE:g}", result=met(w <= T_SLOPE) if w is not None
                else "n/a")


def growth_table(growth: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = []
    for part in ("jobs", "hosts"):
        for sr in (growth.get(part) or {}).get("series", []):
            for p in sr["points"]:
                rows.append([sr["series"], f"{p['n']:,} {sr['unit']}s", f"{p['seconds']:.2f}",
                             f"{p['cpu']:.2f}", f"{p['max_rss_kib'] / 1024:.0f}",
                             f"{p['cpu_per_unit_ms']:.3f}",
                             f"{p['marginal_cpu_ms']:.3f}" if "marginal_cpu_ms" in p else "-",
                             f"{p['marginal_rss_kib']:.1f}" if "marginal_rss_kib" in p else "-",
                             f"{p['cpu_slope']:.2f}" if p["cpu_slope"] is not None else "-"])
    return tabulate(rows, headers=["growth", "size", "wall s", "CPU s", "peak RSS MiB",
                                   "CPU ms/unit", "marginal CPU ms/unit",
                                   "marginal RSS KiB/unit", "CPU log-log slope"],
                    disable_numparse=True)


def env_note() -> str:
    return f"PYTHONPATH={os.environ.get('PYTHONPATH', '')} repo {REPO}"

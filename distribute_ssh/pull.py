"""``dssh pull`` and ``dssh clean``: the outputs a sweep left on its hosts.

When a job ends, the files its sweep's ``outputs.collect`` (less ``outputs.exclude``)
selects come home; the rest stay in the job's dir on its host, listed in ``job.json``
(``left_on_host``). ``dssh pull`` fetches them, filtered by globs, straight from the hosts
(no server in between); ``--list`` only says what is where and how big. ``dssh clean``
removes them, and the sweep's builds that nothing else uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from . import remote
from . import state as st
from .collect import matches
from .errors import ConfigError, DsshError, HostError
from .hosts.base import HostConnection, RemoteEntry, connect_named
from .model.inventory import Inventory
from .transfer import Meter, fetch

MARGIN = 64 << 20  # kept free on the head's disk beyond what a pull needs


@attrs.define
class JobFiles:
    job: str
    host: str
    remote_dir: str
    files: list[RemoteEntry] = attrs.Factory(list)
    error: str = ""

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files)


def pick_jobs(state: st.State, sweep: Any, names: list[str] | None) -> tuple[list[Any], list[str]]:
    """The sweep's jobs that ended on a host, and notes about the ones that cannot be
    pulled (still running, never started)."""
    rows = state.jobs(sweep["id"])
    if names:
        known = {r["name"] for r in rows}
        unknown = [n for n in names if n not in known]
        if unknown:
            sample = ", ".join(sorted(known)[:5]) + (", ..." if len(known) > 5 else "")
            raise ConfigError(f"no job {', '.join(unknown)} in sweep {sweep['namespace']}/"
                              f"{sweep['name']} (its jobs: {sample or 'none'})")
        rows = [r for r in rows if r["name"] in set(names)]
    take, notes = [], []
    for r in rows:
        if not r["host"] or not r["remote_dir"]:
            continue
        if r["state"] not in st.FINISHED_STATES:
            notes.append(f"{r['name']}: {r['state'].lower()} on {r['host']}; pull it once it "
                         "has ended")
            continue
        take.append(r)
    return take, notes



def _wanted(path: str, include: list[str], exclude: list[str]) -> bool:
    return (not include or matches(path, include)) and not matches(path, exclude)


async def survey(inventory: Inventory, rows: list[Any], include: list[str], exclude: list[str],
                 accept_new: bool = False) -> tuple[dict[str, HostConnection], list[JobFiles]]:
    """Connect to the hosts of ``rows`` and list what each job left there (open
    connections returned, for fetching; the caller closes them)."""
    by_host: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_host[r["host"]].append(r)
    conns: dict[str, HostConnection] = {}
    out: list[JobFiles] = []

    async def on_host(host: str, rs: list[Any]) -> None:
        jobs = [JobFiles(r["name"], host, r["remote_dir"]) for r in rs]
        out.extend(jobs)
        try:
            conn = await connect_named(inventory, host, accept_new)
        except HostError as e:
            for j in jobs:
                j.error = str(e)
            return
        conns[host] = conn
        for j in jobs:
            try:
                entries = await conn.walk(f"{j.remote_dir}/outputs")
            except HostError as e:
                j.error = str(e)
                continue
            j.files = [e for e in entries
                       if e.kind == "file" and _wanted(e.path, include, exclude)]

    await asyncio.gather(*(on_host(h, rs) for h, rs in by_host.items()))
    out.sort(key=lambda j: j.job)
    return conns, out


def check_space(dest: Path, need: int) -> None:
    """Refuse a pull the head's disk cannot take, before anything is fetched."""
    d = dest
    while not d.exists():
        d = d.parent
    free = shutil.disk_usage(d).free
    if need + MARGIN > free:
        raise DsshError(f"{dest}: the files need {size_text(need)} and only {size_text(free)} are "
                        f"free there (dssh keeps {size_text(MARGIN)} spare): free some space, "
                        "pull fewer files (--include/--exclude, or name jobs), or pull "
                        "elsewhere (--to DIR)")


async def pull(conns: dict[str, HostConnection], jobs: list[JobFiles], dest: Path, *,
               verify: bool = False, meter: Meter | None = None,
               on_job: Callable[[JobFiles, str], None] | None = None) -> int:
    """Fetch each job's files into ``dest/<job>/``; returns how many jobs failed.

    Files arrive in a staging dir and are renamed into place one by one: a pull cut
    short leaves complete files and no partial one under a final name."""
    failed = 0
    tar: dict[str, bool] = {}
    gates = {h: asyncio.Semaphore(2) for h in conns}

    async def one(j: JobFiles) -> None:
        nonlocal failed
        conn = conns.get(j.host)
        if conn is None or j.error:
            failed += 1
            if on_job:
                on_job(j, j.error or f"{j.host} is unreachable")
            return
        if j.host not in tar:
            res = await conn.run("tar --version 2>/dev/null | head -n 1", timeout=30)
            tar[j.host] = "GNU tar" in res.text
        staging = dest / ".incoming" / f"pull-{j.job}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            async with gates[j.host]:
                got = await fetch(conn, f"{j.remote_dir}/outputs", j.files, staging,
                                  tar=tar[j.host], verify=verify, meter=meter)
            await asyncio.to_thread(_place_files, staging, dest / j.job, sorted(got.got))
        except (HostError, OSError) as e:
            failed += 1
            if on_job:
                on_job(j, str(e))
            return
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if on_job:
            on_job(j, "; ".join(got.notes))

    await asyncio.gather(*(one(j) for j in jobs if j.files or j.error))
    with contextlib.suppress(OSError):
        (dest / ".incoming").rmdir()
    return failed


def _place_files(staging: Path, final: Path, names: list[str]) -> None:
    for n in names:
        src = staging.joinpath(*n.split("/"))
        dst = final.joinpath(*n.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


async def clean(state: st.State, sweep: Any, inventory: Inventory, names: list[str] | None,
                accept_new: bool = False) -> dict[str, Any]:
    """Remove what the sweep's ended jobs left on their hosts (every attempt's dir, down to
    the mark other heads need) and its builds that no other sweep uses."""
    rows, notes = pick_jobs(state, sweep, names)
    ids = {r["id"] for r in rows}
    dirs: dict[str, set[str]] = defaultdict(set)
    for a in state.attempts(sweep["id"]):
        if a["job_id"] in ids:
            dirs[a["host"]].add(a["remote_dir"])
    builds: dict[str, str] = {}
    if not names:
        for b in state.builds(sweep["id"]):
            if not state.build_used_elsewhere(sweep["id"], b["host"], b["build_id"]):
                builds[b["host"]] = b["build_id"]
    who = f"dssh clean {time.strftime('%Y-%m-%dT%H:%M:%S')}"
    out: dict[str, Any] = {"dirs": 0, "builds": 0, "unreachable": [], "notes": notes}

    async def on_host(host: str) -> None:
        try:
            conn = await connect_named(inventory, host, accept_new)
        except HostError as e:
            out["unreachable"].append(str(e))
            return
        try:
            ds = sorted(dirs.get(host, ()))
            script = "".join(remote.clean(conn.expand(d), who) for d in ds)
            bid = builds.get(host)
            if bid:
                spec = inventory.hosts[host]
                bdir = f"{conn.expand(spec.workdir).rstrip('/')}/builds/{bid}"
                script += _build_removal(conn, spec.ledger_dir, bdir, sweep)
            res = await conn.run(script + "exit 0\n", timeout=600)
            out["dirs"] += len(ds)
            if "build-removed" in res.text:
                out["builds"] += 1
            elif "build-in-use" in res.text:
                out["notes"].append(f"{host}: kept the build: jobs of other sweeps run there")
        except HostError as e:
            out["unreachable"].append(str(e))
        finally:
            await conn.close()

    await asyncio.gather(*(on_host(h) for h in sorted(set(dirs) | set(builds))))
    return out


def _build_removal(conn: HostConnection, ledger_dir: str, bdir: str, sweep: Any) -> str:
    """Remove a build unless a live claim of another sweep holds the host (its jobs may
    run from this build: other heads' sweeps are not in this state file)."""
    lq = remote.q
    own = f"{sweep['namespace']}/{sweep['name']}"
    return (f"if [ -d {lq(ledger_dir)} ] && "
            f"grep -l '^sweep ' {lq(ledger_dir)}/c-* 2>/dev/null | "
            f"xargs -r grep -L -x {lq('sweep ' + own)} 2>/dev/null | grep -q .; then "
            "echo build-in-use\n"
            f"else rm -rf {lq(bdir)} && echo build-removed; fi\n")


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"



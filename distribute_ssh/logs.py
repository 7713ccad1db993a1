"""``dssh logs``: a job's stdout or stderr, or a host's build log.

From the results on the head once a job's attempt is collected (earlier attempts'
logs are kept under ``<job>/.attempts/<n>/``); from the host while it runs, where
``--follow`` streams it like ``tail -f`` until the job ends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from shlex import quote as q
from typing import Any

from . import state as st
from .errors import ConfigError, DsshError
from .hosts.base import connect_named
from .model.inventory import Inventory


def _job(state: st.State, sweep: Any, name: str) -> Any:
    for r in state.jobs(sweep["id"]):
        if r["name"] == name:
            return r
    names = [r["name"] for r in state.jobs(sweep["id"])]
    sample = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise ConfigError(f"no job {name!r} in sweep {sweep['namespace']}/{sweep['name']} "
                      f"(its jobs: {sample or 'none'})")


def local_log(results: Path, job: str, attempt: int, latest: int, stream: str) -> Path | None:
    """Where the head keeps that attempt's log, if it has it."""
    d = results / job
    if attempt != latest:
        d = d / ".attempts" / str(attempt)
    p = d / f"{stream}.txt"
    if not p.is_file():
        return None
    if attempt == latest:  # the results may still hold an earlier attempt's files
        import json

        try:
            if json.loads((d / "job.json").read_text()).get("attempts") != attempt:
                return None
        except (OSError, ValueError):
            return None
    return p


async def job_log(state: st.State, sweep: Any, inventory: Inventory, job: str, *,
                  stream: str, attempt: int | None, follow: bool,
                  write: Callable[[bytes], None], accept_new: bool = False) -> None:
    row = _job(state, sweep, job)
    latest = row["attempts"] or 0
    if latest == 0:
        raise DsshError(f"{job} has not started yet ({row['state'].lower()}): no log so far")
    n = attempt or latest
    if not 1 <= n <= latest:
        raise ConfigError(f"--attempt {n}: {job} has had {latest} attempt(s)",
                          key="--attempt")
    results = Path(sweep["results_dir"])
    running = n == latest and row["state"] not in st.FINISHED_STATES
    if not running:
        p = local_log(results, job, n, latest, stream)
        if p is not None:
            write(p.read_bytes())
            return
    attempts = {a["attempt"]: a for a in state.attempts(sweep["id"]) if a["job"] == job}
    a = attempts.get(n)
    if a is None:
        raise DsshError(f"no record of attempt {n} of {job}")
    conn = await connect_named(inventory, a["host"], accept_new)
    try:
        f = f"{a['remote_dir']}/.dssh/{stream}.txt"
        if follow and running:
            # Until the job's wrapper exits: tail -f --pid (GNU), else a plain tail -f that
            # the loop below stops once the exit code appears. Exit 4: the run was collected
            # (and its dir emptied) before we got there: the results have the log.
            script = (f"f={q(f)}; c={q(a['remote_dir'] + '/.dssh')}\n" + r"""
gone() { [ -f "$c/collected" ] || [ ! -d "$c" ]; }
while [ ! -f "$f" ] && [ ! -s "$c/exit_code" ]; do gone && exit 4; sleep 0.2; done
[ -f "$f" ] || { gone && exit 4; exit 0; }
p=$(cat "$c/pid" 2>/dev/null)
if [ -n "$p" ] && tail --version >/dev/null 2>&1; then exec tail -c +1 -f --pid="$p" "$f"; fi
tail -c +1 -f "$f" & t=$!
while [ ! -s "$c/exit_code" ] && ! gone; do sleep 0.5; done
sleep 0.5; kill $t
""")
            wrote = False

            async def sink(b: bytes) -> None:
                nonlocal wrote
                wrote = True
                write(b)

            res = await conn.read_stream(script, sink)
            if res.exit_status == 4 and not wrote:
                p = local_log(results, job, n, n, stream)
                if p is None:
                    raise DsshError(f"{job} ended and was collected meanwhile, but its log is "
                                    f"not in {results / job}")
                write(p.read_bytes())
            return
        try:
            data = await conn.read_file(f)
        except FileNotFoundError:
            p = local_log(results, job, n, n, stream)  # collected meanwhile?
            if p is None:
                raise DsshError(f"the log of attempt {n} of {job} is no longer on "
                                f"{a['host']} (its run dir was emptied once its results were "
                                "home) and not in the results") from None
            data = p.read_bytes()
        write(data)
    finally:
        await conn.close()


async def build_log(state: st.State, sweep: Any, inventory: Inventory, host: str, *,
                    write: Callable[[bytes], None], accept_new: bool = False) -> None:
    local = Path(sweep["results_dir"]) / f"build-{host}.log"
    builds = {b["host"]: b for b in state.builds(sweep["id"])}
    b = builds.get(host)
    if b is None:
        known = ", ".join(sorted(builds)) or "none"
        raise ConfigError(f"no build of {sweep['namespace']}/{sweep['name']} on {host} "
                          f"(built on: {known})")
    if b["state"] != "BUILDING" and local.is_file():
        write(local.read_bytes())
        return
    conn = await connect_named(inventory, host, accept_new)
    try:
        bdir = f"{conn.expand(conn.host.workdir).rstrip('/')}/builds/{b['build_id']}"
        try:
            write(await conn.read_file(f"{bdir}/.dssh/stdout.txt"))
        except FileNotFoundError:
            raise DsshError(f"no build log on {host} yet ({bdir})") from None
    finally:
        await conn.close()



def stdout_writer() -> Callable[[bytes], None]:
    out = sys.stdout.buffer

    def write(b: bytes) -> None:
        out.write(b)
        out.flush()

    return write

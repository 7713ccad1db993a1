"""``dssh cancel``: stop a sweep's running jobs (their whole process trees) and drop queued
ones, marking both CANCELLED.

With no head driving the sweep (after Ctrl-C, or a closed laptop) it connects to the
hosts itself. While a head runs, it leaves the head a request in the state file; the head
stops the jobs over its own connections within a second or so and answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from shlex import quote as q

from . import state as st
from .errors import ConfigError, DsshError, SweepLocked
from .hosts.base import make_connection
from .lock import SweepLock
from .model.inventory import Inventory


def kill_script(dirs: list[str], remove: bool = True) -> str:
    """Mark each run dir cancelled and signal its job's process group, TERM then KILL;
    then remove the dirs (a running head keeps them: it collects them as CANCELLED)."""
    return ("for d in " + " ".join(q(d) for d in dirs) + "; do\n" + r"""
  c="$d/.dssh"; [ -d "$c" ] || continue
  # A run handed over in a chain and not started yet is taken back (O_EXCL, as its
  # wrapper would take it): it never starts.
  [ -e "$c/launched" ] || ! (set -C; printf 'withdrawn\n' > "$c/launched") 2>/dev/null \
    || : > "$c/withdrawn"
  : > "$c/cancelled"
  if [ -f "$c/job_pid" ]; then
    kill -TERM "-$(cat "$c/job_pid")" 2>/dev/null
    kill -CONT "-$(cat "$c/job_pid")" 2>/dev/null  # a suspended job must run to end
  fi
done
i=0
while [ $i -lt 20 ]; do
  left=0
  for d in """ + " ".join(q(d) for d in dirs) + r"""; do
    c="$d/.dssh"
    # still to end: launched, no exit code, and its wrapper alive (or not yet started)
    if [ -d "$c" ] && [ -f "$c/launched" ] && [ ! -f "$c/withdrawn" ] && [ ! -s "$c/exit_code" ]; then
      if [ ! -s "$c/pid" ] || kill -0 "$(cat "$c/pid")" 2>/dev/null; then left=1; fi
    fi
  done
  [ $left = 0 ] && break
  sleep 0.5; i=$((i + 1))
done
for d in """ + " ".join(q(d) for d in dirs) + r"""; do
  c="$d/.dssh"
  [ -f "$c/job_pid" ] && kill -KILL "-$(cat "$c/job_pid")" 2>/dev/null
  [ -f "$c/pid" ] && [ ! -s "$c/exit_code" ] && kill -KILL "$(cat "$c/pid")" 2>/dev/null
""" + ('  rm -rf "$d"\n' if remove else "") + """done
echo done
""")


async def cancel(state: st.State, sweep_id: int, namespace: str, name: str,
                 inventory: Inventory, jobs: list[str] | None = None,
                 accept_new_hostkeys: bool = False) -> dict[str, int]:
    rows = state.jobs(sweep_id)
    if jobs:
        unknown = sorted(set(jobs) - {r["name"] for r in rows})
        if unknown:
            raise ConfigError(f"no job {', '.join(unknown)} in sweep {namespace}/{name}")
    lock = SweepLock(Path(state.path), namespace, name)
    try:
        lock.acquire()
    except SweepLocked:
        return await _ask_the_head(state, sweep_id, jobs)
    try:
        if jobs:
            rows = [r for r in rows if r["name"] in set(jobs)]
        by_host: dict[str, list] = defaultdict(list)
        dropped = 0
        for r in rows:
            if r["state"] in st.ACTIVE_STATES and r["host"] and r["remote_dir"]:
                by_host[r["host"]].append(r)
            elif r["state"] == st.PENDING:
                state.set_job(r["id"], "cancelled", state=st.CANCELLED,
                              reason="cancelled while queued")
                dropped += 1
        stopped, unreachable = 0, 0

        async def on_host(host: str, rs: list) -> None:
            nonlocal stopped, unreachable
            spec = inventory.hosts.get(host)
            if spec is None:
                raise ConfigError(f"job {rs[0]['name']} runs on {host}, which is not in the "
                                  f"inventory {inventory.source}: give the inventory it ran "
                                  "with (-i)")
            conn = make_connection(spec, accept_new_hostkeys=accept_new_hostkeys)
            try:
                await conn.connect()
                if spec.kind == "slurm":
                    from .slurm_run import cancel_script

                    await conn.run(cancel_script([r["remote_dir"] for r in rs]), timeout=120)
                else:
                    await conn.run(kill_script([r["remote_dir"] for r in rs]), timeout=120)
            except DsshError:
                unreachable += len(rs)
                return
            finally:
                await conn.close()
            for r in rs:
                state.set_job(r["id"], "cancelled", state=st.CANCELLED, finished=time.time(),
                              reason="cancelled")
                stopped += 1

        await asyncio.gather(*(on_host(h, rs) for h, rs in by_host.items()))
        return {"stopped": stopped, "dropped": dropped, "unreachable": unreachable}
    finally:
        lock.release()


async def _ask_the_head(state: st.State, sweep_id: int, jobs: list[str] | None,
                        wait: float = 60.0) -> dict[str, int]:
    """Leave the running head a cancel request and wait for its answer."""
    ids = state.request(sweep_id, "cancel", jobs)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        rows = state.request_results(ids)
        if all(r["done"] for r in rows):
            out = {"stopped": 0, "dropped": 0, "unreachable": 0}
            for r in rows:
                for k, v in json.loads(r["result"] or "{}").items():
                    out[k] = out.get(k, 0) + v
            return out
        await asyncio.sleep(0.2)
    raise DsshError(f"the head driving this sweep has not taken the cancel request within "
                    f"{wait:.0f} s; it will when it next looks. Check with 'dssh status'")

"""``dssh cancel``: stop a sweep's running jobs (their whole process trees) and drop queued
ones, marking both CANCELLED.

This version works when no head is driving the sweep (the usual case after Ctrl-C or a
closed laptop); while a head runs, it asks the user to stop that head first.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from shlex import quote as q

from . import state as st
from .errors import ConfigError, DsshError
from .hosts.base import make_connection
from .lock import SweepLock
from .model.inventory import Inventory


def kill_script(dirs: list[str]) -> str:
    """Mark each run dir cancelled and signal its job's process group, TERM then KILL."""
    return ("for d in " + " ".join(q(d) for d in dirs) + "; do\n" + r"""
  c="$d/.dssh"; [ -d "$c" ] || continue
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
    [ -d "$c" ] && [ -f "$c/launched" ] && [ ! -f "$c/exit_code" ] && left=1
  done
  [ $left = 0 ] && break
  sleep 0.5; i=$((i + 1))
done
for d in """ + " ".join(q(d) for d in dirs) + r"""; do
  c="$d/.dssh"
  [ -f "$c/job_pid" ] && kill -KILL "-$(cat "$c/job_pid")" 2>/dev/null
  [ -f "$c/pid" ] && kill -KILL "$(cat "$c/pid")" 2>/dev/null
  rm -rf "$d"
done
echo done
""")


async def cancel(state: st.State, sweep_id: int, namespace: str, name: str,
                 inventory: Inventory, jobs: list[str] | None = None,
                 accept_new_hostkeys: bool = False) -> dict[str, int]:
    lock = SweepLock(Path(state.path), namespace, name)
    try:
        lock.acquire()
    except DsshError as e:
        raise type(e)(f"{e}. Stop that head first (Ctrl-C), then cancel") from None
    try:
        rows = state.jobs(sweep_id)
        if jobs:
            unknown = sorted(set(jobs) - {r["name"] for r in rows})
            if unknown:
                raise ConfigError(f"no job {', '.join(unknown)} in sweep {namespace}/{name}")
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

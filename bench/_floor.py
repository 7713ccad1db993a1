"""The least any head written in Python on asyncssh can take to start one job per host.

``python bench/_floor.py INVENTORY``: start Python, import asyncssh (as dssh does, without
its search for liboqs), read the inventory, connect to every host in it at once, run
``true`` once on each, exit at once. No planning, no state file, no set-up, no pause files,
no ledger: nothing dssh adds. Prints the phases, in seconds from the start of this script,
as one JSON line; ``bench/speed`` times the whole process from outside.

What a sweep's whole-command makespan can come within of its ideal is bounded below by
this: a head that starts its first job later than this floor has spent that time on what
Python and SSH cost, not on scheduling.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from distribute_ssh.hosts.quick_import import asyncssh  # noqa: E402

T_IMPORT = time.perf_counter() - T0

import yaml  # noqa: E402


async def one(host: dict) -> tuple[float, float]:
    conn = await asyncssh.connect(
        host.get("address") or "127.0.0.1", port=host.get("port") or 22,
        username=host.get("user"), client_keys=[host["identity_file"]],
        known_hosts=host["known_hosts"], agent_path=None)
    connected = time.perf_counter() - T0
    try:
        res = await conn.run("true", check=True)
        assert res.exit_status == 0
    finally:
        conn.close()
    return connected, time.perf_counter() - T0


async def main(path: str) -> dict[str, float]:
    with open(path) as f:
        hosts = list(yaml.safe_load(f)["hosts"].values())
    done = await asyncio.gather(*(one(h) for h in hosts))
    return {"hosts": len(hosts), "import_s": T_IMPORT,
            "connected_s": max(c for c, _ in done), "ran_s": max(r for _, r in done)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
    # No tearing down: the floor ends when `true` has run on every host (the interpreter's
    # own clean-up took 0.13-0.19 s more here, which no head has to spend before its jobs
    # end). Lower than what any whole command can reach, so a target it misses is out of
    # reach indeed.
    os._exit(0)

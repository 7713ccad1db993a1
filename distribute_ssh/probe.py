"""``dssh hosts``: ask every host at once what it offers right now."""

from __future__ import annotations

import asyncio
from shlex import quote as q
from typing import Any

from . import remote
from .durations import format_until
from .errors import DsshError
from .hosts.base import make_connection
from .model.inventory import Host, Inventory


def probe_script(host: Host, workdir: str, home: str) -> str:
    conf = remote.pause_conf(home, host.pause_files, host.max_pause, host.on_pause)
    _, wrapper = remote.script("wrapper")
    return f"""w={q(workdir)}
echo "cpus $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
awk '/^MemTotal:/ {{print "mem_total", $2}} /^MemAvailable:/ {{print "mem_avail", $2}}' /proc/meminfo
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
if command -v nvidia-smi >/dev/null 2>&1; then echo "gpus_found $(nvidia-smi -L 2>/dev/null | wc -l)"; fi
d="$w"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
df -Pk "$d" | awk 'NR==2 {{print "disk_free", $4}}'
echo "jobs $(ps -u "$(id -u)" -o pid=,ppid=,args= 2>/dev/null | awk '/wrapper-[0-9a-f]+[.]sh / && !/--pause/ {{w[$1] = $2}} END {{n = 0; for (p in w) if (!(w[p] in w)) n++; print n}}')"
for c in python3 apptainer podman bwrap; do command -v "$c" >/dev/null 2>&1 && echo "has $c"; done
c=$(mktemp) || exit 1
trap 'rm -f "$c"' EXIT
printf '%s' {q(conf)} > "$c"
set -- --pause-report "$c"
""" + wrapper.decode()


async def probe(host: Host, accept_new_hostkeys: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"host": host.name, "reachable": False,
                           "capabilities": sorted(host.capabilities), "gpus": list(host.gpus),
                           "paused_by": [], "expired_pause_files": [], "closed_homes": [],
                           "on_pause": host.on_pause, "notes": []}
    conn = make_connection(host, accept_new_hostkeys=accept_new_hostkeys)
    try:
        await asyncio.wait_for(conn.connect(), host.connect_timeout + 5)
        res = await conn.run(probe_script(host, conn.expand(host.workdir), conn.home),
                             timeout=30)
    except (DsshError, TimeoutError) as e:
        row["error"] = str(e) if str(e) else "timed out"
        return row
    finally:
        await conn.close()
    row["reachable"] = True
    row["cpus"] = host.cpus
    found_tools = []
    for line in res.text.splitlines():
        key, _, val = line.partition(" ")
        try:
            if key == "cpus":
                row["cpus_probed"] = int(val)
                row["cpus"] = host.cpus or int(val)
            elif key == "mem_total":
                row["mem_total_gb"] = int(val) / 1024 / 1024
            elif key == "mem_avail":
                row["mem_available_gb"] = int(val) / 1024 / 1024
            elif key == "load":
                row["load"] = val
            elif key == "gpus_found":
                row["gpus_found"] = int(val)
            elif key == "disk_free":
                row["disk_free_gb"] = int(val) / 1024 / 1024
            elif key == "file":
                state, until, mtime, kind, owner, path = val.split(" ", 5)
                entry = {"file": path, "owner": owner, "until": float(until),
                         "modified": float(mtime), "kind": kind}
                if state == "active":
                    row["paused_by"].append(entry)
                else:
                    row["expired_pause_files"].append(entry)
            elif key == "closed":
                row["closed_homes"].append(val)
            elif key == "jobs":
                row["jobs_running"] = int(val)
            elif key == "has":
                found_tools.append(val)
        except ValueError:
            continue
    row.setdefault("jobs_running", 0)
    row["paused"] = bool(row["paused_by"])
    if row["paused_by"]:
        row["paused_until"] = max(p["until"] for p in row["paused_by"])
    for e in row["expired_pause_files"]:
        row["notes"].append(f"ignores the expired pause file {e['file']} ({e['owner']}), which "
                            f"ended {format_until(e['until'])}: touch it again to pause")
    for d in row["closed_homes"]:
        row["notes"].append(
            f"cannot look into {d}: a pause file there is invisible to dssh's user. Its owner "
            "can run 'chmod o+x ~' (others may pass through, not list), or pause with "
            "'touch /tmp/.distribute-pause' instead")
    missing = [c for c in host.capabilities if c in ("python3", "apptainer", "podman", "bwrap")
               and c not in found_tools]
    for c in missing:
        row["notes"].append(f"declares capability {c!r} but {c} is not on its PATH")
    return row


async def probe_all(inventory: Inventory, accept_new_hostkeys: bool = False) -> list[dict]:
    return list(await asyncio.gather(*(probe(h, accept_new_hostkeys)
                                       for h in inventory.hosts.values())))

"""``dssh hosts``: ask every host at once what it offers right now."""

from __future__ import annotations

import asyncio
import time
from shlex import quote as q
from typing import Any

from . import ledger, policy, remote
from .durations import format_until
from .errors import DsshError
from .hosts.base import make_connection
from .model.inventory import Host, Inventory


def probe_script(host: Host, workdir: str, home: str, max_pause: float | None = None,
                 gpus: tuple[int, ...] = (), policies: bool = False) -> str:
    """What the host offers now, a line each (see ``probe``); with ``policies``, then a line
    ``@@policies``, the host's clock and its owners' policy files (``policy.read_script``).
    The pause files are judged with ``max_pause`` and ``gpus``: when the owners' policies
    turn out to change them, the caller asks again without ``policies``.

    Every process it starts is one more the host's owner pays for, times a hundred hosts
    looked at at once: scripts dssh installed are used where they are, and what awk can
    read itself (memory, load, df's lines) goes through one awk. dssh's jobs running there
    are counted from the host's ledger, which is read anyway: ``ps`` reads every process
    of the machine, and on a busy one cost more than all the rest together."""
    conf = remote.pause_conf(home, host.pause_files, max_pause or host.max_pause,
                             host.on_pause, when=host.pause_when, gpus=gpus,
                             ledger_dir=host.ledger_dir)
    _, wrapper = remote.script("wrapper")

    def shipped(name: str, run: str) -> str:
        """Run a shipped script (``$s`` its path) from the workdir's bin, or from a temp file
        where dssh has not installed it yet."""
        fname, text = remote.script(name)
        run = run.strip("\n")
        return f"""if [ -f "$w/bin/{fname}" ]; then s="$w/bin/{fname}"
    {run}
elif s=$(mktemp); then
    printf '%s' {q(text.decode())} > "$s"
    {run}
    rm -f "$s"
fi
"""
    # The owner's activity (pause_when): every signal, as the host's jobs see it. The
    # verdict kept in the workdir is used and updated, so a hold in force is seen.
    act = ("echo @@activity\n" + shipped("activity", """st="$w/activity.state"
    [ -d "$w" ] || st=$(mktemp)
    sh "$s" --report "$c" "$st"
    [ "$st" = "$w/activity.state" ] || rm -f "$st"
""") + "echo @@activity-end\n"
           if "when_" in conf else "")
    led = (f"if [ -d {q(host.ledger_dir)} ]; then\necho @@ledger\n"
           + shipped("ledger", f"sh \"$s\" show {q(host.ledger_dir)}") + "echo @@ledger-end\nfi\n")
    pol = ("echo @@policies\necho \"clock $clk\"\n" + policy.read_script(host.policy_files, home)
           if policies else "")
    return f"""w={q(workdir)}
clk=$(date '+%s %z')
c=$(mktemp) || exit 1
trap 'rm -f "$c"' EXIT
printf '%s' {q(conf)} > "$c"
{act}d=$w
while [ ! -d "$d" ]; do case $d in */?*) d=${{d%/*}}; d=${{d:-/}} ;; *) d=/ ;; esac; done
echo "user ${{USER:-$(id -un)}}"
df -Pk "$d" 2>/dev/null | awk -v cpus="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)" '
BEGIN {{ print "cpus", cpus }}
FILENAME == "/proc/meminfo" {{ if ($1 == "MemTotal:") print "mem_total", $2
    else if ($1 == "MemAvailable:") print "mem_avail", $2
    next }}
FILENAME == "/proc/loadavg" {{ print "load", $1, $2, $3; next }}
FNR == 2 {{ print "disk_free", $4 }}' - /proc/meminfo /proc/loadavg
if command -v nvidia-smi >/dev/null 2>&1; then echo "gpus_found $(nvidia-smi -L 2>/dev/null | wc -l)"; fi
for t in python3 apptainer podman bwrap; do command -v "$t" >/dev/null 2>&1 && echo "has $t"; done
{led}( set -- --pause-report "$c" "${{clk%% *}}"
""" + wrapper.decode() + f"""
)
{pol}"""


async def probe(host: Host, accept_new_hostkeys: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"host": host.name, "reachable": False,
                           "capabilities": sorted(host.capabilities), "gpus": list(host.gpus),
                           "paused_by": [], "expired_pause_files": [], "closed_homes": [],
                           "on_pause": host.on_pause, "notes": []}
    conn = make_connection(host, accept_new_hostkeys=accept_new_hostkeys)
    try:
        async with asyncio.timeout(host.connect_timeout + 5):
            await conn.connect()
        if host.kind == "slurm":
            res = await conn.run(slurm_probe_script(host, conn.expand(host.workdir), conn.home),
                                 timeout=30)
        else:
            # One round trip: what the host offers, judged with the inventory's pause
            # settings, then its owners' policies. Only where those change the settings
            # (their max_pause decides which pause files count) is it asked again.
            base = policy.combine(host, [])
            asked = (base.max_pause, base.allowed_gpus(host.gpus))
            workdir = conn.expand(host.workdir)
            res = await conn.run(probe_script(host, workdir, conn.home, *asked, policies=True),
                                 timeout=30)
            text, _, found = res.text.partition("\n@@policies\n")
            clock, _, found = found.partition("\n")
            eff = policy.combine(host, policy.parse_found(found))
            _policy_row(row, eff, policy.parse_tz(clock.split(" ")[-1]))
            judged = (eff.max_pause, eff.allowed_gpus(host.gpus))
            if judged != asked:
                text = (await conn.run(probe_script(host, workdir, conn.home, *judged),
                                       timeout=30)).text
    except (DsshError, TimeoutError) as e:
        row["error"] = str(e) if str(e) else "timed out"
        return row
    finally:
        await conn.close()
    row["reachable"] = True
    if host.kind == "slurm":
        return _slurm_row(row, res.text)
    row["cpus"] = host.cpus
    found_tools = []
    ledger_lines = []
    login = ""
    part = ""  # the lines of the ledger and of the owner's activity come between marks
    for line in text.splitlines():
        if line in ("@@ledger", "@@activity", "@@ledger-end", "@@activity-end"):
            part = "" if line.endswith("-end") else line
            continue
        if part == "@@ledger":
            ledger_lines.append(line)
            continue
        if part == "@@activity":
            _activity_line(row, line)
            continue
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
            elif key == "user":
                login = val
            elif key == "has":
                found_tools.append(val)
        except ValueError:
            continue
    pol = row.get("policy") or {}
    if pol.get("cpus") is not None and row.get("cpus"):
        row["cpus"] = min(row["cpus"], pol["cpus"])
    led = ledger.parse("\n".join(ledger_lines))[0]
    _ledger_row(row, host, led)
    # dssh's jobs (and builds) running there under this login: each holds a claim in the
    # ledger, signed by its wrapper (a slot's chain holds one); no ledger, nothing runs.
    row["jobs_running"] = sum(c.user == login and c.state == "running" for c in led.claims)
    if pol.get("gpus") is not None:
        for key in ("capacity", "free"):
            row[key]["gpus"] = [g for g in row[key]["gpus"] if g in pol["gpus"]]
    row["paused"] = bool(row["paused_by"])
    if row["paused_by"]:
        row["paused_until"] = max(p["until"] for p in row["paused_by"])
    for e in row["expired_pause_files"]:
        row["notes"].append(f"ignores the expired pause file {e['file']} ({e['owner']}), which "
                            f"ended {format_until(e['until'])}: touch it again to pause")
    for d in row["closed_homes"]:
        row["notes"].append(
            f"cannot look into {d}: a pause file there is invisible to dssh's user, and so "
            "is a .distribute-policy. Its owner can run 'chmod o+x ~' (others may pass "
            "through, not list), or pause with 'touch /tmp/.distribute-pause' instead")
    missing = [c for c in host.capabilities if c in ("python3", "apptainer", "podman", "bwrap")
               and c not in found_tools]
    for c in missing:
        row["notes"].append(f"declares capability {c!r} but {c} is not on its PATH")
    return row


SIGNAL_NAMES = {"terminal": "owner at a terminal", "graphical": "owner in a graphical session",
                "load": "other users' load", "gpu": "GPUs busy with others' processes"}


def _activity_line(row: dict[str, Any], val: str) -> None:
    """One line of ``activity.sh --report``: a signal and what it reads, or the hold."""
    word, _, rest = val.partition(" ")
    sig = row.setdefault("signals", [])
    if word == "signal":
        name, _, rest = rest.partition(" ")
        ok, _, value = rest.partition(" ")
        what = SIGNAL_NAMES.get(name, name)
        if ok != "ok":
            sig.append({"signal": name, "readable": False, "text": f"{what}: cannot be read "
                                                                   f"({value})"})
            row["notes"].append(f"pause_when: {what} cannot be read here ({value}); dssh does "
                                "not guess it")
            return
        v = value.split()
        if name == "terminal" and len(v) >= 3:
            text = f"{v[1]} typed on {v[2]} {_ago(int(v[0]))}"
        elif name == "graphical" and len(v) >= 2:
            text = f"{v[1]} idle {_ago(int(v[0]))} in a graphical session"
        elif name == "load" and len(v) >= 2:
            text = f"other users' load {int(v[0]) / 1000:.1f} (now {v[1]} runnable)"
        elif name == "gpu":
            text = "GPUs busy with others' processes: " + value
        else:
            text = f"{what}: {value}"
        sig.append({"signal": name, "readable": True, "value": value, "text": text})
    elif word == "held":
        secs, _, why = rest.partition(" ")
        row["activity_held"] = int(secs) if secs.isdigit() else 0
        row["activity_reason"] = why
        if row["activity_held"]:
            row["paused_by"].append({"file": f"owner activity: {why}", "owner": "-",
                                     "until": time.time() + row["activity_held"],
                                     "modified": time.time(), "kind": "activity"})


def _ago(secs: int) -> str:
    if secs < 120:
        return f"{secs} s ago"
    if secs < 7200:
        return f"{secs // 60} min ago"
    return f"{secs // 3600} h ago"


def _policy_row(row: dict[str, Any], eff: policy.Effective, tz: int) -> None:
    """What the host's inventory entry and its owners' files allow, and whether that lets
    a job start there now."""
    row["policy"] = eff.as_json()
    row["policy_text"] = eff.describe()
    for e in eff.errors:
        row["notes"].append(f"its owner's policy cannot be read, so dssh starts nothing there "
                            f"until it is fixed: {e}")
    row["policy_blocks"] = []
    if eff.errors:
        row["policy_blocks"].append("its owner's policy cannot be read (see the notes)")
    if eff.cpus == 0:
        row["policy_blocks"].append("its owners' policy allows dssh no cpus")
    if eff.hours:
        now = policy.host_now(tz)
        row["hours_open"] = eff.open_at(now)
        nxt = eff.next_change(now)
        if not row["hours_open"]:
            row["policy_blocks"].append(
                f"outside the hours its owners allow ({' and '.join(eff.hours_text)})"
                + (f" until {nxt:%a %H:%M}" if nxt else ""))


def slurm_probe_script(host: Host, workdir: str, home: str) -> str:
    """A Slurm cluster's login node (kind: slurm): its partitions and the user's tasks."""
    return f"""w={q(workdir)}
command -v sbatch >/dev/null 2>&1 || echo nosbatch
sinfo -h -o '%P %a %D %C' 2>/dev/null | sed 's/^/part /'
echo "tasks $(squeue -h -r -u "$(id -un)" 2>/dev/null | wc -l)"
d="$w"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
df -Pk "$d" | awk 'NR==2 {{print "disk_free", $4}}'
"""


def _slurm_row(row: dict[str, Any], text: str) -> dict[str, Any]:
    row.update(kind="slurm", partitions=[], jobs_running=0, paused=False)
    for line in text.splitlines():
        key, _, val = line.partition(" ")
        parts = val.split()
        if key == "nosbatch":
            row["notes"].append("kind: slurm, but sbatch is not on its PATH: give the "
                                "address of the cluster's login node")
        elif key == "part" and len(parts) == 4:
            a, i, o, t = (parts[3].split("/") + ["", "", "", ""])[:4]
            row["partitions"].append({"partition": parts[0], "avail": parts[1],
                                      "nodes": parts[2], "cpus_idle": i, "cpus_total": t})
        elif key == "tasks" and val.strip().isdigit():
            row["jobs_running"] = int(val)
        elif key == "disk_free" and val.strip().isdigit():
            row["disk_free_gb"] = int(val) / 1024 / 1024
    return row


def _ledger_row(row: dict[str, Any], host: Host, led: ledger.Ledger) -> None:
    """Who holds what on the host, by its ledger, and what is left for a new job."""
    row["claims"] = [{"user": c.user, "sweep": c.sweep, "job": c.job, "kind": c.kind,
                      "cpus": c.cpus, "gpus": list(c.gpus), "state": c.state,
                      "machine": c.machine, "since": c.since} for c in led.claims]
    row["waiting"] = [{"user": w.user, "sweep": w.sweep, "since": w.since}
                      for w in led.waiters]
    if led.error:
        row["notes"].append(f"its ledger {host.ledger_dir}: {led.error}")
    cpus = row.get("cpus") or 0
    if led.cap_cpus is not None:
        cpus = min(cpus, led.cap_cpus) if cpus else led.cap_cpus
    slots = host.slots
    if led.cap_slots is not None:
        slots = led.cap_slots if slots is None else min(slots, led.cap_slots)
    gpus = [g for g in host.gpus if led.cap_gpus is None or g in led.cap_gpus]
    busy = {g for c in led.claims for g in c.gpus}
    row["capacity"] = {"cpus": cpus, "slots": slots, "gpus": gpus}
    row["free"] = {"cpus": max(0, cpus - led.used_cpus),
                   "slots": None if slots is None else max(0, slots - led.used_jobs),
                   "gpus": [g for g in gpus if g not in busy]}


def claims_text(row: dict[str, Any]) -> str:
    """The claims on a host in a few words: each user and sweep with its jobs and cpus."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in row.get("claims", []):
        groups.setdefault((c["user"], c["sweep"]), []).append(c)
    parts = []
    for (user, sweep), cs in sorted(groups.items()):
        gpus = sorted(g for c in cs for g in c["gpus"])
        builds = sum(c["kind"] == "build" for c in cs)
        what = f"{len(cs) - builds} job{'s' if len(cs) - builds != 1 else ''}"
        if builds:
            what += " + build"
        parts.append(f"{user} {sweep}: {what}, {sum(c['cpus'] for c in cs)} cpus"
                     + (f", gpus {','.join(map(str, gpus))}" if gpus else ""))
    for w in row.get("waiting", []):
        parts.append(f"{w['user']} {w['sweep']}: waiting")
    return "; ".join(parts) or "-"


def free_text(row: dict[str, Any]) -> str:
    f, c = row.get("free"), row.get("capacity")
    if not f or not c:
        return ""
    out = f"{f['cpus']}/{c['cpus']} cpus"
    if c["slots"] is not None:
        out += f", {f['slots']}/{c['slots']} slots"
    if c["gpus"]:
        out += f", gpus {','.join(map(str, f['gpus'])) or 'none'}"
    return out


async def probe_all(inventory: Inventory, accept_new_hostkeys: bool = False) -> list[dict]:
    return list(await asyncio.gather(*(probe(h, accept_new_hostkeys)
                                       for h in inventory.hosts.values())))

"""``dssh why SWEEP [JOB]``: why queued jobs are not running, host by host.

It looks where a person would: the sweep's needs against each host in the inventory
(capabilities, cpus, GPUs), each host as it is now (reachable, paused by whom and until
when, who holds its cpus and GPUs in its ledger), what the state file remembers (builds
that failed there, a host the last head quarantined, attempts of the job that failed
there), and whether a head is driving the sweep at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import state as st
from .durations import format_until, short_path
from .errors import ConfigError, SweepLocked
from .lock import SweepLock
from .model.inventory import Inventory


def _need(sweep: Any) -> tuple[int | None, int, list[str]]:
    if sweep is None:
        return None, 0, []
    return sweep.run.cpus, sweep.run.gpus, sorted(sweep.needs)


async def explain(state: st.State, row: Any, inventory: Inventory, job: str | None,
                  accept_new: bool = False) -> dict[str, Any]:
    from .model.sweep import load_sweep
    from .probe import claims_text, probe_all

    sweep = None
    if row["sweep_file"] and Path(row["sweep_file"]).is_file():
        try:
            sweep = load_sweep(row["sweep_file"])
        except ConfigError:
            sweep = None
    jobs = state.jobs(row["id"])
    out: dict[str, Any] = {"sweep": f"{row['namespace']}/{row['name']}", "job": job,
                           "queued": sum(j["state"] == st.PENDING for j in jobs),
                           "hosts": [], "notes": []}
    target = None
    if job is not None:
        target = next((j for j in jobs if j["name"] == job), None)
        if target is None:
            sample = ", ".join(j["name"] for j in jobs[:5])
            raise ConfigError(f"no job {job!r} in sweep {out['sweep']} (its jobs: "
                              f"{sample or 'none'})")
        if target["state"] != st.PENDING:
            where = f" on {target['host']}" if target["host"] else ""
            out["notes"].append(f"{job} is not queued: it is {target['state']}{where} "
                                f"(attempt {target['attempts']})")
    # Is anyone driving it?
    lock = SweepLock(Path(state.path), row["namespace"], row["name"])
    try:
        lock.acquire()
        lock.release()
        if out["queued"]:
            out["notes"].append("no head is driving this sweep: queued jobs start only while "
                                f"one runs (dssh run {row['sweep_file'] or out['sweep']})")
    except SweepLocked as e:
        who = str(e).split(":", 1)[-1].split(". Wait", 1)[0].strip()
        out["notes"].append(f"a head is driving it ({who}); it starts a queued job as soon "
                            "as a host below has room")
    cpus, gpus, needs = _need(sweep)
    if sweep is None:
        out["notes"].append(f"the sweep file {row['sweep_file']} cannot be read: its needs "
                            "(cpus, GPUs, capabilities) are not checked")
    failed_on: dict[str, int] = {}
    if target is not None:
        for a in state.attempts(row["id"]):
            if a["job"] == job and a["state"] in (st.FAILED, st.TIMEOUT):
                failed_on[a["host"]] = a["attempt"]
    builds = {b["host"]: b for b in state.builds(row["id"])}
    seen = {h["name"]: h for h in state.hosts()}
    probes = {p["host"]: p for p in await probe_all(inventory, accept_new)}
    for name, host in inventory.hosts.items():
        reasons: list[str] = []
        missing = [c for c in needs if c not in host.capabilities]
        if missing:
            reasons.append(f"lacks {', '.join(missing)} (not among its capabilities in the "
                           "inventory)")
        p = probes.get(name, {})
        if not p.get("reachable"):
            reasons.append(f"unreachable: {p.get('error', 'no answer')}")
        cap = p.get("capacity") or {}
        have_cpus = cap.get("cpus") or p.get("cpus") or host.cpus
        if cpus and have_cpus and cpus > have_cpus:
            reasons.append(f"has {have_cpus} cpus; a job needs {cpus}")
        have_gpus = len(cap.get("gpus", host.gpus))
        if gpus and gpus > have_gpus:
            reasons.append(f"has {have_gpus} GPUs; a job needs {gpus}")
        reasons += p.get("policy_blocks", [])
        for pb in p.get("paused_by", []):
            reasons.append(f"paused by {pb['file']} ({pb['owner']}) until "
                           f"{format_until(pb['until'])}")
        b = builds.get(name)
        if b is not None and b["state"] == "FAILED":
            log = Path(row["results_dir"]) / f"build-{name}.log"
            reasons.append(f"the build failed here (log: {short_path(log)}); a new run tries "
                           "again")
        last = seen.get(name)
        if last is not None and (last["detail"] or "").startswith("quarantined"):
            reasons.append(f"the last head {last['detail'].split(';')[0]}")
        if name in failed_on:
            reasons.append(f"{job} failed here (attempt {failed_on[name]}): its retries go "
                           "elsewhere first")
        free = p.get("free")
        if p.get("reachable") and free is not None and not reasons:
            short = []
            if free["cpus"] < (cpus or have_cpus or 1):
                short.append(f"{free['cpus']} of {have_cpus} cpus free")
            if gpus and len(free["gpus"]) < gpus:
                short.append(f"{len(free['gpus'])} of {have_gpus} GPUs free")
            if free.get("slots") == 0:
                short.append("no job slot free")
            if short:
                reasons.append(f"busy now: {', '.join(short)}; held by {claims_text(p)}")
        out["hosts"].append({"host": name, "can_run_now": not reasons, "reasons": reasons})
    if out["queued"] and not any(h["can_run_now"] for h in out["hosts"]) and all(
            any(r.startswith(("lacks", "has ")) for r in h["reasons"]) for h in out["hosts"]):
        out["notes"].append("no host in the inventory can ever take these jobs as they are: "
                            "change the sweep's needs or the inventory")
    return out


def text(report: dict[str, Any]) -> str:
    lines = [f"{report['sweep']}: {report['queued']} job(s) queued"
             + (f"; about {report['job']}" if report["job"] else "")]
    lines += [f"  {n}" for n in report["notes"]]
    width = max([len(h["host"]) for h in report["hosts"]] + [4])
    for h in report["hosts"]:
        if h["can_run_now"]:
            lines.append(f"{h['host']:<{width}}  can take one now")
            continue
        first, *rest = h["reasons"]
        lines.append(f"{h['host']:<{width}}  {first}")
        lines += [f"{'':<{width}}  {r}" for r in rest]
    return "\n".join(lines)

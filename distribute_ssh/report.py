"""``dssh report SWEEP``: one self-contained HTML page about a sweep, from the local state
and the results: no network, no scripts, inline CSS and SVG only.

- a timeline with one lane per host slot, each attempt coloured by how it ended, with
  the time its host's owner had it paused hatched over it;
- utilisation per host and overall (busy lane time over the lanes the sweep used);
- a histogram of the durations of completed jobs;
- the failures, with the last lines of their stderr;
- every job with its parameters, state, host, attempts and duration.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from . import state as st
from .durations import format_seconds

COLOURS = {"COMPLETED": "#3a9a4a", "FAILED": "#d43c3c", "TIMEOUT": "#e08a1e",
           "CANCELLED": "#9a9a9a", "RUNNING": "#3c78d8", "STARTING": "#3c78d8",
           "SUSPENDED": "#3c78d8", "ABANDONED": "#8e5bb5", "STOPPED": "#8e5bb5"}
WIDTH = 1000  # the timeline's drawing width, px
LANE = 16
TAIL = 12  # stderr lines shown per failure


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _dur(s: float | None) -> str:
    return format_seconds(s)


def _tail(path: Path, n: int = TAIL) -> str:
    try:
        data = path.read_bytes()[-32768:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])


def _pauses(state: st.State, sweep_id: int) -> dict[int, list[tuple[float, float]]]:
    """Per job: the intervals it spent suspended (its host paused by its owner)."""
    out: dict[int, list[tuple[float, float]]] = {}
    open_: dict[int, float] = {}
    for e in state.events(sweep_id):
        jid = e["job_id"]
        if jid is None:
            continue
        if e["kind"] == "suspended":
            open_.setdefault(jid, e["time"])
        elif jid in open_ and e["kind"] != "suspended":
            out.setdefault(jid, []).append((open_.pop(jid), e["time"]))
    now = time.time()
    for jid, t in open_.items():
        out.setdefault(jid, []).append((t, now))
    return out


def _lanes(spans: list[dict[str, Any]]) -> int:
    """Give each attempt on one host a lane: the first whose last attempt has ended."""
    ends: list[float] = []
    for a in sorted(spans, key=lambda a: (a["start"], a["end"])):
        for i, end in enumerate(ends):
            if end <= a["start"] + 1e-6:
                a["lane"], ends[i] = i, a["end"]
                break
        else:
            a["lane"] = len(ends)
            ends.append(a["end"])
    return len(ends)


def build(state: st.State, row: Any) -> str:
    sid = row["id"]
    jobs = {j["id"]: j for j in state.jobs(sid)}
    now = time.time()
    spans = []
    for a in state.attempts(sid):
        if not a["started"]:
            continue
        end = a["finished"] or (now if a["state"] in st.ACTIVE_STATES else a["started"])
        spans.append({"job": a["job"], "job_id": a["job_id"], "host": a["host"],
                      "attempt": a["attempt"], "state": a["state"], "start": a["started"],
                      "end": max(end, a["started"]), "exit": a["exit_code"]})
    pauses = _pauses(state, sid)
    t0 = min((a["start"] for a in spans), default=now)
    t1 = max((a["end"] for a in spans), default=now)
    span = max(t1 - t0, 1e-3)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for a in spans:
        by_host.setdefault(a["host"], []).append(a)
    counts: dict[str, int] = {}
    for j in jobs.values():
        counts[j["state"]] = counts.get(j["state"], 0) + 1
    title = f"{row['namespace']}/{row['name']}"
    parts = [_head(title), f"<h1>{_e(title)}</h1>",
             f"<p class=meta>{len(jobs)} jobs: "
             + ", ".join(f"<span class=s style='background:{COLOURS.get(k, '#777')}'>"
                         f"{n} {_e(k)}</span>" for k, n in sorted(counts.items()))
             + f" &middot; {_e(time.strftime('%Y-%m-%d %H:%M', time.localtime(t0)))} to "
               f"{_e(time.strftime('%Y-%m-%d %H:%M', time.localtime(t1)))} "
               f"({_e(_dur(t1 - t0))}) &middot; report written "
               f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"]
    parts.append(_timeline(by_host, pauses, t0, span))
    parts.append(_utilisation(by_host, pauses, span))
    parts.append(_histogram([(j["finished"] - j["started"]) for j in jobs.values()
                             if j["state"] == st.COMPLETED and j["started"] and j["finished"]]))
    parts.append(_failures(jobs, Path(row["results_dir"])))
    parts.append(_table(jobs))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _head(title: str) -> str:
    return f"""<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>dssh report: {_e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }} h2 {{ font-size: 17px; margin: 28px 0 8px; }}
.meta {{ color: #555; }} .s {{ color: #fff; padding: 1px 6px; border-radius: 3px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f3f3; position: sticky; top: 0; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
pre {{ background: #f7f7f7; border-left: 3px solid #d43c3c; padding: 6px 10px;
      overflow-x: auto; font-size: 12px; margin: 4px 0 14px; }}
.bar {{ display: inline-block; height: 10px; background: #3c78d8; vertical-align: middle; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.legend i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px;
            vertical-align: -1px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #333; }}
</style></head><body>"""


def _timeline(by_host: dict[str, list[dict[str, Any]]], pauses: dict[int, list],
              t0: float, span: float) -> str:
    label_w, top = 110, 22
    rows = []
    y = top
    for host in sorted(by_host):
        spans = by_host[host]
        n = _lanes(spans)
        rows.append(f"<text x=4 y={y + LANE * n / 2 + 4:.0f}>{_e(host)}</text>")
        rows.append(f"<rect x={label_w} y={y} width={WIDTH} height={LANE * n} "
                    f"fill=#fafafa stroke=#e2e2e2 />")
        for a in spans:
            x = label_w + WIDTH * (a["start"] - t0) / span
            w = max(1.5, WIDTH * (a["end"] - a["start"]) / span)
            ya = y + a["lane"] * LANE + 1
            tip = (f"{a['job']} (attempt {a['attempt']}) on {host}: {a['state']}"
                   + (f", exit {a['exit']}" if a["exit"] is not None else "")
                   + f", {_dur(a['end'] - a['start'])}")
            rows.append(f"<rect x={x:.1f} y={ya} width={w:.1f} height={LANE - 2} rx=2 "
                        f"fill={COLOURS.get(a['state'], '#777')}><title>{_e(tip)}</title>"
                        "</rect>")
            for p0, p1 in pauses.get(a["job_id"], []):
                s0, s1 = max(p0, a["start"]), min(p1, a["end"])
                if s1 > s0:
                    px = label_w + WIDTH * (s0 - t0) / span
                    pw = max(1.5, WIDTH * (s1 - s0) / span)
                    rows.append(f"<rect x={px:.1f} y={ya} width={pw:.1f} height={LANE - 2} "
                                f"fill=url(#paused)><title>{_e(a['job'])}: paused "
                                f"{_e(_dur(s1 - s0))}</title></rect>")
        y += LANE * n + 6
    ticks = []
    for i in range(6):
        tx = label_w + WIDTH * i / 5
        ticks.append(f"<line x1={tx:.0f} x2={tx:.0f} y1={top - 4} y2={y} stroke=#ccc />"
                     f"<text x={tx:.0f} y=12 text-anchor=middle>+{_e(_dur(span * i / 5))}"
                     "</text>")
    legend = "".join(f"<span><i style='background:{c}'></i>{_e(k.lower())}</span>"
                     for k, c in (("COMPLETED", COLOURS["COMPLETED"]),
                                  ("FAILED", COLOURS["FAILED"]),
                                  ("TIMEOUT", COLOURS["TIMEOUT"]),
                                  ("CANCELLED", COLOURS["CANCELLED"]),
                                  ("RUNNING", COLOURS["RUNNING"]),
                                  ("ABANDONED", COLOURS["ABANDONED"])))
    legend += ("<span><i style='background: repeating-linear-gradient(45deg, #000 0 2px, "
               "transparent 2px 5px)'></i>paused by the host's owner</span>")
    return (f"<h2>Timeline</h2><p class=legend>{legend}</p>"
            f"<svg width={label_w + WIDTH + 40} height={y + 4} role=img "
            "aria-label='timeline: one lane per host slot'>"
            "<defs><pattern id=paused width=6 height=6 patternUnits=userSpaceOnUse "
            "patternTransform='rotate(45)'><rect width=2.5 height=6 fill='rgba(0,0,0,.55)' />"
            "</pattern></defs>" + "".join(ticks) + "".join(rows) + "</svg>")


def _utilisation(by_host: dict[str, list[dict[str, Any]]], pauses: dict[int, list],
                 span: float) -> str:
    rows, busy_all, lanes_all = [], 0.0, 0
    for host in sorted(by_host):
        spans = by_host[host]
        lanes = max((a.get("lane", 0) for a in spans), default=0) + 1
        busy = paused = 0.0
        for a in spans:
            busy += a["end"] - a["start"]
            for p0, p1 in pauses.get(a["job_id"], []):
                paused += max(0.0, min(p1, a["end"]) - max(p0, a["start"]))
        use = (busy - paused) / (lanes * span)
        busy_all += busy - paused
        lanes_all += lanes
        rows.append(f"<tr><td>{_e(host)}</td><td class=n>{lanes}</td><td class=n>"
                    f"{_e(_dur(busy - paused))}</td><td class=n>{_e(_dur(paused))}</td>"
                    f"<td class=n>{use:.0%}</td><td><span class=bar style='width:"
                    f"{200 * min(use, 1):.0f}px'></span></td></tr>")
    total = busy_all / (lanes_all * span) if lanes_all else 0.0
    rows.append(f"<tr><th>all hosts</th><th class=n>{lanes_all}</th><th class=n>"
                f"{_e(_dur(busy_all))}</th><th></th><th class=n>{total:.0%}</th><th><span "
                f"class=bar style='width:{200 * min(total, 1):.0f}px'></span></th></tr>")
    return ("<h2>Utilisation</h2><p class=meta>Busy time over the slots (lanes above) "
            "each host gave the sweep, from its first start to its last end; paused time "
            "is not busy.</p><table><tr><th>host</th><th>slots used</th><th>busy</th>"
            "<th>paused</th><th>utilisation</th><th></th></tr>" + "".join(rows) + "</table>")


def _histogram(durations: list[float]) -> str:
    if not durations:
        return "<h2>Job durations</h2><p class=meta>No job has completed yet.</p>"
    lo, hi = min(durations), max(durations)
    bins = 20 if len(durations) >= 20 else max(1, len(durations))
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for d in durations:
        counts[min(bins - 1, int((d - lo) / width))] += 1
    top = max(counts)
    bw, h = 600 / bins, 160
    bars = []
    for i, c in enumerate(counts):
        bh = h * c / top
        bars.append(f"<rect x={40 + i * bw:.1f} y={10 + h - bh:.1f} width={bw - 2:.1f} "
                    f"height={bh:.1f} fill=#3a9a4a><title>{c} job(s), "
                    f"{_e(_dur(lo + i * width))} to {_e(_dur(lo + (i + 1) * width))}</title>"
                    "</rect>")
    axis = (f"<text x=40 y={h + 26}>{_e(_dur(lo))}</text>"
            f"<text x=640 y={h + 26} text-anchor=end>{_e(_dur(hi))}</text>"
            f"<text x=34 y=18 text-anchor=end>{top}</text><text x=34 y={h + 10} "
            "text-anchor=end>0</text>")
    mean = sum(durations) / len(durations)
    return (f"<h2>Job durations</h2><p class=meta>{len(durations)} completed jobs; "
            f"shortest {_e(_dur(lo))}, mean {_e(_dur(mean))}, longest {_e(_dur(hi))}.</p>"
            f"<svg width=660 height={h + 34} role=img aria-label='histogram of job "
            f"durations'>{''.join(bars)}{axis}</svg>")


def _failures(jobs: dict[int, Any], results: Path) -> str:
    failed = [j for j in jobs.values() if j["state"] in (st.FAILED, st.TIMEOUT)]
    if not failed:
        return "<h2>Failures</h2><p class=meta>None.</p>"
    out = [f"<h2>Failures ({len(failed)})</h2>"]
    for j in failed[:200]:
        err = results / j["name"] / "stderr.txt"
        tail = _tail(err)
        out.append(f"<h3>{_e(j['name'])} &mdash; {_e(j['state'])}"
                   + (f", exit {_e(j['exit_code'])}" if j["exit_code"] is not None else "")
                   + (f" on {_e(j['host'])}" if j["host"] else "")
                   + f", {j['attempts']} attempt(s)</h3>"
                   + (f"<p class=meta>{_e(j['reason'])}</p>" if j["reason"] else "")
                   + f"<pre>{_e(tail) if tail else '(no stderr)'}</pre>")
    if len(failed) > 200:
        out.append(f"<p class=meta>... and {len(failed) - 200} more (dssh status "
                   "--state failed).</p>")
    return "".join(out)


def _table(jobs: dict[int, Any]) -> str:
    rows = list(jobs.values())
    names: list[str] = []
    parsed = []
    for j in rows:
        p = json.loads(j["params"])
        parsed.append(p)
        names += [k for k in p if k not in names]
    head = "".join(f"<th>{_e(n)}</th>" for n in ["job", "state", "host", "attempts", "exit",
                                                 "duration", *names])
    body = []
    for j, p in zip(rows, parsed, strict=True):
        secs = j["finished"] - j["started"] if j["finished"] and j["started"] else None
        body.append(
            f"<tr><td>{_e(j['name'])}</td><td><span class=s style='background:"
            f"{COLOURS.get(j['state'], '#777')}'>{_e(j['state'])}</span></td>"
            f"<td>{_e(j['host'] or '')}</td><td class=n>{j['attempts']}</td><td class=n>"
            f"{_e('' if j['exit_code'] is None else j['exit_code'])}</td><td class=n>"
            f"{_e(_dur(secs))}</td>"
            + "".join(f"<td>{_e(p.get(n, ''))}</td>" for n in names) + "</tr>")
    return (f"<h2>Jobs and parameters</h2><table><tr>{head}</tr>" + "".join(body)
            + "</table>")


def write(state: st.State, row: Any, path: Path | None = None) -> Path:
    out = path or Path(row["results_dir"]) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(build(state, row), encoding="utf-8")
    tmp.replace(out)
    return out

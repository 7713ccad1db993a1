"""The host-side ledger every head shares (SPEC §6a): what its answers mean to a head.

The ledger itself is ``remote/ledger.sh`` on each host; this module builds its command
lines and reads what it prints. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from shlex import quote as q

import attrs

KEEPALIVE = 20.0  # seconds between touches of a claim whose start is still uploading


@attrs.frozen
class Claim:
    user: str
    cpus: int
    gpus: tuple[int, ...]
    since: float
    kind: str  # job or build
    state: str  # running (its wrapper signed it) or starting
    sweep: str
    job: str
    machine: str
    head: str
    dir: str


@attrs.frozen
class Waiter:
    user: str
    cpus: int
    gpus: int
    since: float
    sweep: str
    head: str


@attrs.define
class Ledger:
    """One look at a host's ledger."""

    verdict: str = ""  # after a claim: ok, full or yield
    reason: str = ""
    claims: list[Claim] = attrs.Factory(list)
    waiters: list[Waiter] = attrs.Factory(list)
    cap_cpus: int | None = None  # the capacity in force (None: no limit known)
    cap_slots: int | None = None
    cap_gpus: tuple[int, ...] | None = None
    used_cpus: int = 0
    used_jobs: int = 0
    free_gpus: tuple[int, ...] = ()
    token: str = ""
    error: str = ""

    def foreign(self, mine: set[str]) -> list[Claim]:
        """Claims that are not for the run dirs in ``mine``."""
        return [c for c in self.claims if c.dir not in mine]


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _ids(text: str) -> tuple[int, ...]:
    if text in ("", "-"):
        return ()
    return tuple(sorted(_int(g) for g in text.split(",") if g.strip().isdigit()))


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def parse(text: str) -> tuple[Ledger, list[str]]:
    """The ledger ``ledger.sh`` printed, and the lines after it (the rest of the script's
    output, when the claim was part of a larger one)."""
    led = Ledger()
    lines = text.splitlines()
    rest: list[str] = []
    for i, line in enumerate(lines):
        f = line.split("\t")
        kind = f[0]
        if i == 0 and len(f) == 1 and line.split(" ", 1)[0] in ("ok", "full", "yield",
                                                                 "error"):
            word, _, why = line.partition(" ")
            if word == "error":
                led.error = why
            else:
                led.verdict, led.reason = word, why
        elif kind == "claim" and len(f) >= 12:
            led.claims.append(Claim(f[1], _int(f[2]), _ids(f[3]), _float(f[4]), f[5], f[6],
                                    f[7], f[8], f[9], f[10], "\t".join(f[11:])))
        elif kind == "waiter" and len(f) >= 7:
            led.waiters.append(Waiter(f[1], _int(f[2]), _int(f[3]), _float(f[4]), f[5],
                                      "\t".join(f[6:])))
        elif kind == "cap" and len(f) >= 4:
            led.cap_cpus = _int(f[1]) if f[1].isdigit() else None
            led.cap_slots = _int(f[2]) if f[2].isdigit() else None
            led.cap_gpus = None if f[3] == "" else _ids(f[3])
        elif kind == "used" and len(f) >= 4:
            led.used_cpus, led.used_jobs, led.free_gpus = _int(f[1]), _int(f[2]), _ids(f[3])
        elif kind == "token" and len(f) >= 2:
            led.token = f[1]
            rest = lines[i + 1:]
            break
        elif line.startswith("error "):
            led.error = line[6:]
    return led, rest


def claim_name(user: str, run_dir: str) -> str:
    """The file name of a run's claim: the user's name and a digest of its run dir."""
    return f"{user}-{hashlib.sha256(run_dir.encode()).hexdigest()[:16]}"


def waiter_name(user: str, head: str) -> str:
    """The name of a head's waiter file in a host's ledger (``w-NAME``)."""
    return f"{user}-{hashlib.sha256(head.encode()).hexdigest()[:16]}"


def _list(ids: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(g) for g in ids) or "-"


def claim_command(script: str, ledger_dir: str, *, name: str, head: str, user: str,
                  machine: str, sweep: str, job: str, kind: str, cpus: int,
                  gpus: tuple[int, ...], cap_cpus: int, cap_slots: int | None,
                  cap_gpus: tuple[int, ...], run_dir: str) -> str:
    words = [script, "claim", ledger_dir, name, head, user, machine, sweep, job, kind,
             str(cpus), _list(gpus), str(cap_cpus),
             "-" if cap_slots is None else str(cap_slots), _list(cap_gpus), run_dir,
             waiter_name(user, head)]
    return "sh " + " ".join(q(w) for w in words)


def claims_command(script: str, ledger_dir: str, *, head: str, user: str, machine: str,
                   sweep: str, cap_cpus: int, cap_slots: int | None,
                   cap_gpus: tuple[int, ...]) -> str:
    """Many claims at once (a batch of job starts): the requests go on its stdin, one
    :func:`claims_request` line each."""
    words = [script, "claims", ledger_dir, head, user, machine, sweep, str(cap_cpus),
             "-" if cap_slots is None else str(cap_slots), _list(cap_gpus),
             waiter_name(user, head)]
    return "sh " + " ".join(q(w) for w in words)


def claims_request(name: str, job: str, kind: str, cpus: int, gpus: tuple[int, ...],
                   run_dir: str) -> str:
    return "\t".join((name, job, kind, str(cpus), _list(gpus), run_dir)) + "\n"


def parse_many(text: str, n: int) -> tuple[list[tuple[str, str]], Ledger, list[str]]:
    """What ``ledger.sh claims`` printed for ``n`` requests: a (verdict, reason) per
    request, the ledger, and the lines after it."""
    lines = text.splitlines()
    verdicts: list[tuple[str, str]] = []
    for line in lines[:n]:
        word, _, why = line.partition(" ")
        if word not in ("ok", "full", "yield", "error"):
            break
        verdicts.append((word, why))  # "error": that one claim could not be made
    if len(verdicts) < n:  # the ledger failed before or instead of the decisions
        led, rest = parse(text)
        led.error = led.error or next((ln[6:] for ln in lines if ln.startswith("error ")),
                                      "no answer")
        return [], led, rest
    led, rest = parse("\n".join(lines[n:]))
    return verdicts, led, rest


def wait_command(script: str, ledger_dir: str, token: str, *, head: str, user: str,
                 sweep: str, cpus: int, gpus: int) -> str:
    words = [script, "wait", ledger_dir, token, head, user, sweep, str(cpus), str(gpus),
             waiter_name(user, head)]
    # exec: its parent is then the SSH session, which it watches to stop with its head.
    return "exec sh " + " ".join(q(w) for w in words) + "\n"


def forget_command(script: str, ledger_dir: str, head: str, user: str) -> str:
    return f"sh {q(script)} forget {q(ledger_dir)} {q(head)} {q(user)}\n"


def unwait_command(script: str, ledger_dir: str, head: str, user: str) -> str:
    return f"sh {q(script)} unwait {q(ledger_dir)} {q(waiter_name(user, head))}\n"

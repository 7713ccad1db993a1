"""Owner policies: what a workstation's owners let dssh do on their machine (SPEC §6b).

An owner writes ``~/.distribute-policy`` (YAML, every key optional)::

    cpus: 4                      # at most 4 cpus for dssh jobs, every head together
    gpus: [1]                    # only GPU 1 ([] : none)
    nice: 15                     # dssh jobs run at least this nice (0-19)
    hours: mon-fri 18:00-08:00, weekends   # when dssh may start work (the host's clock)
    max_pause: 8h                # an empty pause file holds this long

The host's inventory entry may say the same (``cpus``, ``gpus``, ``nice``, ``hours``,
``max_pause``); on each host the strictest of the inventory and every owner's file wins:
the fewest cpus, the GPUs all of them allow, the highest nice, only the hours all of them
allow, the longest pause. A file that cannot be read as a policy closes the host to dssh
until its owner fixes it: an owner's wish is never guessed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Sequence
from shlex import quote as q
from typing import Any

import attrs

from .durations import format_duration, parse_duration
from .errors import ConfigError
from .model.yamlload import Duration, FieldValueError, parse_yaml, structure, yaml_key

DEFAULT_POLICY_FILES = ("~/.distribute-policy", "/home/*/.distribute-policy")
DEFAULT_NICE = 10
MAX_BYTES = 16384  # a policy is a few lines; more is not one
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SETS = {"weekends": frozenset({5, 6}), "weekdays": frozenset(range(5)),
             "daily": frozenset(range(7))}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
HOURS_EXAMPLE = "hours: mon-fri 18:00-08:00, weekends"


@attrs.frozen
class Window:
    """Days (0 = Monday) and a time of day, in minutes; a window whose end is not after
    its start runs past midnight into the next day."""

    days: frozenset[int]
    start: int = 0
    end: int = 24 * 60

    def open_at(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or \
            ((weekday - 1) % 7 in self.days and minute < self.end)


def _days(word: str) -> frozenset[int]:
    w = word.lower()
    if w in _DAY_SETS:
        return _DAY_SETS[w]
    first, dash, last = w.partition("-")
    if first in DAYS and (not dash or last in DAYS):
        a, b = DAYS.index(first), DAYS.index(last) if dash else DAYS.index(first)
        return frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))
    raise ValueError(f"{word!r} is not a day: use mon..sun, a range like mon-fri, "
                     "weekdays, weekends or daily")


def _minutes(h: str, m: str, end: bool) -> int:
    hh, mm = int(h), int(m)
    if mm > 59 or hh > 24 or (hh == 24 and (mm or not end)):
        raise ValueError(f"{h}:{m} is not a time of day: use 00:00 to 23:59 (24:00 as an end)")
    return hh * 60 + mm


def parse_hours(text: str) -> tuple[Window, ...]:
    """``mon-fri 18:00-08:00, weekends`` as windows; dssh may start work in any of them."""
    windows = []
    for part in str(text).split(","):
        words = part.split()
        if not words:
            raise ValueError(f"{text!r} has an empty part: write e.g. {HOURS_EXAMPLE}")
        days, span = frozenset(range(7)), (0, 24 * 60)
        rest = list(words)
        if not _TIME.match(rest[0]):
            days = _days(rest.pop(0))
        if rest:
            m = _TIME.match(rest.pop(0))
            if m is None or rest:
                raise ValueError(f"{part.strip()!r} is not 'DAYS HH:MM-HH:MM': write e.g. "
                                 f"{HOURS_EXAMPLE}")
            span = (_minutes(m[1], m[2], False), _minutes(m[3], m[4], True))
            if span[0] == span[1]:
                raise ValueError(f"{part.strip()!r} starts and ends at the same time: for the "
                                 "whole day leave the time out (e.g. weekends)")
        windows.append(Window(days, *span))
    return tuple(windows)


def check_hours(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            parse_hours(v)
        except ValueError as e:
            raise FieldValueError(yaml_key(a), str(e)) from None


def _cpus(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v < 0:
        raise FieldValueError(yaml_key(a), f"must be 0 or more, got {v}: the most cpus dssh "
                                           "jobs may use here together (0: none)")


def check_nice(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and not 0 <= v <= 19:
        raise FieldValueError(yaml_key(a), f"must be between 0 and 19, got {v}: higher is "
                                           "gentler to the machine's own users")


def _gpus(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and any(g < 0 for g in v):
        raise FieldValueError(yaml_key(a), f"GPU ids are 0 or more, got {v}: list the ids "
                                           "nvidia-smi shows, e.g. gpus: [0]")


def _duration(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            if parse_duration(v) <= 0:
                raise ValueError("must be longer than zero")
        except ValueError as e:
            raise FieldValueError(yaml_key(a), f"{e}: write e.g. {yaml_key(a)}: 8h") from None


@attrs.frozen
class PolicyFile:
    """One owner's ``~/.distribute-policy`` as written."""

    cpus: int | None = attrs.field(default=None, validator=_cpus)
    gpus: list[int] | None = attrs.field(default=None, validator=_gpus)
    nice: int | None = attrs.field(default=None, validator=check_nice)
    hours: str | None = attrs.field(default=None, validator=check_hours)
    max_pause: Duration | None = attrs.field(default=None, validator=_duration)


@attrs.frozen
class Owned:
    """A policy file found on a host: its path, its owner, and what it says (or why it
    cannot be read)."""

    path: str
    owner: str
    policy: PolicyFile | None = None
    error: str = ""


def parse_policy(text: str, path: str, owner: str = "?") -> Owned:
    try:
        data, source = parse_yaml(text, path)
        return Owned(path, owner, structure(data, PolicyFile, source, "a policy file"))
    except ConfigError as e:
        return Owned(path, owner, error="; ".join(e.messages))


def _glob_word(p: str) -> str:
    """A path pattern as a shell word: its wildcards left to the shell when the rest of it
    needs no quoting, else quoted whole (a literal path)."""
    return (p if any(c in p for c in "*?[") and re.fullmatch(r"[A-Za-z0-9_./*?+@%:,-]+", p)
            else q(p))


def read_script(patterns: Sequence[str], home: str | None) -> str:
    """Shell that prints each policy file the patterns find: a header line, then its text.
    ``~`` is ``home``, or with None the shell's own ``$HOME`` (for a script that runs before
    the head has learned it)."""
    from .hosts.base import HOME_SH  # (policy is imported by the inventory model hosts use)

    words = []
    for p in patterns:
        if p == "~" or p.startswith("~/"):
            # (the home dir quoted, its wildcards left to the rest: a home with a space in
            # its name still has its ~/*.policy files found)
            base = HOME_SH if home is None else q(home.rstrip("/"))
            words.append(base + _glob_word(p[1:]) if p != "~" else base)
            continue
        words.append(_glob_word(p))
    return (f"for f in {' '.join(words)}; do\n"
            '  [ -e "$f" ] || [ -L "$f" ] || continue\n'
            '  o=$(stat -c %U -- "$f" 2>/dev/null)\n'
            '  if [ -f "$f" ] && [ -r "$f" ]; then\n'
            '    printf \'@@policy %s %s\\n\' "${o:-?}" "$f"\n'
            f'    head -c {MAX_BYTES} -- "$f"; echo; echo @@end\n'
            '  else printf \'@@unreadable %s %s\\n\' "${o:-?}" "$f"; fi\n'
            "done\n")


def parse_found(text: str) -> list[Owned]:
    """The files ``read_script`` printed, each parsed (duplicates through two patterns once)."""
    found: list[Owned] = []
    seen: set[str] = set()
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("@@unreadable "):
            owner, _, path = line[13:].partition(" ")
            if path not in seen:
                seen.add(path)
                found.append(Owned(path, owner, error=f"{path}: cannot be read by dssh's user: "
                                                      "its owner can run 'chmod o+r' on it"))
        elif line.startswith("@@policy "):
            owner, _, path = line[9:].partition(" ")
            body = []
            for b in lines:
                if b == "@@end":
                    break
                body.append(b)
            if path in seen:
                continue
            seen.add(path)
            text_ = "\n".join(body).rstrip("\n") + "\n"
            if len(text_.encode()) > MAX_BYTES:
                found.append(Owned(path, owner, error=f"{path}: larger than {MAX_BYTES} "
                                                      "bytes: a policy is a few lines"))
            else:
                found.append(parse_policy(text_, path, owner))
    return found


@attrs.frozen
class Effective:
    """What holds on a host: the strictest of its inventory entry and its owners' files."""

    cpus: int | None = None  # a cap (None: the host's own count)
    gpus: tuple[int, ...] | None = None  # the GPUs allowed (None: all the host has)
    nice: int = DEFAULT_NICE
    hours: tuple[tuple[Window, ...], ...] = ()  # every one of these must be open
    hours_text: tuple[str, ...] = ()
    max_pause: float = 24 * 3600.0
    files: tuple[Owned, ...] = ()

    @property
    def errors(self) -> list[str]:
        return [f.error for f in self.files if f.error]

    def allowed_gpus(self, gpus: Iterable[int]) -> tuple[int, ...]:
        """Of the host's GPUs, those its owners let dssh hand out."""
        return tuple(g for g in gpus if self.gpus is None or g in self.gpus)

    def open_at(self, when: dt.datetime) -> bool:
        m = when.hour * 60 + when.minute
        return all(any(w.open_at(when.weekday(), m) for w in ws) for ws in self.hours)

    def next_change(self, when: dt.datetime) -> dt.datetime | None:
        """The next time, within a week, at which ``open_at`` changes (None: never)."""
        if not self.hours:
            return None
        now = self.open_at(when)
        base = when.replace(second=0, microsecond=0)
        edges = sorted({base + dt.timedelta(days=d, minutes=m - base.hour * 60 - base.minute)
                        for d in range(9) for ws in self.hours for w in ws
                        for m in (w.start, w.end % (24 * 60))})
        for t in edges:
            if t > when and self.open_at(t) != now:
                return t
        return None

    def describe(self) -> str:
        """In a few words, for ``dssh hosts`` and messages."""
        parts = []
        if self.cpus is not None:
            parts.append(f"at most {self.cpus} cpus")
        if self.gpus is not None:
            parts.append(f"gpus {','.join(map(str, self.gpus)) or 'none'}")
        parts.append(f"nice {self.nice}")
        if self.hours_text:
            parts.append("hours " + " and ".join(self.hours_text))
        parts.append(f"pauses up to {format_duration(self.max_pause)}")
        return ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": None if self.gpus is None else list(self.gpus),
                "nice": self.nice, "hours": list(self.hours_text), "max_pause": self.max_pause,
                "files": [{"path": f.path, "owner": f.owner, "error": f.error or None}
                          for f in self.files]}


def combine(host: Any, files: Iterable[Owned]) -> Effective:
    """The strictest of the host's inventory settings and its owners' policy files."""
    files = tuple(files)
    cpus: int | None = None  # the inventory's cpus count the host itself (HostSlots)
    gpus: set[int] | None = None
    nice = host.nice
    hours, texts = [], []
    max_pause = host.max_pause
    if host.hours:
        hours.append(parse_hours(host.hours))
        texts.append(host.hours)
    for f in files:
        p = f.policy
        if p is None:
            continue
        if p.cpus is not None:
            cpus = p.cpus if cpus is None else min(cpus, p.cpus)
        if p.gpus is not None:
            gpus = set(p.gpus) if gpus is None else gpus & set(p.gpus)
        if p.nice is not None:
            nice = max(nice, p.nice)
        if p.hours is not None:
            hours.append(parse_hours(p.hours))
            texts.append(p.hours)
        if p.max_pause is not None:
            max_pause = max(max_pause, parse_duration(p.max_pause))
    return Effective(cpus, None if gpus is None else tuple(sorted(gpus)), nice, tuple(hours),
                     tuple(texts), max_pause, files)


def host_now(tz_minutes: int) -> dt.datetime:
    """The host's wall clock (its UTC offset learnt at connect). ``DSSH_CLOCK_OFFSET``
    (seconds) shifts it, so tests can stand at any hour."""
    shift = float(os.environ.get("DSSH_CLOCK_OFFSET") or 0)
    utc = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=shift)
    return (utc + dt.timedelta(minutes=tz_minutes)).replace(tzinfo=None)


def parse_tz(text: str) -> int:
    """``date +%z`` (``+0100``) in minutes east of UTC; 0 if unreadable."""
    m = re.fullmatch(r"([+-])(\d{2})(\d{2})", text.strip())
    if not m:
        return 0
    return (1 if m[1] == "+" else -1) * (int(m[2]) * 60 + int(m[3]))

"""``dssh pause HOST`` and ``dssh resume HOST``: the SSH user's pause file, from afar.

They write and remove ``~/.distribute-pause`` of dssh's SSH user on the host; the
wrappers there notice within a second, head or no head. Other people's pause files are
theirs: ``resume`` never touches them, and says when one still holds the host.
"""

from __future__ import annotations

import re
from shlex import quote as q

from .durations import format_until, parse_duration
from .errors import ConfigError
from .hosts.base import make_connection
from .model.inventory import Inventory
from .probe import probe

PAUSE_FILE = "~/.distribute-pause"


def duration_text(text: str) -> str:
    """A duration as the host-side wrapper reads it (``2h``, ``1h30m``, ``90``)."""
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise ConfigError(f"--for {text!r}: {e}", key="--for") from None
    if seconds <= 0:
        raise ConfigError(f"--for {text!r}: give a duration longer than zero, e.g. --for 2h",
                          key="--for")
    s = text.strip().lower().replace(" ", "")
    return s if re.fullmatch(r"(\d+[dhms])+|\d+", s) else f"{int(round(seconds))}s"


async def pause(inventory: Inventory, name: str, duration: str | None,
                accept_new_hostkeys: bool = False) -> str:
    host = _host(inventory, name)
    content = duration_text(duration) + "\n" if duration else ""
    conn = make_connection(host, accept_new_hostkeys=accept_new_hostkeys)
    await conn.connect()
    try:
        path = conn.expand(PAUSE_FILE)
        res = await conn.run(f"printf '%s' {q(content)} > {q(path)}.tmp && "
                             f"mv -f {q(path)}.tmp {q(path)} && date +%s\n", timeout=30)
        if res.exit_status != 0:
            raise ConfigError(f"{name}: cannot write {path}: "
                              f"{res.stderr.decode(errors='replace').strip()}")
    finally:
        await conn.close()
    now = float(res.text.strip() or 0)
    until = now + (parse_duration(duration) if duration else host.max_pause)
    how = f"for {duration}" if duration else \
        f"until you resume it (at most until {format_until(until)}; touch the file to extend)"
    return (f"{name}: paused {how}: wrote {path}. dssh's jobs there stop within a second; "
            f"'dssh resume {name}' ends it")


async def resume(inventory: Inventory, name: str, accept_new_hostkeys: bool = False) -> str:
    host = _host(inventory, name)
    conn = make_connection(host, accept_new_hostkeys=accept_new_hostkeys)
    await conn.connect()
    try:
        path = conn.expand(PAUSE_FILE)
        res = await conn.run(f"if [ -e {q(path)} ] || [ -L {q(path)} ]; then rm -f {q(path)} "
                             "&& echo removed; else echo none; fi\n", timeout=30)
    finally:
        await conn.close()
    said = (f"{name}: removed {path}" if res.text.strip() == "removed"
            else f"{name}: {path} did not exist")
    row = await probe(host, accept_new_hostkeys)
    if row.get("paused_by"):
        others = "; ".join(f"{p['file']} ({p['owner']}) until {format_until(p['until'])}"
                           for p in row["paused_by"])
        return f"{said}, but it is still paused by {others}: that is its owner's to remove"
    return f"{said}; it is no longer paused and dssh's jobs there continue"


def _host(inventory: Inventory, name: str):
    host = inventory.hosts.get(name)
    if host is None:
        raise ConfigError(f"no host {name!r} in the inventory {inventory.source} (hosts: "
                          f"{', '.join(inventory.hosts) or 'none'})", key="HOST")
    return host

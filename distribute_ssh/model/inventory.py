"""The inventory: which workstations dssh may use and what each offers (SPEC §2)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs

from ..durations import parse_duration
from ..errors import ConfigError
from .yamlload import Duration, EnvText, FieldValueError, Source, parse_yaml, structure

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
DEFAULT_WORKDIR = "~/.dssh"
DEFAULT_PAUSE_FILES = ("~/.distribute-pause", "/home/*/.distribute-pause", "/tmp/.distribute-pause")


def _non_negative(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v < 0:
        raise FieldValueError(a.name, f"must be 0 or more, got {v}")


def _positive(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v <= 0:
        raise FieldValueError(a.name, f"must be at least 1, got {v}")


def _port(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and not 1 <= v <= 65535:
        raise FieldValueError(a.name, f"must be a TCP port between 1 and 65535, got {v}")


def _one_of(*choices: str):
    def check(inst: Any, a: attrs.Attribute, v: Any) -> None:
        if v is not None and v not in choices:
            raise FieldValueError(a.name, f"must be one of {', '.join(choices)}, got {v!r}")

    return check


def _duration(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            parse_duration(v)
        except ValueError as e:
            raise FieldValueError(a.name, str(e)) from None


def _gpu_ids(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is None:
        return
    if any(g < 0 for g in v):
        raise FieldValueError(a.name, "GPU ids are 0 or more, e.g. gpus: [0, 1]")
    if len(set(v)) != len(v):
        raise FieldValueError(a.name, f"a GPU id is listed twice in {v}")


def _names(inst: Any, a: attrs.Attribute, v: Any) -> None:
    for c in v or ():
        if not NAME_RE.match(c):
            raise FieldValueError(a.name, f"{c!r} is not a valid name: use letters, digits, . _ -")


@attrs.frozen
class HostSettings:
    """One host's settings as written; every field optional so ``defaults`` can fill it."""

    address: str | None = None
    port: int | None = attrs.field(default=None, validator=_port)
    user: str | None = None
    connection: str | None = attrs.field(default=None, validator=_one_of("ssh", "local"))
    cpus: int | None = attrs.field(default=None, validator=_positive)
    slots: int | None = attrs.field(default=None, validator=_positive)
    gpus: list[int] | None = attrs.field(default=None, validator=_gpu_ids)
    capabilities: list[str] | None = attrs.field(default=None, validator=_names)
    workdir: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    env: dict[str, EnvText] | None = None
    python: str | None = None
    pause_files: list[str] | None = None
    max_pause: Duration | None = attrs.field(default=None, validator=_duration)
    on_pause: str | None = attrs.field(default=None, validator=_one_of("suspend", "drain"))
    connect_timeout: float | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class InventoryFile:
    defaults: HostSettings | None = None
    hosts: dict[str, HostSettings | None] = attrs.Factory(dict)


@attrs.frozen
class Host:
    """A resolved host: defaults applied, ready to connect to."""

    name: str
    connection: str = "ssh"
    address: str | None = None
    port: int | None = None
    user: str | None = None
    cpus: int | None = None
    slots: int | None = None
    gpus: tuple[int, ...] = ()
    capabilities: frozenset[str] = frozenset()
    workdir: str = DEFAULT_WORKDIR
    identity_file: str | None = None
    known_hosts: str | None = None
    env: dict[str, str] = attrs.Factory(dict)
    python: str = "python3"
    pause_files: tuple[str, ...] = DEFAULT_PAUSE_FILES
    max_pause: float = 24 * 3600.0
    on_pause: str = "suspend"
    connect_timeout: float = 10.0

    @property
    def is_local(self) -> bool:
        return self.connection == "local"


@attrs.frozen
class Inventory:
    hosts: dict[str, Host]
    source: str  # where it came from, for messages: a path or "embedded default"

    def select(self, names: list[str] | None) -> Inventory:
        if not names:
            return self
        unknown = [n for n in names if n not in self.hosts]
        if unknown:
            raise ConfigError(
                f"--hosts: unknown host {', '.join(unknown)} (the inventory {self.source} has: "
                f"{', '.join(self.hosts) or 'none'})", key="--hosts")
        return Inventory({n: self.hosts[n] for n in names}, self.source)


def _resolve(name: str, mine: HostSettings | None, defaults: HostSettings | None) -> Host:
    mine = mine or HostSettings()
    defaults = defaults or HostSettings()

    def pick(field: str) -> Any:
        v = getattr(mine, field)
        return getattr(defaults, field) if v is None else v

    kw: dict[str, Any] = {}
    for f in attrs.fields(HostSettings):
        v = pick(f.name)
        if v is None:
            continue
        if f.name == "gpus":
            v = tuple(v)
        elif f.name == "capabilities":
            v = frozenset(v)
        elif f.name == "pause_files":
            v = tuple(v)
        elif f.name == "max_pause":
            v = parse_duration(v)
        elif f.name == "env":
            v = {**(defaults.env or {}), **(mine.env or {})}
        kw[f.name] = v
    return Host(name=name, **kw)


def embedded_default() -> Inventory:
    """This machine alone, no SSH: a newcomer can run a sweep before setting anything up.

    Its capabilities are the common tools found on this machine's PATH.
    """
    import shutil

    caps = frozenset(t for t in ("python3", "apptainer", "podman", "bwrap") if shutil.which(t))
    if shutil.which("nvidia-smi"):
        caps |= {"gpu"}
    return Inventory({"localhost": Host(name="localhost", connection="local", capabilities=caps)},
                     "embedded default (this machine alone)")


def parse_inventory(text: str, filename: str) -> Inventory:
    data, source = parse_yaml(text, filename)
    inv = structure(data, InventoryFile, source, "the inventory")
    return _validate(inv, source)


def _validate(inv: InventoryFile, source: Source) -> Inventory:
    msgs = []
    if not inv.hosts:
        msgs.append(f"{source.where()}: the inventory lists no hosts: add a 'hosts:' mapping "
                    "(see inventory.example.yaml)")
    hosts: dict[str, Host] = {}
    for name, settings in inv.hosts.items():
        if not NAME_RE.match(str(name)):
            msgs.append(f"{source.where(('hosts', name))}: host name {name!r} may only use "
                        "letters, digits, '.', '_' and '-'")
            continue
        host = _resolve(str(name), settings, inv.defaults)
        for key in ("identity_file", "known_hosts"):
            p = getattr(host, key)
            if p is not None and p.lower() != "none" and not Path(os.path.expanduser(p)).exists():
                where = source.where(("hosts", name, key)) if settings and getattr(settings, key) \
                    else source.where(("defaults", key))
                msgs.append(f"{where}: {key} {p!r} does not exist: fix the path or remove the key")
            if key == "known_hosts" and p is not None and p.lower() == "none":
                msgs.append(f"{source.where(('hosts', name, key))}: known_hosts: none would turn "
                            "host-key checking off; dssh always verifies host keys. Give a file, "
                            "or leave the key out to use ~/.ssh/known_hosts")
        hosts[str(name)] = host
    if msgs:
        raise ConfigError(msgs, path=source.filename)
    return Inventory(hosts, source.filename)


def inventory_path(explicit: str | None, cwd: Path | None = None) -> Path | None:
    """Where the inventory comes from: -i, $DSSH_INVENTORY, ./inventory.yaml, the config dir."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("DSSH_INVENTORY")
    if env:
        return Path(env)
    local = (cwd or Path.cwd()) / "inventory.yaml"
    if local.exists():
        return local
    from platformdirs import user_config_path

    cfg = user_config_path("dssh") / "inventory.yaml"
    if cfg.exists():
        return cfg
    return None


def load_inventory(path: str | os.PathLike | None = None) -> Inventory:
    """Load the inventory from ``path`` or the usual places; the embedded default if none."""
    p = inventory_path(str(path) if path is not None else None)
    if p is None:
        return embedded_default()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: inventory file not found: check the path given with -i or "
                          "$DSSH_INVENTORY", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the inventory: {e}", path=str(p)) from None
    return parse_inventory(text, str(p))

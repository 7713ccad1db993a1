"""The inventory: which workstations dssh may use and what each offers (SPEC §2)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs

from ..durations import parse_duration
from ..errors import ConfigError
from ..policy import check_hours, check_nice
from .yamlload import (
    ENV_NAME_RE,
    NAME_RE,
    Duration,
    EnvText,
    FieldValueError,
    Scalar,
    Source,
    dotted,
    parse_yaml,
    read_config_file,
    structure,
    yaml_key,
)

DEFAULT_WORKDIR = "~/.dssh"
DEFAULT_LEDGER_DIR = "/tmp/dssh-ledger"  # world-writable and sticky, like /tmp itself
DEFAULT_PAUSE_FILES = ("~/.distribute-pause", "/home/*/.distribute-pause", "/tmp/.distribute-pause")


# What leaving a key out means, for messages about a bad value.
_DEFAULTS = {
    "cpus": "remove the line to have the host's cpus probed (nproc)",
    "slots": "remove the line for no limit (the cpus decide)",
    "connect_timeout": "remove the line for the default (10 seconds)",
}


def _non_negative(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v < 0:
        raise FieldValueError(yaml_key(a), f"must be 0 or more, got {v}")


def _positive(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v <= 0:
        hint = _DEFAULTS.get(a.name, "remove the line for the default")
        raise FieldValueError(yaml_key(a), f"must be more than 0, got {v}: give a positive "
                                           f"number, or {hint}")


def _port(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and not 1 <= v <= 65535:
        raise FieldValueError(yaml_key(a), f"must be a TCP port between 1 and 65535, got {v}: "
                                           "SSH listens on 22 unless the host says otherwise; "
                                           "remove the line to use ~/.ssh/config or 22")


def _one_of(*choices: str):
    def check(inst: Any, a: attrs.Attribute, v: Any) -> None:
        if v is not None and v not in choices:
            raise FieldValueError(yaml_key(a), f"must be one of {', '.join(choices)}, got {v!r}: "
                                               f"write e.g. {yaml_key(a)}: {choices[0]}")

    return check


def _duration(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            parse_duration(v)
        except ValueError as e:
            raise FieldValueError(yaml_key(a), f"{e}: write e.g. {yaml_key(a)}: 8h") from None


def _gpu_ids(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is None:
        return
    if any(g < 0 for g in v):
        raise FieldValueError(yaml_key(a), f"GPU ids are 0 or more, got {v}: list the ids "
                                           "nvidia-smi shows, e.g. gpus: [0, 1]")
    if len(set(v)) != len(v):
        twice = next(g for g in v if v.count(g) > 1)
        raise FieldValueError(yaml_key(a), f"GPU id {twice} is listed twice in {v}: list each "
                                           "GPU once, e.g. gpus: [0, 1]")


def _ledger_dir(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is None:
        return
    if not v.startswith("/") or "\n" in v or "\t" in v:
        raise FieldValueError(yaml_key(a), f"must be an absolute path on the host, shared by "
                                           f"every user who runs dssh there, got {v!r}: write "
                                           "e.g. ledger_dir: /tmp/dssh-ledger, or remove the "
                                           "line for that default")


def _names(inst: Any, a: attrs.Attribute, v: Any) -> None:
    for c in v or ():
        if not NAME_RE.match(c):
            raise FieldValueError(yaml_key(a), f"{c!r} is not a valid name: use letters, digits, "
                                               "'.', '_' and '-', e.g. capabilities: "
                                               "[python3, gpu]")


def _load(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and not 0 < v <= 1000:
        raise FieldValueError(yaml_key(a), f"must be more than 0, got {v}: the number of busy "
                                           "cpus other users' programs keep, e.g. "
                                           "foreign_load: 0.5")


@attrs.frozen
class PauseWhen:
    """Signals that the owner is using the machine (SPEC §6c); each one off unless given."""

    # an interactive session of another user with input in the last DURATION
    owner_active: Duration | None = attrs.field(default=None, validator=_duration)
    # other users' runnable threads, averaged over about 10 s, above this
    foreign_load: float | None = attrs.field(default=None, validator=_load)
    # a process that is not dssh's on a GPU dssh would hand out
    gpu_busy: bool | None = None
    # how long every signal must be clear before dssh's jobs go on
    clear_for: Duration | None = attrs.field(default=None, validator=_duration)


@attrs.frozen
class HostSettings:
    """One host's settings as written; every field optional so ``defaults`` can fill it."""

    address: str | None = None
    port: int | None = attrs.field(default=None, validator=_port)
    user: str | None = None
    connection: str | None = attrs.field(default=None, validator=_one_of("ssh", "local"))
    # A workstation runs jobs itself; a Slurm cluster's login node submits them (SPEC §10).
    kind: str | None = attrs.field(default=None, validator=_one_of("workstation", "slurm"))
    # With kind: slurm, sbatch options of this cluster (account, partition), under the
    # sweep's own.
    slurm: dict[str, Scalar] | None = None
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
    # How long a head waits for a host that stopped answering before it runs that host's
    # jobs elsewhere.
    host_grace: Duration | None = attrs.field(default=None, validator=_duration)
    # Where every user's heads count what they hold on this host (SPEC §6a).
    ledger_dir: str | None = attrs.field(default=None, validator=_ledger_dir)
    # Owner etiquette (SPEC §6b): the jobs' nice level, when dssh may start work, and
    # where the owners' policy files are.
    nice: int | None = attrs.field(default=None, validator=check_nice)
    hours: str | None = attrs.field(default=None, validator=check_hours)
    policy_files: list[str] | None = None
    pause_when: PauseWhen | None = None
    # a job suspended this long moves to another host (SPEC §6d)
    migrate_after: Duration | None = attrs.field(default=None, validator=_duration)


@attrs.frozen
class InventoryFile:
    defaults: HostSettings | None = None
    hosts: dict[str, HostSettings | None] = attrs.Factory(dict)


@attrs.frozen
class Host:
    """A resolved host: defaults applied, ready to connect to."""

    name: str
    connection: str = "ssh"
    kind: str = "workstation"
    slurm: dict[str, Any] = attrs.Factory(dict)
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
    host_grace: float = 300.0
    ledger_dir: str = DEFAULT_LEDGER_DIR
    nice: int = 10
    hours: str | None = None
    policy_files: tuple[str, ...] = ("~/.distribute-policy", "/home/*/.distribute-policy")
    pause_when: PauseWhen | None = None
    migrate_after: float | None = None

    @property
    def is_local(self) -> bool:
        return self.connection == "local"


@attrs.frozen
class Inventory:
    hosts: dict[str, Host]
    source: str  # where it came from, for messages: a path or "embedded default"
    groups: dict[str, list[str]] = attrs.Factory(dict)  # an Ansible inventory's groups

    def select(self, names: list[str] | None) -> Inventory:
        """The named hosts, and the hosts of the named groups."""
        if not names:
            return self
        unknown = [n for n in names if n not in self.hosts and n not in self.groups]
        if unknown:
            groups = f"; groups: {', '.join(self.groups)}" if self.groups else ""
            raise ConfigError(
                f"--hosts: unknown host {', '.join(map(repr, unknown))} (hosts in "
                f"{self.source}: {', '.join(self.hosts) or 'none'}{groups}): check the "
                "spelling, or add the host to the inventory", key="--hosts")
        chosen: list[str] = []
        for n in names:
            for h in ([n] if n in self.hosts else self.groups[n]):
                if h in self.hosts and h not in chosen:
                    chosen.append(h)
        return Inventory({n: self.hosts[n] for n in chosen}, self.source, self.groups)


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
        elif f.name in ("pause_files", "policy_files"):
            v = tuple(v)
        elif f.name in ("max_pause", "host_grace", "migrate_after"):
            v = parse_duration(v)
        elif f.name == "env":
            v = {**(defaults.env or {}), **(mine.env or {})}
        elif f.name == "slurm":
            v = {**(defaults.slurm or {}), **(mine.slurm or {})}
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
    from .ansible import convert, is_ansible, rewrite_message

    if is_ansible(data):
        doc, groups, paths = convert(data)
        try:
            inv = structure(doc, InventoryFile, source, "the inventory")
            result = _validate(inv, source)
        except ConfigError as e:
            lines = [rewrite_message(m, paths, source.where) for m in e.messages]
            key = e.key
            if key in paths:
                key = ".".join(map(str, paths[key]))
            raise ConfigError(lines, path=filename, line=e.line, key=key) from None
        return Inventory(result.hosts, result.source, groups)
    if isinstance(data, dict) and data.get("hosts", {}) is None:
        data = {**data, "hosts": {}}  # 'hosts:' with nothing under it: reported as no hosts
    inv = structure(data, InventoryFile, source, "the inventory")
    return _validate(inv, source)


def _validate(inv: InventoryFile, source: Source) -> Inventory:
    msgs: list[str] = []
    keys: list[str] = []

    def add(path: tuple, text: str) -> None:
        msg = f"{source.where(path)}: {dotted(path)}: {text}"
        if msg not in msgs:  # a bad default would otherwise be reported once per host
            msgs.append(msg)
            keys.append(dotted(path))

    if not inv.hosts:
        add(("hosts",), "the inventory lists no hosts: add at least one under 'hosts:', e.g. "
                        "hosts: {laptop: {connection: local}} or hosts: {lab1: {address: "
                        "10.0.0.11}}")
    for where in (("defaults",), *(("hosts", n) for n in inv.hosts)):
        settings = inv.defaults if where == ("defaults",) else inv.hosts[where[1]]
        for k in (settings.env or {}) if settings else ():
            if not ENV_NAME_RE.match(str(k)):
                add(where + ("env", k), f"{k!r} is not an environment variable name: use "
                                        "letters, digits and '_', not starting with a digit")
    hosts: dict[str, Host] = {}
    for name, settings in inv.hosts.items():
        if not NAME_RE.match(str(name)) or str(name) in (".", ".."):
            fixed = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-.") or "lab1"
            add(("hosts", name), f"host name {name!r} may only use letters, digits, '.', '_' "
                                 f"and '-': rename it, e.g. {fixed} (put the real address in "
                                 "'address:')")
            continue
        host = _resolve(str(name), settings, inv.defaults)
        from ..slurm_options import option_problem

        for k, v in host.slurm.items():
            problem = option_problem(k, v)
            if problem:
                at = ("hosts", name, "slurm", k) if settings and settings.slurm and \
                    k in settings.slurm else ("defaults", "slurm", k)
                add(at, problem)
        for key in ("identity_file", "known_hosts"):
            p = getattr(host, key)
            if p is None:
                continue
            path = ("hosts", name, key) if settings and getattr(settings, key) is not None \
                else ("defaults", key)
            if key == "known_hosts" and p.lower() == "none":
                add(path, "'none' would turn host-key checking off, and dssh always verifies "
                          "host keys: give a known_hosts file, or remove the line to use "
                          "~/.ssh/known_hosts")
            elif p.lower() != "none" and not Path(os.path.expanduser(p)).exists():
                add(path, f"{p!r} does not exist: fix the path, or remove the line to use "
                          "~/.ssh/config and ssh-agent")
        hosts[str(name)] = host
    if msgs:
        raise ConfigError(msgs, path=source.filename, line=_line_of(msgs[0]), key=keys[0])
    from ..redact import register_env

    for h in hosts.values():
        register_env(h.env)
    return Inventory(hosts, source.filename)


def _line_of(msg: str) -> int | None:
    m = re.match(r"^.*?:(\d+): ", msg)
    return int(m.group(1)) if m else None


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
    given = "-i/--inventory" if path is not None else "$DSSH_INVENTORY"
    text = read_config_file(p, "inventory file", "inventory.yaml",
                            f"check the path given with {given}, or leave it out to use "
                            "./inventory.yaml or this machine alone", key=given)
    return parse_inventory(text, str(p))

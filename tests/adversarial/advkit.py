"""The adversarial corpus' harness: an isolated arena per case, the real CLI, canaries and
before/after snapshots of everything on disk that a run could touch.

An *arena* is one directory holding everything of one case::

    ARENA/
      sweep/          the sweep file and its input files (results/ lands here by default)
      home/           HOME of the dssh process (helpers.dssh)
      host/.dssh      the local host's workdir; host/ itself must gain nothing else
      ledger/         the local host's ledger_dir
      outside/        files a hostile job or value aims at; must never change
      inventory.yaml  one host, ``connection: local`` only (never the sshd fixtures)
      state.db        the state file (helpers.dssh sets DSSH_STATE)

A *canary* is a path ``/tmp/dssh-pwned-<arena tag>-<label>`` written into a hostile value as
``touch CANARY``: it exists afterwards only if something ran the value as shell code.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from helpers import dssh

HERE = Path(__file__).parent
# The tree under test: the subprocesses import distribute_ssh from here, whatever copy an
# editable install elsewhere would give them (they run in the arena, not in the repo).
REPO = HERE.parent.parent
CANARY_PREFIX = "/tmp/dssh-pwned-"


def load_headers(path: Path) -> dict[str, Any]:
    """The ``# key: value`` comment lines at the top of a case file (``expect-stderr`` may
    repeat: a list). Stops at the first line that is not a comment."""
    out: dict[str, Any] = {"expect-stderr": []}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("#"):
            break
        m = re.match(r"#\s*([a-z-]+):\s?(.*)$", line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).rstrip()
        if key == "expect-stderr":
            out[key].append(value)
        elif key in out and isinstance(out[key], str):
            out[key] += " " + value  # a long value continued on the next line
        else:
            out[key] = value
    return out


class Arena:
    """One case's directory, its inventory and its canaries; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = uuid.uuid4().hex[:12]
        self.sweep_dir = root / "sweep"
        self.home = root / "home"
        self.workdir = root / "host" / ".dssh"
        self.ledger = root / "ledger"
        self.outside = root / "outside"
        for d in (self.sweep_dir, self.home, self.outside):
            d.mkdir(parents=True, exist_ok=True)
        (self.outside / "precious.txt").write_text("precious\n")

    # -- substitutions -------------------------------------------------------------------
    def canary(self, label: str) -> str:
        return f"{CANARY_PREFIX}{self.tag}-{label}"

    def fired(self) -> list[str]:
        """The canaries of this arena that exist: each one is code that ran."""
        return sorted(str(p) for p in Path("/tmp").glob(f"dssh-pwned-{self.tag}-*"))

    def clean_canaries(self) -> None:
        for p in self.fired():
            Path(p).unlink(missing_ok=True)

    def subst(self, text: str, label: str = "c") -> str:
        """``@CANARY@``, ``@ARENA@``, ``@WORKDIR@``, ``@LEDGER@``, ``@OUTSIDE@`` in a case
        file made this arena's."""
        return (text.replace("@CANARY@", self.canary(label)).replace("@ARENA@", str(self.root))
                .replace("@WORKDIR@", str(self.workdir)).replace("@LEDGER@", str(self.ledger))
                .replace("@OUTSIDE@", str(self.outside)))

    # -- files ---------------------------------------------------------------------------
    def host(self, **settings: Any) -> dict[str, Any]:
        """The settings of the one local host, ``settings`` on top."""
        return {"connection": "local", "cpus": 4, "workdir": str(self.workdir),
                "ledger_dir": str(self.ledger), "pause_files": [str(self.root / "pause")],
                **settings}

    def write_inventory(self, text: str | None = None, **settings: Any) -> Path:
        p = self.root / "inventory.yaml"
        if text is None:
            text = yaml.safe_dump({"hosts": {"here": self.host(**settings)}}, sort_keys=False)
        p.write_text(text)
        return p

    def write_sweep(self, data: dict[str, Any] | str, name: str = "sweep.yaml") -> Path:
        p = self.sweep_dir / name
        p.write_text(data if isinstance(data, str) else
                     yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 20))
        return p

    # -- running -------------------------------------------------------------------------
    def dssh(self, *args: str | os.PathLike, timeout: float = 60) -> subprocess.CompletedProcess:
        """``dssh ARGS`` as the suite runs it (tests/helpers.py), in this arena."""
        return dssh(*args, cwd=self.root, home=self.home, timeout=timeout,
                    env={"PYTHONPATH": str(REPO)})

    def run(self, sweep: Path, *args: str | os.PathLike,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return self.dssh("run", sweep, "-i", self.root / "inventory.yaml", *args,
                         timeout=timeout)

    def start(self, *args: str | os.PathLike, memory: int = 2 << 30) -> subprocess.Popen:
        """``dssh ARGS`` in the background, in its own process group (see ``finish``), its
        address space limited to ``memory`` bytes: a case that makes dssh allocate without
        end (a YAML bomb, a product of huge ranges) fails instead of taking the machine."""

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DSSH_") or k.startswith("DSSH_TEST_")}
        env.pop("SSH_AUTH_SOCK", None)
        env.update(HOME=str(self.home), XDG_STATE_HOME=str(self.home / ".local/state"),
                   XDG_CONFIG_HOME=str(self.home / ".config"),
                   DSSH_STATE=str(self.root / "state.db"), PYTHONPATH=str(REPO))
        limited = ["sh", "-c", f'ulimit -v {memory >> 10} && exec "$0" "$@"', sys.executable]
        return subprocess.Popen([*limited, "-m", "distribute_ssh", *map(str, args)],
                                cwd=self.root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, deadline: float) -> subprocess.CompletedProcess:
    """Wait for a process from ``Arena.start`` until ``deadline`` (time.monotonic); a
    process still running then is killed with its whole group and gets returncode None."""
    try:
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, by its id
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        rc = None
    return subprocess.CompletedProcess(proc.args, rc, out, err)  # type: ignore[arg-type]


def explain(proc: subprocess.CompletedProcess) -> str:
    rc = "killed after its time limit (a hang)" if proc.returncode is None else \
        f"exit {proc.returncode}"
    return f"{rc}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


# -- snapshots ---------------------------------------------------------------------------------
Snapshot = dict[str, tuple]


def snapshot(root: Path, extra: Iterable[str] = ()) -> Snapshot:
    """Every entry below ``root`` (symlinks not followed) by relative path: type and mode,
    and for non-directories size, mtime and a symlink's target; plus the ``extra`` absolute
    paths (e.g. /etc/passwd) by their own name."""
    out: Snapshot = {}

    def record(key: str, p: str) -> None:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            out[key] = (kind, st.st_mode)
        else:
            link = os.readlink(p) if kind == stat.S_IFLNK else None
            out[key] = (kind, st.st_mode, st.st_size, st.st_mtime_ns, link)

    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            record(os.path.relpath(p, root), p)
    for p in extra:
        record(p, p)
    return out


def _ancestors(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts))}


def escaped(before: Snapshot, after: Snapshot, allowed: Iterable[str]) -> list[str]:
    """Entries created, removed or changed outside the ``allowed`` trees (relative paths; a
    trailing ``*`` allows every name with that prefix, e.g. ``state.db*``). Directories
    made on the way to an allowed tree are allowed."""
    allowed = list(allowed)
    parents = set().union(*(_ancestors(a.rstrip("*")) for a in allowed)) if allowed else set()

    def ok(p: str) -> bool:
        for a in allowed:
            if a.endswith("*") and p.startswith(a[:-1]):
                return True
            if p == a or p.startswith(a + "/"):
                return True
        return p in parents and after.get(p, (None,))[0] == stat.S_IFDIR

    changed = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    return sorted(p for p in changed if not ok(p))


def run_allowed(sweep_results: str) -> list[str]:
    """What a run may change in an arena: its results tree, the host's workdir and ledger,
    the state file and its lock dir."""
    return [sweep_results, "host/.dssh", "ledger", "locks", "state.db*"]

"""The small interface every kind of host implements; the engine knows nothing else.

A host runs POSIX ``sh`` scripts (fed on stdin to ``sh -s``, so the login shell never
parses them) and moves files. Two implementations: ``ssh.py`` (asyncssh) and
``local.py`` (this machine, no SSH). Transport errors never leak past this package:
callers see ``HostUnreachable`` and friends from ``distribute_ssh.errors``.
"""

from __future__ import annotations

import abc
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from shlex import quote as q
from typing import Any

import attrs

from ..model.inventory import Host

# What a failed write on the head's own disk looks like (full, read-only, no permission,
# quota): such an OSError from ``get`` is raised as it is, so the engine can tell "the
# results dir cannot take files" from "the host failed".
LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                               errno.EPERM, errno.EFBIG})


@attrs.frozen
class Completed:
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@attrs.frozen
class RemoteEntry:
    """One file below a directory on the host, as listed without following symlinks."""

    path: str  # relative to the listed root, '/'-separated
    size: int
    kind: str  # "file", "dir", "link", "other"


# Every script dssh runs on a host starts with this: what it creates there (workdir,
# builds, job dirs, logs, the jobs' own files) is the SSH user's alone, so other users of
# a shared workstation cannot read inputs, outputs or logs, nor swap a wrapper. The shared
# ledger sets its own umask.
PRELUDE = "umask 077\n"


class HostConnection(abc.ABC):
    """An open connection to one host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.home: str = ""  # the login user's home on the host, set by connect()

    @property
    def name(self) -> str:
        return self.host.name

    def expand(self, path: str) -> str:
        """A host path made absolute: ``~`` and relative paths start at the home dir."""
        if path == "~":
            return self.home
        if path.startswith("~/"):
            return self.home.rstrip("/") + path[1:]
        if not path.startswith("/"):
            return self.home.rstrip("/") + "/" + path
        return path

    @abc.abstractmethod
    async def connect(self, learn_home: bool = True) -> None:
        """Open the connection and learn ``home`` (unless not ``learn_home``: a caller whose
        first command prints ``$HOME`` sets it itself, one round trip sooner)."""

    @abc.abstractmethod
    async def run(self, script: str, *, timeout: float = 60.0) -> Completed:
        """Run a POSIX sh script; raises HostUnreachable if the connection is lost."""

    @abc.abstractmethod
    def stream(self, script: str) -> AsyncIterator[str]:
        """Run a long-lived script and yield its output lines as they come."""

    @abc.abstractmethod
    async def read_stream(self, script: str,
                          sink: Callable[[bytes], Awaitable[None]]) -> Completed:
        """Run a script and hand its stdout to ``sink`` as it arrives (for bulk data).

        Returns the exit status and stderr (``stdout`` is empty). If ``sink`` raises, the
        script is stopped and the exception propagates; HostUnreachable if the connection
        is lost.
        """

    @abc.abstractmethod
    async def put(self, local: str, remote: str) -> None:
        """Copy a local file or directory (recursively) to ``remote``."""

    @abc.abstractmethod
    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        """Create or replace a small file atomically."""

    @abc.abstractmethod
    async def read_file(self, remote: str, limit: int | None = None) -> bytes:
        """Read a file (its first ``limit`` bytes); FileNotFoundError if it is missing."""

    @abc.abstractmethod
    async def walk(self, remote: str) -> list[RemoteEntry]:
        """Everything below ``remote``, recursively, never following symlinks."""

    @abc.abstractmethod
    async def get(self, remote: str, local: str, size: int) -> None:
        """Download one regular file; raises if the bytes received are not ``size``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; jobs started detached keep running."""


def make_connection(host: Host, *, accept_new_hostkeys: bool = False) -> HostConnection:
    if host.is_local:
        from .local import LocalConnection

        return LocalConnection(host)
    from .ssh import SSHConnection

    return SSHConnection(host, accept_new_hostkeys=accept_new_hostkeys)


# The host's home dir as its own shell says it, without a trailing slash (as ``expand``
# joins it): for scripts that run before the head has learned ``home``.
HOME_SH = '"${HOME%/}"'


def expand_sh(path: str) -> str:
    """``HostConnection.expand(path)`` without its trailing slashes, as a shell word that
    the host's shell makes absolute from its own ``$HOME``."""
    if path.startswith("/"):
        return q(path.rstrip("/") or "/")
    rest = (path[2:] if path.startswith("~/") else "" if path == "~" else path).rstrip("/")
    return HOME_SH + (f"/{q(rest)}" if rest else "")


async def connect_named(inventory: Any, name: str, accept_new: bool = False) -> HostConnection:
    """Connect to the inventory's host ``name``, where a sweep's jobs ran (commands that
    reach back to them: logs, pull, clean, why); ConfigError if it left the inventory."""
    from ..errors import ConfigError

    spec = inventory.hosts.get(name)
    if spec is None:
        raise ConfigError(f"jobs ran on {name}, which is not in the inventory "
                          f"{inventory.source}: give the inventory they ran with (-i)")
    conn = make_connection(spec, accept_new_hostkeys=accept_new)
    await conn.connect()
    return conn

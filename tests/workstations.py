"""Simulated lab workstations for tests and benchmarks: real OpenSSH servers on 127.0.0.1.

Each workstation is its own ``/usr/sbin/sshd -D`` on a free high port of 127.0.0.1 with its own
ed25519 host key and OpenSSH defaults (MaxSessions 10, MaxStartups 10:30:100, the login shell).
Run as root, each workstation also gets its own local unix user (``dssh-ws1``, ``dssh-ws2``, ...)
with a fresh home under ``base_dir``; run as a normal user, every workstation logs in as that user
(sshd cannot switch users) and ``home`` is just a separate directory to use as the workdir.

Without ``/usr/sbin/sshd`` an asyncssh-based stand-in (``fallback_sshd.py``) is used instead,
unless ``DSSH_TEST_REQUIRE_SSHD=1``. ``DSSH_TEST_SSHD_BACKEND=openssh|asyncssh`` forces a backend.

Plain module, no pytest import: benchmarks use it after ``sys.path.insert(0, "<repo>/tests")``::

    with start_workstations(3, Path(tempfile.mkdtemp())) as ws:
        subprocess.run(ws.hosts[0].ssh_argv("hostname"), check=True)
        inventory = ws.write_inventory(ws.base_dir / "hosts.yaml")
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SSHD",
    "Workstation",
    "Workstations",
    "WorkstationError",
    "start_workstations",
]

SSHD = Path("/usr/sbin/sshd")
ADDRESS = "127.0.0.1"  # the only address the test bed ever uses
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class WorkstationError(RuntimeError):
    """A simulated workstation could not be set up, started or stopped."""


# --------------------------------------------------------------------------- small helpers


def _is_root() -> bool:
    return os.geteuid() == 0


def _free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel's ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ADDRESS, 0))
        return s.getsockname()[1]


def _write(path: Path, data: str | bytes, mode: int) -> None:
    """Write a file and force its mode (umask-independent)."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def _gen_ed25519_keys(paths: Sequence[Path], comment: str) -> list[str]:
    """Write ed25519 key pairs (OpenSSH format, no passphrase) at ``paths`` (+ ``.pub``).

    Returns the public key lines (``ssh-ed25519 AAAA... comment``). Uses ``cryptography``
    (an asyncssh dependency, ~1 ms per key); falls back to parallel ``ssh-keygen`` runs.
    """
    try:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:  # pragma: no cover - cryptography comes with asyncssh
        procs = []
        for p in paths:
            p.unlink(missing_ok=True)
            procs.append(subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(p)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for p, proc in zip(paths, procs, strict=True):
            out = proc.communicate()[0]
            if proc.returncode:
                msg = out.decode(errors="replace")
                raise WorkstationError(f"ssh-keygen for {p} failed: {msg}") from None
        return [Path(f"{p}.pub").read_text().strip() for p in paths]

    lines = []
    for p in paths:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
        public = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH)
        line = f"{public.decode()} {comment}"
        _write(p, private, 0o600)
        _write(Path(f"{p}.pub"), line + "\n", 0o644)
        lines.append(line)
    return lines


def _process_table() -> dict[int, tuple[int, int, str]]:
    """{pid: (ppid, session id, state)} of every process (Linux /proc; empty elsewhere)."""
    table = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid pgrp session ..." -- comm may contain spaces or parens
            fields = data[data.rindex(b")") + 2:].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0].decode())
    return table


def _connection_sessions(listener: int) -> set[int]:
    """Session ids of the processes serving the connections of the sshd ``listener``.

    sshd -D forks one process per connection, which calls setsid(); after login that process
    forks the unprivileged ``user@notty`` child (same session), which holds the socket too.
    The listener's own session covers a child that has not called setsid() yet. Commands run
    over SSH get sessions of their own, so they are not included.
    """
    return {listener} | {pid for pid, (ppid, _sid, _st) in _process_table().items()
                         if ppid == listener}


def _kill_sessions(sids: set[int], timeout: float = 2.0) -> None:
    """SIGKILL every process in the sessions ``sids``, rescanning until none is left (catches
    a child forked meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        victims = [pid for pid, (_ppid, sid, st) in _process_table().items()
                   if sid in sids and st != "Z"]
        if not victims or time.monotonic() > deadline:
            return
        for pid in victims:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.002)


def _pids_of_user(uid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every process whose real uid is ``uid`` (Linux /proc)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status") as f:
                    status = f.read()
            except OSError:
                continue
            info = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
            if int(info.get("Uid", "-1\t").split()[0]) == uid:
                found.append((int(entry.name), info.get("Name", "").strip()))
    return found


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _tail(path: Path, start: int = 0, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")[-limit:]
    except OSError:
        return ""


def _load_fallback() -> type:
    """``fallback_sshd.FallbackServer`` from this module's directory (imports asyncssh)."""
    try:
        from fallback_sshd import FallbackServer

        return FallbackServer
    except ImportError:  # this module was imported by path or as tests.workstations
        import importlib.util
        import sys

        spec = importlib.util.spec_from_file_location(
            "fallback_sshd", Path(__file__).with_name("fallback_sshd.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("fallback_sshd", module)
        spec.loader.exec_module(module)
        return module.FallbackServer


# --------------------------------------------------------------------------- unix users (root)


class _UserLock:
    """Holds ``flock`` on a per-prefix lock file while a Workstations set uses those unix users.

    Two test sessions (or a test run and a benchmark) on one machine must not share the users:
    ``usermod -d`` would move the other session's homes and ``stop()`` kills all their processes.
    If ``prefix`` is taken, ``prefix + "b"``, ``"c"``, ... is tried (users ``dssh-wsb1``, ...).
    """

    def __init__(self, prefix: str) -> None:
        lock_dir = Path(tempfile.gettempdir())
        for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
            path = lock_dir / f"{prefix}{suffix}.dssh-test-users.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd: int | None = fd
            self.prefix = prefix + suffix
            return
        raise WorkstationError(f"every user prefix {prefix}[b-z] is in use by another process")

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _login_shell() -> str:
    return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


def _ensure_user(user: str, home: Path, shell: str) -> pwd.struct_passwd:
    """Create or re-point the unix user ``user``: home ``home``, shell, unlocked for key login.

    ``usermod -p '*'``: a locked (``!``) password blocks key login under ``UsePAM no``;
    ``*`` allows keys and no password.
    """
    try:
        pwd.getpwnam(user)
        argv = ["usermod", "-d", str(home), "-s", shell, "-p", "*", user]
    except KeyError:
        argv = ["useradd", "-M", "-d", str(home), "-s", shell, "-p", "*", user]
    for attempt in range(2):
        r = user_admin(argv)
        if r.returncode == 0:
            break
        if attempt == 0 and "currently used by process" in r.stderr:
            # leftovers of a crashed earlier run (we hold the prefix lock, so nobody else's)
            _kill_user_processes(pwd.getpwnam(user).pw_uid, include_sshd=True)
            continue
        raise WorkstationError(f"{shlex.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return pwd.getpwnam(user)


def user_admin(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``useradd``/``usermod``, again while another session (an xdist worker) holds
    /etc/passwd's lock, for a few seconds at most."""
    for _ in range(7):
        r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode == 0 or "lock" not in r.stderr:
            return r
        time.sleep(0.5)
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def _kill_user_processes(uid: int, *, include_sshd: bool, timeout: float = 2.0) -> int:
    """SIGKILL every process of ``uid`` (optionally sparing its ``sshd`` session processes).

    Returns how many were signalled. Waits until they are gone (or zombies) up to ``timeout``.
    """
    if uid == 0 or uid == os.getuid():
        raise WorkstationError("refusing to kill the processes of root / the test runner")
    victims = [pid for pid, comm in _pids_of_user(uid)
               if include_sshd or not comm.startswith("sshd")]
    for pid in victims:
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for pid in victims:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    st = f.read()
            except OSError:
                break
            if st[st.rindex(b")") + 2:st.rindex(b")") + 3] == b"Z":
                break
            time.sleep(0.005)
    return len(victims)


# --------------------------------------------------------------------------- one workstation


_SSHD_CONFIG = """\
# written by tests/workstations.py; OpenSSH defaults for everything not listed
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
"""


@dataclass(eq=False)
class Workstation:
    """One simulated workstation. ``start()``/``stop()`` can be repeated (same port, same key)."""

    name: str  # "ws1", ... (the inventory key)
    address: str
    port: int
    user: str
    home: Path
    identity_file: Path  # client private key (shared by all workstations of a set)
    known_hosts: Path  # holds the keys of every workstation of the set
    host_pub_key_line: str  # "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    dir: Path  # this workstation's server files: sshd_config, host key, sshd.log, sshd.pid
    backend: str = "openssh"  # or "asyncssh" (fallback_sshd.py)
    sshd_path: Path = SSHD
    pid: int | None = None  # pid of the listening sshd; None while stopped (and for asyncssh)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _fallback: Any = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    # -- paths
    @property
    def config_file(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key_file(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    @property
    def log_file(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def workdir(self) -> Path:
        """The dssh workdir written into the inventory (``home/.dssh``)."""
        return self.home / ".dssh"

    @property
    def ledger_dir(self) -> str:
        """This workstation's ledger (SPEC §6a): simulated workstations share one machine's
        /tmp, so each gets its own, as each real one has its own /tmp."""
        return str(self.dir.parent / "ledgers" / self.name)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.address}"

    @property
    def running(self) -> bool:
        if self.backend == "asyncssh":
            return self._fallback is not None and self._fallback.running
        return self._proc is not None and self._proc.poll() is None

    # -- clients
    def ssh_options(self) -> list[str]:
        """Options for the system ``ssh`` (no destination): key, port, strict host key check.

        ``-F /dev/null`` keeps the developer's ``~/.ssh/config`` out; ``IdentitiesOnly`` keeps
        agent keys out.
        """
        return [
            "-F", "/dev/null",
            "-i", str(self.identity_file),
            "-p", str(self.port),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=10",
        ]

    def ssh_argv(self, cmd: str | Sequence[str] | None = None) -> list[str]:
        """argv for the system ``ssh`` client running ``cmd`` here (a list is ``shlex.join``ed)."""
        argv = ["ssh", *self.ssh_options(), self.destination]
        if cmd is not None:
            argv.append(cmd if isinstance(cmd, str) else shlex.join(cmd))
        return argv

    def connect_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``asyncssh.connect`` (``config=None``: no ~/.ssh/config)."""
        kw: dict[str, Any] = {
            "host": self.address,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.identity_file)],
            "known_hosts": str(self.known_hosts),
            "agent_path": None,
            "config": None,
            "connect_timeout": 10,
        }
        kw.update(overrides)
        return kw

    async def connect(self, **overrides: Any) -> Any:
        """``await ws.connect()`` -> an ``asyncssh.SSHClientConnection`` (imports asyncssh)."""
        import asyncssh

        return await asyncssh.connect(**self.connect_kwargs(**overrides))

    def inventory_entry(self, *, without: tuple[str, ...] = (), **overrides: Any
                        ) -> dict[str, Any]:
        """This host's dict in a dssh inventory; the keys in ``without`` (or overridden
        with ``None``) are left out, so that dssh's defaults apply."""
        entry: dict[str, Any] = {
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "workdir": str(self.workdir),
            "ledger_dir": self.ledger_dir,
        }
        entry.update(overrides)
        return {k: v for k, v in entry.items() if v is not None and k not in without}

    # -- lifecycle
    def check_config(self) -> None:
        """``sshd -t``: fail clearly on a bad configuration before starting."""
        if self.backend != "openssh":
            return
        r = subprocess.run([str(self.sshd_path), "-t", "-f", str(self.config_file)],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode:
            raise WorkstationError(
                f"{self.name}: `sshd -t -f {self.config_file}` failed: {r.stderr.strip()}")

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart) the server on the same port with the same host key."""
        self._spawn()
        self._wait_ready(timeout)

    def _spawn(self) -> None:
        if self.running:
            raise WorkstationError(f"{self.name} is already running (pid {self.pid})")
        if self.backend == "asyncssh":
            server_cls = _load_fallback()
            self._fallback = server_cls(
                port=self.port, host_key_file=self.host_key_file,
                authorized_keys_file=self.authorized_keys, user=self.user, home=self.home,
                log_file=self.log_file)
            return
        self.pid_file.unlink(missing_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.sshd_path), "-D", "-e", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a Ctrl-C of pytest must not kill it before cleanup
        self.pid = self._proc.pid

    def _wait_ready(self, timeout: float) -> None:
        if self.backend == "asyncssh":
            try:
                self._fallback.start(timeout=timeout)
            except OSError as e:  # e.g. "Address already in use"
                self._fallback = None
                raise WorkstationError(f"{self.name}: fallback server failed: {e}") from e
            return
        # sshd logs "Server listening on 127.0.0.1 port N." right after listen(): from then on
        # connections are accepted. Watching the log avoids probe connections (which count
        # against MaxStartups and, on newer OpenSSH, PerSourcePenalties).
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        needle = f"Server listening on {self.address} port {self.port}"
        while True:
            text = _tail(self.log_file, self._log_offset, limit=1 << 20)
            if needle in text:
                return
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                self._proc, self.pid = None, None
                raise WorkstationError(
                    f"{self.name}: sshd exited with {rc} while starting:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise WorkstationError(
                    f"{self.name}: sshd not listening on port {self.port} after {timeout} s:\n"
                    f"{text[-3000:]}")
            time.sleep(0.003)

    def stop(self, *, sessions: bool = True, user_processes: bool = False) -> None:
        """Stop the server ("the workstation is lost"). Idempotent.

        ``sessions``: also kill the per-connection sshd processes, so open connections drop
        (a real sshd keeps them when only the listener stops). Commands started over SSH keep
        running (as after a network loss) unless ``user_processes`` (root only: kills every
        process of this workstation's own user, like a reboot).
        """
        if self.backend == "asyncssh":
            if self._fallback is not None:
                self._fallback.stop(abort_connections=sessions)
                self._fallback = None
        elif self._proc is not None:
            proc, self._proc = self._proc, None
            if sessions:
                # freeze the listener (no new forks), note its connections, then kill all
                _kill(proc.pid, signal.SIGSTOP)
                sids = _connection_sessions(proc.pid)
                proc.kill()
            else:
                proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
            if sessions:
                _kill_sessions(sids)
        self.pid = None
        if user_processes:
            self.kill_user_processes(include_sshd=True)

    def kill_user_processes(self, *, include_sshd: bool = False) -> int:
        """SIGKILL the processes of this workstation's own unix user (root mode only; else 0).

        ``include_sshd=False`` spares the user's sshd session processes, so open connections
        survive and only jobs/commands die.
        """
        if not self.has_own_user:
            return 0
        return _kill_user_processes(pwd.getpwnam(self.user).pw_uid, include_sshd=include_sshd)

    @property
    def has_own_user(self) -> bool:
        """True when this workstation logs in as its own dedicated unix user (root mode)."""
        return self.user != pwd.getpwuid(os.getuid()).pw_name

    def clean_workdir(self) -> None:
        """Empty ``home/.dssh`` (keeps the directory if it exists, never creates it),
        remove this workstation's ledger (a killed test's claims would count for a while)
        and its user's own pause file: a file a test left behind, even an expired one,
        would pause the host again for its old duration the moment a later test touches it."""
        shutil.rmtree(self.ledger_dir, ignore_errors=True)
        (self.home / ".distribute-pause").unlink(missing_ok=True)
        wd = self.workdir
        if not wd.is_dir():
            return
        for child in wd.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the set


@dataclass(eq=False)
class Workstations:
    """A started set of workstations; a context manager, ``stop()`` is idempotent."""

    hosts: list[Workstation]
    base_dir: Path
    client_dir: Path
    identity_file: Path
    known_hosts: Path
    backend: str
    prefix: str  # the unix user prefix actually used (root mode), else the requested one
    start_seconds: float = 0.0  # wall time start_workstations() took
    _lock: _UserLock | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def real_sshd(self) -> bool:
        return self.backend == "openssh"

    def __iter__(self) -> Iterator[Workstation]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, key: int | str) -> Workstation:
        if isinstance(key, str):
            for ws in self.hosts:
                if ws.name == key:
                    return ws
            raise KeyError(key)
        return self.hosts[key]

    def __enter__(self) -> Workstations:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inventory(self, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        overrides = overrides or {}
        unknown = set(overrides) - {ws.name for ws in self.hosts}
        if unknown:
            raise KeyError(f"overrides for unknown workstations: {sorted(unknown)}")
        doc: dict[str, Any] = {}
        if defaults is not None:
            doc["defaults"] = dict(defaults)
        doc["hosts"] = {ws.name: ws.inventory_entry(**overrides.get(ws.name, {}))
                        for ws in self.hosts}
        return doc

    def write_inventory(self, path: str | os.PathLike[str],
                        overrides: Mapping[str, Mapping[str, Any]] | None = None,
                        defaults: Mapping[str, Any] | None = None) -> Path:
        """Write ``{defaults: ..., hosts: {ws1: {...}, ...}}`` as YAML; returns the path.

        ``defaults`` is written only when given. An override value of ``None`` drops the key.
        """
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.inventory(overrides, defaults), sort_keys=False))
        return path

    def clean_workdirs(self) -> None:
        for ws in self.hosts:
            ws.clean_workdir()

    def kill_user_processes(self, *, include_sshd: bool = False) -> int:
        return sum(ws.kill_user_processes(include_sshd=include_sshd) for ws in self.hosts)

    def stop(self) -> None:
        """Stop every server, drop their connections, kill all processes of the test users."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        errors = []
        for ws in self.hosts:
            try:
                ws.stop(sessions=True, user_processes=True)
            except Exception as e:  # keep stopping the others
                errors.append(f"{ws.name}: {e!r}")
        if self._lock is not None:
            self._lock.release()
        if errors:
            raise WorkstationError("stopping workstations: " + "; ".join(errors))


def _choose_backend(sshd_path: Path, backend: str | None) -> str:
    backend = backend or os.environ.get("DSSH_TEST_SSHD_BACKEND") or None
    require = os.environ.get("DSSH_TEST_REQUIRE_SSHD", "") not in ("", "0")
    have_sshd = sshd_path.is_file() and os.access(sshd_path, os.X_OK)
    if backend not in (None, "openssh", "asyncssh"):
        raise WorkstationError(f"unknown backend {backend!r} (openssh or asyncssh)")
    if backend == "asyncssh" and require:
        raise WorkstationError("DSSH_TEST_REQUIRE_SSHD=1 but the asyncssh backend was requested")
    if backend in (None, "openssh") and not have_sshd:
        if require or backend == "openssh":
            raise WorkstationError(
                f"{sshd_path} not found; install openssh-server "
                "(DSSH_TEST_REQUIRE_SSHD=1 forbids the asyncssh fallback)")
        return "asyncssh"
    return backend or "openssh"


def _check_traversable(path: Path) -> None:
    """Other users must be able to reach ``path`` (their homes and authorized_keys live there)."""
    for p in [path, *path.parents]:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            raise WorkstationError(
                f"{p} is not searchable by other users (mode {stat.filemode(os.stat(p).st_mode)}),"
                f" so the workstation users cannot reach {path}; use e.g. a fresh "
                "tempfile.mkdtemp() as base_dir (pytest's tmp_path is under a 0700 directory)")


def start_workstations(n: int, base_dir: str | os.PathLike[str], prefix: str = "dssh-ws", *,
                       backend: str | None = None,
                       sshd_path: str | os.PathLike[str] = SSHD,
                       sshd_options: Mapping[str, str] | None = None) -> Workstations:
    """Start ``n`` workstations with their files under ``base_dir`` (created if needed).

    Layout: ``client/{id_ed25519,id_ed25519.pub,known_hosts}``, ``home/<user or wsN>/`` (fresh
    each time), ``wsN/{sshd_config,ssh_host_ed25519_key,authorized_keys,sshd.log,sshd.pid}``.
    As root, ``base_dir`` is made mode 0755 and must be reachable by other users.

    ``backend``: ``"openssh"`` (real sshd), ``"asyncssh"`` (fallback_sshd.py) or None (real sshd
    if present; env ``DSSH_TEST_SSHD_BACKEND`` overrides, ``DSSH_TEST_REQUIRE_SSHD=1`` forbids
    the fallback). ``prefix``: unix user names ``{prefix}1..n`` (root mode only; if another
    process holds that prefix, ``{prefix}b``... is used: read ``ws.user``).
    ``sshd_options``: extra sshd_config lines that win over the ones above (e.g.
    ``{"MaxSessions": "30"}``; no ``Match``), real sshd only;
    by default every other setting is OpenSSH's default, as on real workstations.
    """
    t0 = time.perf_counter()
    if n < 1:
        raise ValueError("n must be >= 1")
    sshd_path = Path(sshd_path)
    backend = _choose_backend(sshd_path, backend)
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    own_users = _is_root() and backend == "openssh"
    if own_users:
        base_dir.chmod(0o755)
        _check_traversable(base_dir)
        # privilege separation directory; only needed (and creatable) as root
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

    client_dir = base_dir / "client"
    client_dir.mkdir(exist_ok=True)
    client_dir.chmod(0o755)
    ledgers = base_dir / "ledgers"  # like /tmp: anyone may create, only owners remove
    if ledgers.exists():
        shutil.rmtree(ledgers)
    ledgers.mkdir()
    ledgers.chmod(0o1777)
    home_root = base_dir / "home"
    if home_root.exists():
        shutil.rmtree(home_root)
    home_root.mkdir()
    home_root.chmod(0o755)

    lock = _UserLock(prefix) if own_users else None
    ws_set: Workstations | None = None
    try:
        used_prefix = lock.prefix if lock else prefix
        names = [f"ws{i}" for i in range(1, n + 1)]
        ws_dirs = [base_dir / name for name in names]
        for d in ws_dirs:
            d.mkdir(exist_ok=True)
            d.chmod(0o755)
        identity = client_dir / "id_ed25519"
        keys = _gen_ed25519_keys([identity, *(d / "ssh_host_ed25519_key" for d in ws_dirs)],
                                 comment="dssh-test")
        client_pub, host_pubs = keys[0], keys[1:]
        known_hosts = client_dir / "known_hosts"

        me = pwd.getpwuid(os.getuid()).pw_name
        shell = _login_shell()
        hosts = []
        for i, (name, d, host_pub) in enumerate(zip(names, ws_dirs, host_pubs, strict=True), 1):
            if own_users:
                user = f"{used_prefix}{i}"
                home = home_root / user
                home.mkdir(mode=0o755)
                home.chmod(0o755)
                pw = _ensure_user(user, home, shell)
                os.chown(home, pw.pw_uid, pw.pw_gid)
            else:
                user = me
                home = home_root / name
                home.mkdir(mode=0o755)
            port = _free_port()
            ws = Workstation(
                name=name, address=ADDRESS, port=port, user=user, home=home,
                identity_file=identity, known_hosts=known_hosts,
                host_pub_key_line=f"[{ADDRESS}]:{port} " + " ".join(host_pub.split()[:2]),
                dir=d, backend=backend, sshd_path=sshd_path)
            _write(ws.authorized_keys, client_pub + "\n", 0o644)
            hosts.append(ws)

        ws_set = Workstations(hosts=hosts, base_dir=base_dir, client_dir=client_dir,
                              identity_file=identity, known_hosts=known_hosts, backend=backend,
                              prefix=used_prefix, _lock=lock)
        atexit.register(ws_set.stop)  # no orphan sshd even if the caller forgets
        _start_all(ws_set, dict(sshd_options or {}))
        ws_set.start_seconds = time.perf_counter() - t0
        return ws_set
    except BaseException:
        if ws_set is not None:
            with contextlib.suppress(Exception):
                ws_set.stop()
        elif lock is not None:
            lock.release()
        raise


def _start_all(ws_set: Workstations, sshd_options: dict[str, str]) -> None:
    """Write configs and start every server, in parallel where it matters."""
    for attempt in range(3):
        for ws in ws_set.hosts:
            if ws.backend == "openssh" and not ws.running:
                # sshd keeps the FIRST value of an option: the extra options go first to win
                extra = "".join(f"{k} {v}\n" for k, v in sshd_options.items())
                _write(ws.config_file, extra + _SSHD_CONFIG.format(
                    port=ws.port, host_key=ws.host_key_file, pid_file=ws.pid_file,
                    authorized_keys=ws.authorized_keys, user=ws.user), 0o644)
        _write(ws_set.known_hosts,
               "".join(ws.host_pub_key_line + "\n" for ws in ws_set.hosts), 0o644)
        pending = [ws for ws in ws_set.hosts if not ws.running]
        if attempt == 0 and ws_set.backend == "openssh":
            _check_configs(pending)
        for ws in pending:
            ws._spawn()
        port_taken = []
        for ws in pending:
            try:
                ws._wait_ready(START_TIMEOUT)
            except WorkstationError as e:
                if "Address already in use" not in str(e) and "Cannot bind" not in str(e):
                    raise
                port_taken.append(ws)  # lost the race for the port: pick another one
        if not port_taken:
            return
        for ws in port_taken:
            ws.port = _free_port()
            ws.host_pub_key_line = f"[{ADDRESS}]:{ws.port} " + ws.host_pub_key_line.split(" ", 1)[1]
    raise WorkstationError("could not find free ports for the workstations")


def _check_configs(hosts: Sequence[Workstation]) -> None:
    """``sshd -t`` of every config, run in parallel."""
    procs = [(ws, subprocess.Popen([str(ws.sshd_path), "-t", "-f", str(ws.config_file)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)) for ws in hosts]
    errors = []
    for ws, proc in procs:
        out = proc.communicate()[0].decode(errors="replace").strip()
        if proc.returncode:
            errors.append(f"{ws.name}: `sshd -t -f {ws.config_file}` failed: {out}")
    if errors:
        raise WorkstationError("\n".join(errors))


def workstation_set(n: int, prefix: str) -> Iterator[Workstations]:
    """A test session's set of ``n`` started workstations (users ``PREFIX1..n`` as root),
    stopped and removed afterwards (kept with ``DSSH_TEST_KEEP_WORKSTATIONS=1``)."""
    # Not pytest's tmp_path_factory: its base dir is 0700, and the workstation users (root
    # mode) must reach their homes and authorized_keys. mkdtemp's 0700 is fixed by
    # start_workstations (base_dir -> 0755).
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    ws = start_workstations(n, base, prefix=prefix)
    try:
        yield ws
    finally:
        ws.stop()
        if os.environ.get("DSSH_TEST_KEEP_WORKSTATIONS", "") in ("", "0"):
            shutil.rmtree(base, ignore_errors=True)

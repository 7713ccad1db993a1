"""A workstation over SSH (asyncssh): one connection, many channels, OpenSSH conventions.

Host keys are always verified. ``~/.ssh/config`` (aliases, ProxyJump, IdentityFile,
UserKnownHostsFile), ssh-agent and ``~/.ssh/known_hosts`` work as with ``ssh``.
Unknown hosts are refused unless the user asked for OpenSSH's ``accept-new``;
changed keys are always refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ..errors import (
    AuthenticationFailed,
    HostError,
    HostKeyRejected,
    HostUnreachable,
)
from ..model.inventory import Host
from .base import LOCAL_DISK_ERRNOS, PRELUDE, Completed, HostConnection, RemoteEntry
from .quick_import import asyncssh

# OpenSSH allows 10 sessions per connection by default (MaxSessions). dssh's budget:
# 1 SFTP, 1 watcher, SHELLS long-lived shells for quick commands, the rest one-off channels.
SHELLS = 4
MAX_CHANNELS = 10 - 2 - SHELLS
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT_MAX = 3
# Right after login sshd sends two small packets back to back (the auth result, then its
# host keys); the second waits for the first's ACK (Nagle), and the client, with nothing
# to send, delays that ACK by 40 ms: the first channel opens 40 ms late. A few empty
# debug messages in the first milliseconds carry the ACK at once (measured here: the
# first channel in 4 ms instead of 44 ms).
NUDGE_MS = (1, 3, 10, 30)
STREAM_CHUNK = 1 << 20


def revoked_keys(known_text: str, host: str, addr: str, port: int | None) -> list[Any]:
    """The keys ``@revoked`` lines revoke for this host. asyncssh's own lookup loses them
    for a host on a non-default port that has no trusted key (it retries without the port
    and keeps only the second answer), so they are matched here line by line."""
    out = []
    for line in known_text.splitlines():
        words = line.split(None, 1)
        if len(words) < 2 or words[0] != "@revoked":
            continue
        try:
            entry = asyncssh.import_known_hosts(words[1] + "\n")
        except (ValueError, asyncssh.Error):
            continue
        out += entry.match(host, addr, port)[0]
    return out


class _HostKeyPolicy(asyncssh.SSHClient):
    """Records what was offered; appends unknown keys when accept-new is on."""

    def __init__(self, known_text: str, write_to: Path | None) -> None:
        self.known_text = known_text
        self.write_to = write_to
        self.offered: tuple[str, int | None, str] | None = None
        self.changed = False
        self.revoked = False

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        # Called only when the key is not among the trusted ones for this host.
        line = key.export_public_key().decode().strip()
        self.offered = (host, port, line)
        if key in revoked_keys(self.known_text, host, addr, port if port != 22 else None):
            self.revoked = True
            return False
        known = asyncssh.import_known_hosts(self.known_text) if self.known_text.strip() else None
        if known is not None:
            trusted, ca, revoked, *_ = known.match(host, addr, port if port != 22 else None)
            if trusted or ca or revoked:
                self.changed = True
                return False
        if self.write_to is None:
            return False
        name = host if port == 22 else f"[{host}]:{port}"
        self.write_to.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.write_to, "a") as f:
            f.write(f"{name} {line}\n")
        return True


# With AES in hardware (AES-NI, ARMv8 crypto), AES-GCM moves data about twice as fast as
# asyncssh's default ChaCha20-Poly1305 (docs/benchmarks.md); a 'Ciphers' line in
# ~/.ssh/config for the host still wins.
FAST_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"]


@functools.cache
def _head_has_aes() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return "aes" in val.split()
    except OSError:
        pass
    return False


@functools.lru_cache(maxsize=16)
def _known_hosts(text: str) -> asyncssh.SSHKnownHosts:
    """The parsed known_hosts, one for every connection that reads the same text. A head
    connecting to 100 hosts listed in one file parsed its 100 keys for each connection, and
    each connection kept its copy: 3 ms and 0.1 MiB a host, 0.3 s and 10 MiB for the 100
    (measured). asyncssh only reads it (matches hosts against it)."""
    return asyncssh.import_known_hosts(text)


def _ssh_config_paths() -> list[str]:
    p = Path("~/.ssh/config").expanduser()
    return [str(p)] if p.is_file() else []


class SSHConnection(HostConnection):
    def __init__(self, host: Host, *, accept_new_hostkeys: bool = False) -> None:
        super().__init__(host)
        self.accept_new = accept_new_hostkeys
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(MAX_CHANNELS)
        self._shells: list[_Shell] = []
        self._opening = 0  # shells being opened
        self._find_printf: bool | None = None  # does the host's find have -printf?

    # -- connecting -------------------------------------------------------------------------
    def _known_hosts_files(self, config_known: Any) -> list[Path]:
        if self.host.known_hosts:
            return [Path(self.host.known_hosts).expanduser()]
        if isinstance(config_known, list | tuple) and config_known:
            return [Path(p).expanduser() for p in config_known]
        return [Path("~/.ssh/known_hosts").expanduser()]

    async def connect(self, learn_home: bool = True) -> None:
        h = self.host
        target = h.address or h.name
        kw: dict[str, Any] = {
            # never hand the user's agent to a workstation, whatever ~/.ssh/config says
            "agent_forwarding": False,
            "connect_timeout": h.connect_timeout,
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        }
        if h.port:
            kw["port"] = h.port
        if h.user:
            kw["username"] = h.user
        if h.identity_file:
            kw["client_keys"] = [os.path.expanduser(h.identity_file)]
        try:
            probe = asyncssh.SSHClientConnectionOptions(
                config=_ssh_config_paths(), host=target, port=h.port or (),
                username=h.user or ())
        except (OSError, asyncssh.Error, ValueError) as e:
            raise HostUnreachable(h.name, f"cannot read ~/.ssh/config for this host: {e}") from None
        if probe.known_hosts is None:
            raise HostKeyRejected(
                h.name, "~/.ssh/config sets 'UserKnownHostsFile none', which would turn host-key "
                        "checking off; dssh always verifies host keys: set known_hosts for this "
                        "host in the inventory, or remove that line")
        if probe.config.get("Ciphers") is None and _head_has_aes():
            kw["encryption_algs"] = FAST_CIPHERS
        files = self._known_hosts_files(probe.known_hosts)
        text = ""
        for f in files:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                text += f.read_text() + "\n"
        policy = _HostKeyPolicy(text, files[0] if self.accept_new else None)
        known = _known_hosts(text)
        try:
            self._conn = await asyncssh.connect(
                target, known_hosts=known, client_factory=lambda: policy, **kw)
        except asyncssh.HostKeyNotVerifiable as e:
            # asyncssh refuses a key listed '@revoked' before asking the policy
            policy.revoked = policy.revoked or "revoked" in str(e).lower()
            raise self._host_key_error(policy, files[0], target) from None
        except asyncssh.PermissionDenied as e:
            user = h.user or "(default user)"
            raise AuthenticationFailed(
                h.name, f"login as {user} was refused ({e.reason}): check 'user' and "
                        "'identity_file' in the inventory, or that your key is in the host's "
                        "~/.ssh/authorized_keys (ssh-copy-id)") from None
        except FileNotFoundError as e:
            raise HostUnreachable(h.name, f"a key or known_hosts file named in ~/.ssh/config or "
                                          f"the inventory does not exist: {e.filename}") from None
        except (OSError, asyncssh.Error, TimeoutError) as e:
            raise HostUnreachable(h.name, f"cannot connect to {target}"
                                          f"{':' + str(h.port) if h.port else ''}: "
                                          f"{_reason(e)}") from None
        loop = asyncio.get_running_loop()
        for ms in NUDGE_MS:
            loop.call_later(ms / 1000, self._nudge)
        if learn_home:
            res = await self.run('printf "%s" "$HOME"', timeout=30)
            self.home = res.text.strip() or "/"

    def _nudge(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                self._conn.send_debug("")

    def _host_key_error(self, policy: _HostKeyPolicy, kh: Path, target: str) -> HostKeyRejected:
        host, port, _line = policy.offered or (target, self.host.port or 22, "")
        port_opt = f"-p {port} " if port and port != 22 else ""
        if policy.revoked:
            return HostKeyRejected(
                self.name, f"the host key of {host} is REVOKED in {kh} (a '@revoked' line): "
                           "dssh never connects with a revoked key. Ask the machine's owner "
                           "for its new key")
        if policy.changed:
            return HostKeyRejected(
                self.name, f"the host key of {host} has CHANGED since it was recorded in {kh}. "
                           "This can mean someone is intercepting the connection, or the machine "
                           "was reinstalled. If you know why, remove the old line with "
                           f"'ssh-keygen -R {_kh_name(host, port)} -f {kh}' and connect again")
        return HostKeyRejected(
            self.name, f"unknown host key for {host} (not in {kh}). Check the key with the "
                       f"machine's owner, then add it: 'ssh-keyscan {port_opt}{host} >> {kh}', "
                       "or run with --accept-new-hostkeys to trust it on first use")

    # -- commands ---------------------------------------------------------------------------
    async def _shell(self) -> _Shell | None:
        """An idle long-lived shell, started on first need; None when all are busy."""
        for sh in self._shells:
            if not sh.busy and not sh.dead:
                return sh
        self._shells = [sh for sh in self._shells if not sh.dead]
        # Shells being opened count too: a burst of commands must not open a shell each
        # and run past the server's MaxSessions.
        if len(self._shells) + self._opening >= SHELLS:
            return None
        self._opening += 1
        try:
            proc = await self._need().create_process("exec sh -s", encoding=None)
        except (asyncssh.ChannelOpenError, OSError, asyncssh.Error):
            return None
        finally:
            self._opening -= 1
        sh = _Shell(proc)
        self._shells.append(sh)
        return sh

    def _need(self) -> asyncssh.SSHClientConnection:
        if self._conn is None:
            raise HostUnreachable(self.name, "not connected")
        return self._conn

    async def run(self, script: str, *, timeout: float = 60.0) -> Completed:
        conn = self._need()
        sh = await self._shell()
        if sh is not None:
            res = await sh.run(script, timeout)
            if res is not None:
                return res
            if sh.timed_out:
                raise HostError(self.name, f"a command took longer than {timeout:.0f}s")
            if self._conn is None or self._conn.is_closed():
                raise HostUnreachable(self.name, "connection lost while a command ran")
            # The shell died (it should not): run this one on its own channel.
        async with self._channels:
            for wait in (0.2, 0.5, 1.0, None):
                try:
                    proc = await conn.create_process("exec sh -s", encoding=None)
                    break
                except asyncssh.ChannelOpenError as e:
                    # Refused (sessions of other clients count against MaxSessions too):
                    # the connection is fine, so wait a moment and try again.
                    if wait is None or conn.is_closed():
                        raise HostUnreachable(self.name,
                                              f"cannot open a channel: {_reason(e)}") from None
                    await asyncio.sleep(wait)
                except (OSError, asyncssh.Error) as e:
                    raise HostUnreachable(self.name,
                                          f"cannot open a channel: {_reason(e)}") from None
            try:
                proc.stdin.write((PRELUDE + script).encode("utf-8", "surrogateescape"))
                proc.stdin.write_eof()
                res = await proc.wait(timeout=timeout)
            except asyncssh.TimeoutError:
                proc.terminate()
                proc.close()
                raise HostError(self.name, f"a command took longer than {timeout:.0f}s") from None
            except (OSError, asyncssh.Error) as e:
                raise HostUnreachable(self.name, f"connection lost: {_reason(e)}") from None
        if res.exit_status is None:
            raise HostUnreachable(self.name, "connection lost while a command ran")
        return Completed(res.exit_status if res.exit_status >= 0 else 255,
                         res.stdout or b"", res.stderr or b"")

    async def stream(self, script: str) -> AsyncIterator[str]:
        conn = self._need()
        try:
            proc = await conn.create_process("exec sh -s", encoding="utf-8", errors="replace",
                                             stderr=asyncssh.DEVNULL)
        except (asyncssh.ChannelOpenError, OSError, asyncssh.Error) as e:
            raise HostUnreachable(self.name, f"cannot open a channel: {_reason(e)}") from None
        try:
            proc.stdin.write(PRELUDE + script)
            proc.stdin.write_eof()
            while True:
                try:
                    line = await proc.stdout.readline()
                except (OSError, asyncssh.Error) as e:
                    raise HostUnreachable(self.name, f"connection lost: {_reason(e)}") from None
                if not line:
                    break
                yield line.rstrip("\n")
        finally:
            proc.terminate()
            proc.close()

    async def read_stream(self, script: str,
                          sink: Callable[[bytes], Awaitable[None]]) -> Completed:
        conn = self._need()
        async with self._channels:
            try:
                proc = await conn.create_process("exec sh -s", encoding=None)
            except (asyncssh.ChannelOpenError, OSError, asyncssh.Error) as e:
                raise HostUnreachable(self.name, f"cannot open a channel: {_reason(e)}") from None
            err = bytearray()

            async def drain_stderr() -> None:
                while b := await proc.stderr.read(65536):
                    if len(err) < 65536:
                        err.extend(b)

            errs = asyncio.ensure_future(drain_stderr())
            try:
                proc.stdin.write((PRELUDE + script).encode("utf-8", "surrogateescape"))
                proc.stdin.write_eof()
                while b := await proc.stdout.read(STREAM_CHUNK):
                    await sink(b)
                res = await proc.wait()
                await errs
            except (OSError, asyncssh.Error) as e:
                raise HostUnreachable(self.name, f"connection lost: {_reason(e)}") from None
            finally:
                errs.cancel()
                if proc.exit_status is None:
                    proc.terminate()  # the sink gave up: stop the sender
                proc.close()
        if res.exit_status is None:
            raise HostUnreachable(self.name, "connection lost during a transfer")
        return Completed(res.exit_status if res.exit_status >= 0 else 255, b"", bytes(err))

    # -- files ------------------------------------------------------------------------------
    async def _sftp_client(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    self._sftp = await self._need().start_sftp_client(
                        path_errors="surrogateescape")
                except (OSError, asyncssh.Error) as e:
                    raise HostUnreachable(self.name, f"cannot start SFTP: {_reason(e)}") from None
            return self._sftp

    async def put(self, local: str, remote: str) -> None:
        sftp = await self._sftp_client()
        try:
            await sftp.put(local, remote, recurse=os.path.isdir(local), preserve=True)
        except (OSError, asyncssh.Error) as e:
            raise _file_error(self.name, f"uploading {local} to {remote}", e) from None

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        sftp = await self._sftp_client()
        tmp = f"{remote}.tmp{os.getpid()}"
        try:
            async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=mode)) as f:
                await f.write(data)
            await sftp.posix_rename(tmp, remote)
        except (OSError, asyncssh.Error) as e:
            raise _file_error(self.name, f"writing {remote}", e) from None

    async def read_file(self, remote: str, limit: int | None = None) -> bytes:
        sftp = await self._sftp_client()
        try:
            async with sftp.open(remote, "rb") as f:
                return await f.read(-1 if limit is None else limit)
        except asyncssh.SFTPNoSuchFile:
            raise FileNotFoundError(remote) from None
        except (OSError, asyncssh.Error) as e:
            raise _file_error(self.name, f"reading {remote}", e) from None

    async def walk(self, remote: str) -> list[RemoteEntry]:
        if self._find_printf is not False:
            # GNU find lists any tree in one round trip (SFTP: one per directory).
            res = await self.run(f"d={shlex.quote(remote)}\n"
                                 # a symlinked root (a job's outputs/ -> /x) is never followed
                                 '[ -d "$d" ] && [ ! -L "$d" ] || exit 0\n'
                                 "exec find \"$d\" -mindepth 1 -printf '%y %s %P\\0'\n",
                                 timeout=300)
            if res.exit_status == 0:
                self._find_printf = True
                return _parse_find(res.stdout)
            self._find_printf = False  # busybox find, say: SFTP then
        sftp = await self._sftp_client()
        out: list[RemoteEntry] = []
        try:
            if (await sftp.lstat(remote)).type == asyncssh.FILEXFER_TYPE_SYMLINK:
                return out  # a symlinked root is never followed
        except asyncssh.SFTPNoSuchFile:
            return out
        except (OSError, asyncssh.Error) as e:
            raise _file_error(self.name, f"listing {remote}", e) from None
        stack = [""]
        while stack:
            rel = stack.pop()
            path = f"{remote}/{rel}" if rel else remote
            try:
                names = await sftp.readdir(path)
            except asyncssh.SFTPNoSuchFile:
                continue
            except (OSError, asyncssh.Error) as e:
                raise _file_error(self.name, f"listing {path}", e) from None
            for n in sorted(names, key=lambda n: n.filename):
                name = n.filename if isinstance(n.filename, str) else n.filename.decode()
                if name in (".", ".."):
                    continue
                r = f"{rel}/{name}" if rel else name
                t = n.attrs.type
                if t == asyncssh.FILEXFER_TYPE_SYMLINK:
                    out.append(RemoteEntry(r, 0, "link"))
                elif t == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    out.append(RemoteEntry(r, 0, "dir"))
                    stack.append(r)
                elif t == asyncssh.FILEXFER_TYPE_REGULAR:
                    out.append(RemoteEntry(r, n.attrs.size or 0, "file"))
                else:
                    out.append(RemoteEntry(r, 0, "other"))
        return out

    async def get(self, remote: str, local: str, size: int) -> None:
        sftp = await self._sftp_client()
        try:
            await sftp.get(remote, local, sparse=False, follow_symlinks=False)
        except OSError as e:
            if e.errno in LOCAL_DISK_ERRNOS:
                raise  # writing on the head failed, not the host: the caller tells them apart
            raise _file_error(self.name, f"downloading {remote}", e) from None
        except asyncssh.Error as e:
            raise _file_error(self.name, f"downloading {remote}", e) from None
        got = os.path.getsize(local)
        if got != size:
            raise HostError(self.name, f"{remote}: received {got} bytes, expected {size}")

    async def close(self) -> None:
        for sh in self._shells:
            sh.close()
        self._shells = []
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._conn.wait_closed()
            self._conn = None


class _Shell:
    """A long-lived ``sh`` on the host that runs short scripts one after another.

    Opening a channel and starting the login shell costs a round trip and several
    processes on the host for every command; the head's busiest path (start a job, look
    at a job) reuses one of these instead. Each script runs in a subshell with stdin from
    /dev/null, so ``exit`` and ``cd`` stay inside it; a unique marker after it carries
    the exit status and ends its output on both streams.
    """

    def __init__(self, proc: asyncssh.SSHClientProcess) -> None:
        self.proc = proc
        self.busy = False
        self.dead = False
        self.timed_out = False
        # One marker for the shell's life: compiled once, not for every command.
        self.tok = tok = secrets.token_hex(16)
        self.out_end = re.compile(rb"\n@@dssh:" + tok.encode() + rb":(\d+)@@\n")
        self.err_end = f"\n@@dssh:{tok}@@\n".encode()

    async def run(self, script: str, timeout: float) -> Completed | None:
        """The script's result; None if the shell died or timed out (it is then closed)."""
        self.busy = True
        tok, out_end, err_end = self.tok, self.out_end, self.err_end
        try:
            self.proc.stdin.write(
                f"(\n{PRELUDE}{script}\n) </dev/null\n"
                f"printf '\\n@@dssh:%s:%d@@\\n' {tok} $?\n"
                f"printf '\\n@@dssh:%s@@\\n' {tok} >&2\n".encode("utf-8", "surrogateescape"))
            # (asyncio.timeout: wait_for could swallow a cancel that came with the answer)
            async with asyncio.timeout(timeout):
                out, err = await asyncio.gather(self.proc.stdout.readuntil(out_end, 64),
                                                self.proc.stderr.readuntil(err_end))
        except TimeoutError:
            self.timed_out = True
            self.close()
            return None
        except (OSError, asyncssh.Error, asyncio.IncompleteReadError):
            self.close()
            return None
        finally:
            self.busy = False
        m = out_end.search(out)
        if m is None:
            self.close()
            return None
        return Completed(int(m.group(1)), out[:m.start()], err[:-len(err_end)])

    def close(self) -> None:
        self.dead = True
        with contextlib.suppress(Exception):
            self.proc.stdin.write_eof()
        self.proc.close()


_KINDS = {b"f": "file", b"d": "dir", b"l": "link"}


def _parse_find(out: bytes) -> list[RemoteEntry]:
    """``find -printf '%y %s %P\\0'`` output as entries (names keep their raw bytes)."""
    entries = []
    for rec in out.split(b"\0"):
        kind, _, rest = rec.partition(b" ")
        size, _, name = rest.partition(b" ")
        if not name:
            continue
        k = _KINDS.get(kind, "other")
        entries.append(RemoteEntry(os.fsdecode(name), int(size) if k == "file" else 0, k))
    entries.sort(key=lambda e: e.path)
    return entries


def _kh_name(host: str, port: int | None) -> str:
    return host if not port or port == 22 else shlex.quote(f"[{host}]:{port}")


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncssh.DisconnectError | asyncssh.ChannelOpenError):
        return e.reason or type(e).__name__
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _file_error(host: str, what: str, e: BaseException) -> HostError:
    if isinstance(e, asyncssh.SFTPConnectionLost | ConnectionError | asyncssh.DisconnectError):
        return HostUnreachable(host, f"connection lost while {what}")
    return HostError(host, f"{what}: {_reason(e)}")

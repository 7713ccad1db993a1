"""asyncssh stand-in for sshd, used by workstations.py when /usr/sbin/sshd is missing.

One ``FallbackServer`` per workstation, each running an ``asyncssh`` server in a background
thread with its own event loop, so synchronous code (fixtures, benchmarks) can start and stop it.

Behaviour (see /work/shared/notes/libraries.md §4 for the verified recipe):
- public-key login for the workstation's user only (its authorized_keys file); any other user
  is refused;
- exec requests run as ``/bin/sh -c CMD`` in ``home``, as the test process's OS user whatever the
  SSH user name, with a clean sshd-like environment (HOME=home, USER, LOGNAME, SHELL, PATH);
  each command in its own session/process group, like sshd; ``terminate()`` etc. signal it;
- SFTP sees the real filesystem (no chroot, like OpenSSH's internal-sftp); relative paths are
  relative to ``home``, so ``realpath('.')`` is the home.

Differences from real sshd: no MaxSessions/MaxStartups limits, /bin/sh (dash) instead of the
login shell, env requests are ignored, channel close returns at once, ``pid`` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import signal
import threading
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import asyncssh

__all__ = ["FallbackServer"]

_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"  # what Debian's sshd gives a non-root user


class _SFTPServer(asyncssh.SFTPServer):
    """Real filesystem, relative paths resolved against the workstation's home."""

    def __init__(self, chan: asyncssh.SSHServerChannel, home: bytes) -> None:
        super().__init__(chan)
        self._home = home

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else posixpath.join(self._home, path)


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: FallbackServer) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._conns.add(conn)
        peer = conn.get_extra_info("peername")
        self._owner.log(f"Connection from {peer[0]} port {peer[1]}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._conns.discard(self._conn)
        self._owner.log(f"Connection closed ({exc!r})")

    def begin_auth(self, username: str) -> bool:
        assert self._conn is not None
        if username == self._owner.user:
            keys = Path(self._owner.authorized_keys_file).read_text()
            self._conn.set_authorized_keys(asyncssh.import_authorized_keys(keys))
        else:
            self._owner.log(f"Invalid user {username}")
        return True  # auth always required; an unknown user has no keys -> denied

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False


class FallbackServer:
    """An asyncssh SSH server on ``127.0.0.1:port`` in its own thread and event loop."""

    def __init__(self, *, port: int, host_key_file: Path, authorized_keys_file: Path, user: str,
                 home: Path, log_file: Path | None = None) -> None:
        self.port = port
        self.host_key_file = Path(host_key_file)
        self.authorized_keys_file = Path(authorized_keys_file)
        self.user = user
        self.home = Path(home)
        self.log_file = log_file
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncssh.SSHAcceptor | None = None
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._log_lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    def log(self, msg: str) -> None:
        if self.log_file is None:
            return
        with self._log_lock, open(self.log_file, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} fallback-sshd[{self.port}]: {msg}\n")

    # -- lifecycle (called from the owner's thread)
    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise RuntimeError(f"fallback server on port {self.port} already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), daemon=True,
                                  name=f"fallback-sshd-{self.port}")
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._start_server(), loop).result(timeout)
        except BaseException:
            self._stop_loop()
            raise
        self.log(f"Server listening on 127.0.0.1 port {self.port}.")

    def stop(self, abort_connections: bool = True) -> None:
        """Close the listener and every connection (the loop and thread end with them).

        ``abort_connections`` is accepted for symmetry with sshd; connections always drop
        because they live on this server's event loop.
        """
        del abort_connections
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._stop_loop()
        self.log("Server stopped.")

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._server = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    # -- coroutines (run on the server's loop)
    async def _start_server(self) -> None:
        home = os.fsencode(self.home)
        self._server = await asyncssh.create_server(
            lambda: _Server(self), "127.0.0.1", self.port,
            server_host_keys=[asyncssh.read_private_key(self.host_key_file)],
            process_factory=self._handle, encoding=None,
            sftp_factory=lambda chan: _SFTPServer(chan, home),
            reuse_address=True)

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    def _env(self, process: asyncssh.SSHServerProcess) -> dict[str, str]:
        peer = process.get_extra_info("peername") or ("127.0.0.1", 0)
        sock = process.get_extra_info("sockname") or ("127.0.0.1", self.port)
        return {
            "HOME": str(self.home),
            "USER": self.user,
            "LOGNAME": self.user,
            "SHELL": "/bin/sh",
            "PATH": _PATH,
            "SSH_CONNECTION": f"{peer[0]} {peer[1]} {sock[0]} {sock[1]}",
            "SSH_CLIENT": f"{peer[0]} {peer[1]} {sock[1]}",
        }

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        if process.command is None:  # interactive shell: not supported
            process.stderr.write(b"fallback sshd: a command is required\n")
            process.exit(1)
            return
        self.log(f"exec: {process.command}")
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", process.command, cwd=self.home, env=self._env(process),
            start_new_session=True,  # like sshd: own session and process group
            stdin=PIPE, stdout=PIPE, stderr=PIPE)

        async def pump_out(src: asyncio.StreamReader, dst: Any) -> None:
            while data := await src.read(65536):
                try:
                    dst.write(data)
                except BrokenPipeError:
                    return

        async def pump_in() -> None:
            assert proc.stdin is not None
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.SignalReceived as e:  # client terminate() / send_signal()
                    with contextlib.suppress(ProcessLookupError, AttributeError):
                        os.killpg(proc.pid, getattr(signal, "SIG" + e.signal))
                    continue
                except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                    continue
                except (asyncssh.DisconnectError, ConnectionError):
                    data = b""
                if not data:
                    with contextlib.suppress(Exception):
                        proc.stdin.close()
                    return
                try:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    return

        feeder = asyncio.ensure_future(pump_in())
        try:
            # all output must be forwarded BEFORE exit() (else it can be lost; see §4 pitfall)
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(pump_out(proc.stdout, process.stdout),
                                 pump_out(proc.stderr, process.stderr))
            rc = await proc.wait()
        finally:
            feeder.cancel()
        if rc < 0:
            process.exit_with_signal(signal.Signals(-rc).name[3:])
        else:
            process.exit(rc)

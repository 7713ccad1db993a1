"""This machine as a host, without SSH: the embedded default inventory uses it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from ..errors import HostError
from .base import PRELUDE, Completed, HostConnection, RemoteEntry


class LocalConnection(HostConnection):
    async def connect(self, learn_home: bool = True) -> None:
        self.home = os.path.expanduser("~")  # (known without asking: learned either way)
        if not os.path.isdir(self.home):
            raise HostError(self.name, f"the home directory {self.home} does not exist: set "
                                       "HOME, or give this host a 'workdir'")

    async def run(self, script: str, *, timeout: float = 60.0) -> Completed:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-s", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.home)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(
                    (PRELUDE + script).encode("utf-8", "surrogateescape"))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise HostError(self.name, f"a command took longer than {timeout:.0f}s") from None
        return Completed(proc.returncode or 0, out, err)

    async def stream(self, script: str) -> AsyncIterator[str]:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-s", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=self.home)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((PRELUDE + script).encode("utf-8", "surrogateescape"))
        await proc.stdin.drain()
        proc.stdin.close()
        try:
            while line := await proc.stdout.readline():
                yield line.decode("utf-8", "replace").rstrip("\n")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def read_stream(self, script: str,
                          sink: Callable[[bytes], Awaitable[None]]) -> Completed:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-s", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=self.home)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write((PRELUDE + script).encode("utf-8", "surrogateescape"))
        proc.stdin.close()
        stderr = proc.stderr

        async def drain_stderr() -> bytes:
            err = b""
            while b := await stderr.read(65536):
                err = (err + b)[:65536]
            return err

        errs = asyncio.ensure_future(drain_stderr())
        try:
            while b := await proc.stdout.read(1 << 20):
                await sink(b)
            await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return Completed(proc.returncode or 0, b"", await errs)

    async def put(self, local: str, remote: str) -> None:
        def copy() -> None:
            if os.path.isdir(local):
                shutil.copytree(local, remote, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copyfile(local, remote)
                shutil.copymode(local, remote)

        await asyncio.to_thread(copy)

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        def write() -> None:
            tmp = f"{remote}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, remote)

        await asyncio.to_thread(write)

    async def read_file(self, remote: str, limit: int | None = None) -> bytes:
        def read() -> bytes:
            with open(remote, "rb") as f:
                return f.read() if limit is None else f.read(limit)

        return await asyncio.to_thread(read)

    async def walk(self, remote: str) -> list[RemoteEntry]:
        def scan() -> list[RemoteEntry]:
            out: list[RemoteEntry] = []
            if os.path.islink(remote):  # a symlinked root is never followed
                return out
            stack = [""]
            while stack:
                rel = stack.pop()
                try:
                    entries = list(os.scandir(os.path.join(remote, rel) if rel else remote))
                except FileNotFoundError:
                    continue
                for e in sorted(entries, key=lambda e: e.name):
                    r = f"{rel}/{e.name}" if rel else e.name
                    st = e.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        out.append(RemoteEntry(r, 0, "link"))
                    elif stat.S_ISDIR(st.st_mode):
                        out.append(RemoteEntry(r, 0, "dir"))
                        stack.append(r)
                    elif stat.S_ISREG(st.st_mode):
                        out.append(RemoteEntry(r, st.st_size, "file"))
                    else:
                        out.append(RemoteEntry(r, 0, "other"))
            return out

        return await asyncio.to_thread(scan)

    async def get(self, remote: str, local: str, size: int) -> None:
        def copy() -> None:
            try:
                fd = os.open(remote, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError as e:
                raise HostError(self.name, f"reading {remote}: {e.strerror or e}") from None
            with os.fdopen(fd, "rb") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = Path(local).stat().st_size
            if got != size:
                raise HostError(self.name, f"{remote}: copied {got} bytes, expected {size}")

        await asyncio.to_thread(copy)

    async def close(self) -> None:
        return None

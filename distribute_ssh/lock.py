"""One head per sweep: an OS file lock next to the state file.

The kernel drops the lock when its holder dies, so a killed head never blocks the next.
The file holds who has it (pid, machine, start time) for the message the second head
prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import SweepLocked


class SweepLock:
    def __init__(self, state_path: Path, namespace: str, name: str) -> None:
        self.path = state_path.parent / "locks" / f"{namespace}.{name}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                info = {}
            os.close(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
            raise SweepLocked(
                f"another head is driving this sweep: pid {info.get('pid', '?')} on "
                f"{info.get('machine', '?')}, started {since}. Wait for it, follow it with "
                "'dssh status', or stop it (Ctrl-C / kill) and run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "machine": socket.gethostname(),
                                  "started": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

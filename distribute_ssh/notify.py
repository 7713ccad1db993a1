"""Notifications: a command the user names, run on the head when a sweep ends or a job
fails, with what happened as JSON on stdin and in ``DSSH_NOTIFY_*`` variables.

A notifier that fails, hangs or is missing is reported and never changes how the run
ends. Recipes (mail, a Matrix room, a webhook): docs/notify.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

from .model.sweep import Notify

TIMEOUT = 60.0
TAIL_LINES = 20


def command_for(notify: Notify | None) -> str | None:
    """The command to run, if any: the sweep's, else (for the original tool's
    ``meta.matrix``) the one in ``$DSSH_NOTIFY_MATRIX``."""
    if notify is None:
        return None
    if notify.command:
        return notify.command
    if notify.matrix:
        return os.environ.get("DSSH_NOTIFY_MATRIX") or None
    return None


def wants(notify: Notify | None, event: str, first: bool) -> bool:
    if command_for(notify) is None or notify is None:
        return False
    if event == "end":
        return "end" in notify.when
    return "failure" in notify.when or ("first-failure" in notify.when and first)


def tail(path: os.PathLike[str] | str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def environment(payload: dict[str, Any], notify: Notify) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("event", "sweep", "status", "summary", "results", "exit_code", "job", "host",
                "jobs"):
        if payload.get(key) is not None:
            env[f"DSSH_NOTIFY_{key.upper()}"] = str(payload[key])
    if notify.matrix:
        env["DSSH_MATRIX_USER"] = notify.matrix
    return env


async def send(notify: Notify, payload: dict[str, Any],
               report: Callable[[str, str], None]) -> bool:
    """Run the notifier; ``report(kind, message)`` hears how it went. True if it worked."""
    from .redact import redact_data

    payload = redact_data(payload)  # it leaves this machine: a job's stderr tail included
    command = command_for(notify)
    if command is None:
        return False
    try:
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=environment(payload, notify), start_new_session=True)
    except OSError as e:
        report("warning", f"notify ({payload['event']}): cannot run the command: {e}")
        return False
    try:
        async with asyncio.timeout(TIMEOUT):
            _, err = await proc.communicate(json.dumps(payload, indent=2).encode() + b"\n")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        report("warning", f"notify ({payload['event']}): the command took longer than "
                          f"{TIMEOUT:.0f} s and was stopped")
        return False
    except (BrokenPipeError, ConnectionResetError):  # it did not read its stdin: fine
        err = await proc.stderr.read() if proc.stderr else b""
        await proc.wait()
    if proc.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        report("warning", f"notify ({payload['event']}): the command failed (exit "
                          f"{proc.returncode}){': ' + last[0] if last[0] else ''}")
        return False
    report("notify", f"notify ({payload['event']}): sent")
    return True

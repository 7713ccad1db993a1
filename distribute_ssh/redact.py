"""Secrets stay out of what dssh writes and says (issue "hostile input", item 5).

The values of environment variables whose names say they are secrets (``API_TOKEN``,
``DB_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``...), from a sweep's ``env`` and the
inventory's, are registered when the files are read; every message, log line, state
event, ``job.json`` and notification dssh writes shows them as ``***``. They still reach
the jobs, which need them (in ``command.sh`` on the host, 0600). What a job itself prints
to its stdout or stderr is its own: dssh keeps those files as they are.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|PASS$|^PASS|_PASS_|"
                         r"API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH", re.IGNORECASE)
MASK = "***"
_values: set[str] = set()


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def register_env(env: dict[str, Any] | None) -> None:
    """Remember the values of the secret-named variables of ``env`` (short values, which
    would mask ordinary words, are left: a secret of under 4 characters is no secret)."""
    for k, v in (env or {}).items():
        if isinstance(v, str) and len(v) >= 4 and is_secret_name(str(k)):
            _values.add(v)


def redact(text: str) -> str:
    if not _values or not text:
        return text
    for v in sorted(_values, key=len, reverse=True):
        if v in text:
            text = text.replace(v, MASK)
    return text


def redact_data(data: Any) -> Any:
    """``redact`` through the strings of JSON-like data."""
    if not _values:
        return data
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_data(v) for v in data]
    return data

"""The exceptions dssh raises: one root, a few families, each saying when it happens.

Transport libraries (asyncssh, OSError) never leak past ``hosts/``; the engine
and the CLI only see these. The CLI turns each into one clear message and an
exit code.
"""

from __future__ import annotations


class DsshError(Exception):
    """Root of every error dssh reports to its user."""

    exit_code = 1


class ConfigError(DsshError):
    """A sweep file, inventory or command line is wrong; nothing was started."""

    exit_code = 2

    def __init__(self, messages: list[str] | str, *, path: str | None = None,
                 line: int | None = None, key: str | None = None) -> None:
        if isinstance(messages, str):
            messages = [messages]
        self.messages = list(messages)
        self.path = path
        self.line = line
        self.key = key
        super().__init__("\n".join(self.messages))


class SweepLocked(DsshError):
    """Another head is driving this sweep."""

    exit_code = 3


class NoCapableHost(DsshError):
    """No reachable host can run the sweep's jobs."""

    exit_code = 4


class HostError(DsshError):
    """Something went wrong talking to one host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class HostUnreachable(HostError):
    """The host could not be connected to, or the connection was lost."""


class HostKeyRejected(HostError):
    """The host's key is unknown or changed; the connection was refused."""


class AuthenticationFailed(HostError):
    """The host refused every key and agent identity offered."""


class RemoteCommandFailed(HostError):
    """A command dssh runs for itself on a host failed unexpectedly."""


class ResultsDirError(DsshError):
    """The results dir on the head cannot take a job's files (disk full, read-only, no
    permission): the job stays uncollected, its files safe on its host."""


class BuildFailed(DsshError):
    """Every capable host failed to build the sweep's solver."""

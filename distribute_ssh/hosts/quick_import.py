"""Import asyncssh without the cost of two looks that find nothing on most machines.

When it is imported, asyncssh looks for liboqs (for the sntrup761 key exchange) with
``ctypes.util.find_library``, twice ("oqs", "liboqs"). On Linux each look that finds
nothing runs ``ldconfig -p``, then ``gcc`` and ``ld`` where they are installed: about
30 ms and several processes at the start of every command that connects to a host,
paid on a machine that mostly has no liboqs at all.

Here the dynamic loader's cache (``/etc/ld.so.cache``) and ``LD_LIBRARY_PATH`` are looked
at first, in memory: if neither mentions liboqs, the answer is None at once, as the slow
search would have said; otherwise, and wherever there is no such cache, the real search
runs as before, so a machine with liboqs keeps sntrup761.

asyncssh's X.509 support needs pyOpenSSL (an optional extra of asyncssh, not a dependency
of dssh). Without it, asyncssh still imports ``cryptography.x509`` (about 10 ms here) only
to find pyOpenSSL missing and go on without X.509. Where pyOpenSSL is not installed, that
import is skipped: asyncssh ends up exactly as it would have (no ``x509v3-*`` algorithms,
which only PKIX-SSH servers speak; OpenSSH has no X.509). Where it is installed, asyncssh
imports its X.509 layer as before.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from importlib.util import find_spec
from pathlib import Path

_CACHE = Path("/etc/ld.so.cache")
_NAMES = ("oqs", "liboqs")


def _might_have_oqs() -> bool:
    try:
        if b"liboqs" in _CACHE.read_bytes():
            return True
    except OSError:
        return True  # no cache to tell: let the real search decide
    for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        try:
            if d and any(n.startswith("liboqs") for n in os.listdir(d)):
                return True
        except OSError:
            continue
    return False


def _find_library(name: str) -> str | None:
    if name in _NAMES and _ABSENT:
        return None
    return _real(name)


_real = ctypes.util.find_library
_ABSENT = not _might_have_oqs()
_X509 = "asyncssh.crypto.x509"
_SKIP_X509 = _X509 not in sys.modules and find_spec("OpenSSL") is None
ctypes.util.find_library = _find_library
if _SKIP_X509:
    sys.modules[_X509] = None  # its import fails at once, as it would at "from OpenSSL ..."
try:
    import asyncssh  # noqa: E402  (the point: imported while the look is cheap)
finally:
    ctypes.util.find_library = _real
    if _SKIP_X509:
        del sys.modules[_X509]  # (whoever asks for it later gets it)

__all__ = ["asyncssh"]

"""Moving files from a host to the head: fast, verified, and never unsafe.

Downloads go as one ``tar`` stream over an exec channel when the host has GNU tar: one
round trip for any number of files, and on loopback with AES-GCM about twice the rate of
SFTP for big files too (docs/benchmarks.md). Without GNU tar, SFTP with several files in
flight. Either way:

- only the files the caller listed (regular files, found without following symlinks) are
  written, each under its own relative path inside ``staging``; a member of any other kind
  or name in the stream is dropped;
- every file is created new (``O_EXCL|O_NOFOLLOW``) in a staging dir the caller owns and
  later renames into place, so a transfer cut short leaves nothing under a final name;
- sizes are checked against the listing; ``verify`` adds SHA-256 of both ends.

Names are ``str`` with undecodable bytes kept as surrogates (``os.fsdecode``), so a name with
non-UTF-8 bytes, a newline or a backslash arrives as the same bytes.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import re
import shlex
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import HostError
from .hosts.base import LOCAL_DISK_ERRNOS, HostConnection, RemoteEntry

CHUNK = 1 << 20
SFTP_IN_FLIGHT = 8  # files fetched at once when SFTP is the way
# Between the archive's errors and what a fetch's ``then`` printed (see fetch_small).
_THEN = "DSSH-THEN"
_GNU_TAR = ("tar -c -f - --format=gnu --null --no-unquote --verbatim-files-from "
            "--hard-dereference --no-recursion -T -")


class Meter:
    """Bytes moved, and the recent rate, for the live progress (any thread may add)."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n

    def rate(self, window: float = 3.0) -> float:
        """Bytes per second over about the last ``window`` seconds (0 when idle)."""
        now = time.monotonic()
        with self._lock:
            total = self.total
            self._samples.append((now, total))
            while len(self._samples) > 1 and now - self._samples[0][0] > window:
                self._samples.popleft()
            t0, b0 = self._samples[0]
        return (total - b0) / (now - t0) if now - t0 > 0.2 else 0.0


# Bytes that cannot stand for themselves in a single-quoted printf '%b' argument: controls,
# non-ASCII, the quote and the backslash. A regex over the whole list, not a loop over
# every byte: 5,000 names are listed in about a millisecond.
_NOT_PLAIN = re.compile(rb"[^\x20-\x26\x28-\x5b\x5d-\x7e]")


def shell_bytes(data: bytes) -> str:
    """``data`` as a single-quoted argument for ``printf '%b'``: any bytes, ASCII only."""
    return "'" + _NOT_PLAIN.sub(lambda m: b"\\0%03o" % m.group()[0], data).decode() + "'"


def name_list(paths: Iterable[str]) -> str:
    """A shell pipeline stage printing ``paths`` NUL-separated, exactly as their bytes."""
    return "printf '%b' " + shell_bytes(b"".join(os.fsencode(p) + b"\0" for p in paths))


def safe_rel(rel: str) -> bool:
    """A plain relative path: no leading '/', no empty, '.' or '..' component, no NUL."""
    return bool(rel) and "\0" not in rel and all(
        part not in ("", ".", "..") for part in rel.split("/"))


def _dest(staging: Path, rel: str) -> Path:
    return staging.joinpath(*rel.split("/"))


class Fetched:
    """What one transfer delivered: names -> SHA-256 (when asked), and problems."""

    def __init__(self) -> None:
        self.digests: dict[str, str] = {}
        self.got: set[str] = set()
        self.notes: list[str] = []
        self.then = ""  # what fetch_small's ``then`` printed


def _unstorable(done: Fetched, path: str, err: OSError) -> None:
    """A file the head could not create under its name: a note, and it stays on the host.
    The head's disk itself failing (full, read-only, ...) is raised instead."""
    if err.errno in LOCAL_DISK_ERRNOS:
        raise err
    done.notes.append(f"{path}: cannot be stored on the head under this name "
                      f"({err.strerror}); left on the host")


async def fetch(conn: HostConnection, root: str, files: list[RemoteEntry], staging: Path, *,
                tar: bool, verify: bool = False, meter: Meter | None = None) -> Fetched:
    """Download ``files`` (listed below ``root`` on the host) into ``staging``.

    Raises HostUnreachable/HostError when the host or the connection fails, and OSError
    (an errno in LOCAL_DISK_ERRNOS) when the head's disk cannot take the files. A file the
    head's file system cannot name is skipped with a note; a file that did not arrive
    whole raises HostError.
    """
    done = Fetched()
    files = [e for e in files if e.kind == "file" and safe_rel(e.path)]
    if not files:
        return done
    staging.mkdir(parents=True, exist_ok=True)
    if tar:
        await _fetch_tar(conn, root, files, staging, done, verify, meter)
    else:
        await _fetch_sftp(conn, root, files, staging, done, verify, meter)
    missing = [e.path for e in files if e.path not in done.got
               and not any(n.startswith(f"{e.path}: ") for n in done.notes)]
    if missing:
        raise HostError(conn.name, f"{root}: {len(missing)} file(s) did not arrive, e.g. "
                                   f"{missing[0]!r}")
    if verify:
        await _verify(conn, root, [e for e in files if e.path in done.got], done)
    return done


# -- tar over an exec channel ---------------------------------------------------------------
def _parse_header(block: bytes) -> tuple[bytes, int, str]:
    """(type, size, name) of a tar header block, checksum verified.

    ``tarfile.TarInfo.frombuf`` does this and much more at about 30 us a header, which is
    most of the cost of 5,000 small files; dssh asks GNU tar for ``--format=gnu``, whose
    few fields it needs are read here (long names come as their own members)."""
    stored = block[148:156].split(b"\0", 1)[0].strip()
    try:
        ok = int(stored or b"-1", 8) == sum(block) - sum(block[148:156]) + 256
    except ValueError:
        ok = False
    if not ok:
        raise _Cut("not a tar stream from the host (bad header checksum)")
    raw = block[124:136]
    if raw[0] & 0x80:  # GNU base-256, for files of 8 GiB and more
        size = int.from_bytes(raw[1:], "big") + ((raw[0] & 0x7F) << 88)
    else:
        size = int(raw.split(b"\0", 1)[0].strip() or b"0", 8)
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0":  # POSIX ustar: a name may have a prefix
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return block[156:157] or b"\0", size, name.decode("utf-8", "surrogateescape")


class _Cut(Exception):
    """The stream from the host broke or was not what was asked for."""


_ZERO_BLOCK = bytes(512)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)  # never GNU sparse members


class _Untar:
    """Reads a GNU tar stream as it arrives and writes the listed regular files.

    Parsing happens chunk by chunk on the event loop (headers by ``tarfile.TarInfo``), so
    the bytes are touched once on their way to disk and no thread competes with the SSH
    decryption for the interpreter."""

    def __init__(self, staging: Path, expected: dict[str, RemoteEntry], done: Fetched,
                 verify: bool, meter: Meter | None,
                 dest: Callable[[str], str] | None = None) -> None:
        self.staging, self.expected, self.done = staging, expected, done
        self.dest = dest  # where a member goes below staging (default: its own name)
        self.verify, self.meter = verify, meter
        self.head = bytearray()  # a header block being gathered
        self.skip = 0  # bytes to pass over (members not wanted, padding)
        self.longname: bytearray | None = None  # a GNU long name being gathered
        self.longname_left = 0
        self.name: str | None = None  # the long name for the next header
        self.fd = -1
        self.member = ""
        self.left = 0  # bytes of the current member still to come
        self.pad = 0
        self.written = 0
        self.hash: Any = None
        self.ended = False
        self.root = str(staging)
        self.dirs: set[str] = set()

    def feed(self, data: bytes) -> None:
        mv = memoryview(data)
        pos, n = 0, len(mv)
        while pos < n and not self.ended:
            if self.left:
                take = min(self.left, n - pos)
                part = mv[pos:pos + take]
                if self.fd >= 0:
                    self._write(part)
                elif self.longname is not None:
                    self.longname += part
                pos += take
                self.left -= take
                if not self.left:
                    self._member_done()
            elif self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
            else:
                take = min(512 - len(self.head), n - pos)
                self.head += mv[pos:pos + take]
                pos += take
                if len(self.head) == 512:
                    block = bytes(self.head)
                    self.head.clear()
                    self._header(block)

    def _write(self, part: memoryview) -> None:
        if self.meter is not None:
            self.meter.add(len(part))
        while part:
            k = os.write(self.fd, part)
            if self.hash is not None:
                self.hash.update(part[:k])
            self.written += k
            part = part[k:]

    def _header(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self.ended = True
            return
        kind, size, name = _parse_header(block)
        pad = -size % 512
        name, self.name = (self.name or name), None
        if kind == tarfile.GNUTYPE_LONGNAME:
            self.longname = bytearray()
            self.left, self.pad = size, pad
            if not size:
                self._member_done()
            return
        e = self.expected.get(name)
        if kind not in _REGULAR or e is None or name in self.done.got:
            self.skip = size + pad  # not asked for (tar was given only the listed names)
            return
        if size != e.size:
            raise _Cut(f"{name!r} changed while it was copied "
                       f"({size} bytes, listed with {e.size})")
        try:
            self.fd = self._create(name)
        except OSError as err:
            _unstorable(self.done, name, err)
            self.skip = size + pad
            return
        self.member, self.left, self.pad, self.written = name, size, pad, 0
        self.hash = hashlib.sha256() if self.verify else None
        if not size:
            self._member_done()

    def _create(self, rel: str) -> int:
        """A new file at ``rel`` in the staging dir (its dirs made once each)."""
        if self.dest is not None:
            rel = self.dest(rel)
        parent, _, _ = rel.rpartition("/")
        if parent not in self.dirs:
            os.makedirs(os.path.join(self.root, parent), exist_ok=True)
            self.dirs.add(parent)
        return os.open(os.path.join(self.root, rel),
                       os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)

    def make_empty(self, rel: str) -> None:
        """An empty file at ``rel``, made here: nothing of it needs to come."""
        try:
            os.close(self._create(rel))
        except OSError as err:
            _unstorable(self.done, rel, err)
            return
        self.done.got.add(rel)

    def _member_done(self) -> None:
        self.skip = self.pad
        if self.longname is not None:
            self.name = bytes(self.longname).rstrip(b"\0").decode("utf-8", "surrogateescape")
            self.longname = None
            return
        os.close(self.fd)
        self.fd = -1
        self.done.got.add(self.member)
        if self.hash is not None:
            self.done.digests[self.member] = self.hash.hexdigest()

    def close(self) -> None:
        """The stream ended: anything unfinished means it was cut short."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            raise _Cut(f"{self.member!r}: {self.written} of "
                       f"{self.expected[self.member].size} bytes arrived")
        if not self.ended:
            raise _Cut("the stream ended before the archive did")


async def _fetch_tar(conn: HostConnection, root: str, files: list[RemoteEntry], staging: Path,
                     done: Fetched, verify: bool, meter: Meter | None) -> None:
    untar = _Untar(staging, {e.path: e for e in files}, done, verify, meter)

    async def sink(chunk: bytes) -> None:
        untar.feed(chunk)

    script = f"cd {shlex.quote(root)} || exit 3\n{name_list(e.path for e in files)} | {_GNU_TAR}\n"
    try:
        try:
            res = await conn.read_stream(script, sink)
        finally:
            if untar.fd >= 0:
                os.close(untar.fd)
                untar.fd = -1
        if res.exit_status not in (0, 1):  # GNU tar: 1 = a file changed, 2 = fatal
            err = res.stderr.decode("utf-8", "replace").strip()
            raise HostError(conn.name, f"{root}: tar failed: {err or res.exit_status}")
        untar.close()
    except _Cut as e:
        raise HostError(conn.name, f"{root}: the transfer broke off: {e}") from None


async def fetch_small(conn: HostConnection, root: str, files: list[RemoteEntry],
                      staging: Path, *, meter: Meter | None = None,
                      dest: Callable[[str], str] | None = None,
                      timeout: float = 300.0, then: str = "") -> Fetched:
    """:func:`fetch` for a few small files (GNU tar on the host): the archive comes as one
    command's output on one of the connection's long-lived shells, with no channel of its
    own, and is unpacked here, each file to ``dest(its path)`` below ``staging``. Empty
    files are made here, not sent (the listing said all there is to them). Files the head
    cannot name are skipped with a note. ``then``, a script, runs on the host once the
    archive is written, in the same round trip: what it prints is ``Fetched.then``."""
    done = Fetched()
    files = [e for e in files if e.kind == "file" and safe_rel(e.path)]
    sent = [e for e in files if e.size]
    untar = _Untar(staging, {e.path: e for e in sent}, done, False, meter, dest)
    if files:
        staging.mkdir(parents=True, exist_ok=True)

    def empties() -> None:
        for e in files:
            if not e.size:
                untar.make_empty(e.path)

    if len(sent) < len(files):
        await asyncio.to_thread(empties)
    if not sent and not then:
        return done
    script = f"cd {shlex.quote(root)} || exit 3\n"
    if sent:
        script += f"{name_list(e.path for e in sent)} | {_GNU_TAR}\n"
    if then:
        # (its output after the archive's errors, on stderr: stdout is the archive)
        script += f"s=$?\necho {_THEN} >&2\n{{\n{then}\n}} >&2\nexit $s\n"
    res = await conn.run(script, timeout=timeout)
    err_text = res.stderr.decode("utf-8", "replace")
    err_text, marked, done.then = err_text.partition(f"{_THEN}\n")
    if res.exit_status not in (0, 1) or (then and not marked):  # tar: 1 = a file changed
        raise HostError(conn.name, f"{root}: {'tar failed' if sent else 'no answer'}: "
                                   f"{err_text.strip() or res.exit_status}")
    if not sent:
        return done

    def unpack() -> None:
        try:
            untar.feed(res.stdout)
            untar.close()
        finally:
            if untar.fd >= 0:
                os.close(untar.fd)

    try:
        await asyncio.to_thread(unpack)
    except _Cut as e:
        raise HostError(conn.name, f"{root}: the transfer broke off: {e}") from None
    missing = [e.path for e in sent if e.path not in done.got
               and not any(n.startswith(f"{e.path}: ") for n in done.notes)]
    if missing:
        raise HostError(conn.name, f"{root}: {len(missing)} file(s) did not arrive, e.g. "
                                   f"{missing[0]!r}")
    return done


# -- SFTP, several files at once --------------------------------------------------------------
async def _fetch_sftp(conn: HostConnection, root: str, files: list[RemoteEntry],
                      staging: Path, done: Fetched, verify: bool, meter: Meter | None) -> None:
    gate = asyncio.Semaphore(SFTP_IN_FLIGHT)

    async def one(e: RemoteEntry) -> None:
        dest = _dest(staging, e.path)
        async with gate:
            try:
                await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
                await conn.get(f"{root}/{e.path}", str(dest), e.size)
            except OSError as err:
                _unstorable(done, e.path, err)
                return
        if meter is not None:
            meter.add(e.size)
        done.got.add(e.path)
        if verify:
            done.digests[e.path] = await asyncio.to_thread(_sha256, dest)

    await asyncio.gather(*(one(e) for e in files))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- checksums ------------------------------------------------------------------------------
async def _verify(conn: HostConnection, root: str, files: list[RemoteEntry], done: Fetched) -> None:
    """Compare SHA-256 on both ends; raises HostError on any difference."""
    if not files:
        return
    res = await conn.run(f"cd {shlex.quote(root)} || exit 3\n"
                         f"{name_list(e.path for e in files)} | xargs -0 sha256sum -z --\n",
                         timeout=600)
    theirs: dict[str, str] = {}
    for rec in res.stdout.split(b"\0"):
        if len(rec) > 66 and rec[64:66] == b"  ":
            theirs[os.fsdecode(rec[66:])] = rec[:64].decode("ascii", "replace")
    for e in files:
        if e.path not in theirs:
            raise HostError(conn.name, f"{root}/{e.path}: no checksum from the host "
                                       f"({res.stderr.decode('utf-8', 'replace').strip()})")
        if theirs[e.path] != done.digests.get(e.path):
            raise HostError(conn.name, f"{root}/{e.path}: checksum differs after the copy")


def sha256_file(path: str | os.PathLike[str]) -> str:
    return _sha256(Path(path))


__all__ = ["Fetched", "Meter", "fetch", "name_list", "safe_rel", "sha256_file", "shell_bytes"]

"""Input files stored on each host by content, so each crosses the network once per host.

``<workdir>/store/<sha256>`` holds one copy of every input file a sweep sent there, named
by its SHA-256. A job's ``input/`` is laid out from the store with hard links (a copy
where a link cannot be made, and always as root): a 100 MB mesh shared by 200 jobs is
sent once per host, and a file unchanged since the last sweep is not sent again.

Stored files are read-only, so a job cannot write through its link into the store (it
may still delete or replace its own ``input/`` entries; to change an input in place, copy
it first). As root, permissions do not stop writes, so root's jobs get copies. Before a
layout, each entry's size is checked; an entry that is missing or has the wrong size is
sent again. Entries no sweep has used for ``KEEP_DAYS`` are removed when a head connects.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from pathlib import Path
from shlex import quote as q

import attrs

from .errors import HostError
from .hosts.base import HostConnection
from .plan import file_sha256
from .transfer import Meter

KEEP_DAYS = 30


@attrs.frozen
class Item:
    """One entry of a job's ``input/``: a file (by content), a dir, or a symlink."""

    target: str  # path inside input/
    kind: str  # "file", "dir", "link"
    local: str = ""  # the head's file (kind "file")
    digest: str = ""
    size: int = 0
    executable: bool = False
    link: str = ""  # a symlink's target, as it was


def expand(files: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> list[Item]:
    """A job's (local path, name in input/) list as files, dirs and links.

    A named file that is a symlink is followed (its content is what the job gets, as
    ``cp`` does); inside a named dir, links are kept as links, as ``cp -r`` does."""
    out: list[Item] = []
    for local, target in files:
        p = Path(local)
        if p.is_dir():
            out.append(Item(target, "dir"))
            for root, dirs, names in os.walk(p):
                rel = Path(root).relative_to(p)
                dirs.sort()
                for n in dirs + sorted(names):
                    full = Path(root, n)
                    t = str(Path(target, rel, n))
                    if full.is_symlink():
                        out.append(Item(t, "link", link=os.readlink(full)))
                    elif full.is_dir():
                        out.append(Item(t, "dir"))
                    else:
                        out.append(_file(full, t))
        else:
            out.append(_file(p, target))
    return out


def _file(p: Path, target: str) -> Item:
    st = p.stat()
    return Item(target, "file", str(p), "", st.st_size, bool(st.st_mode & stat.S_IXUSR))


class HostStore:
    """What one host's store holds, as far as this head knows, and uploads to it."""

    def __init__(self, conn: HostConnection, workdir: str, copy: bool,
                 meter: Meter | None = None) -> None:
        self.conn = conn
        self.root = f"{workdir}/store"
        self.copy = copy  # lay out with copies, not links (root)
        self.meter = meter
        self.have: dict[str, int] = {}  # digest -> size, known to be there
        self.sending: dict[str, asyncio.Future[None]] = {}
        self.uploaded = 0  # bytes this head sent to the store
        self.sent = 0  # files it sent
        self.reused = 0  # files it found there already

    async def lay_out(self, items: list[Item], input_dir: str) -> None:
        """Make ``input_dir`` hold ``items``; uploads what the store lacks first."""
        items = await asyncio.gather(*(_digested(i) for i in items))
        for _ in range(3):
            await self._ensure([i for i in items if i.kind == "file"])
            res = await self.conn.run(self._layout_script(items, input_dir), timeout=600)
            missing = [w[8:] for w in res.text.split() if w.startswith("missing:")]
            if res.exit_status == 0 and not missing:
                return
            if not missing:
                raise HostError(self.conn.name, f"cannot lay out {input_dir}: "
                                                f"{res.stderr.decode(errors='replace').strip()}")
            for d in missing:  # removed or damaged since we looked: send it again
                self.have.pop(d, None)
        raise HostError(self.conn.name, f"its input store {self.root} keeps losing files")

    async def _ensure(self, files: list[Item]) -> None:
        want = {i.digest: i for i in files if i.digest not in self.have}
        if not want:
            return
        unknown = [d for d in want if d not in self.sending]
        if unknown:
            # One round trip: which of these does the store have (right size)? Those are
            # touched, so that pruning leaves them alone.
            res = await self.conn.run(
                f"s={q(self.root)}\nfor e in {' '.join(f'{d}:{want[d].size}' for d in unknown)}"
                "; do\n" + r"""  d=${e%:*}; n=${e#*:}
  if [ -f "$s/$d" ] && [ "$(wc -c < "$s/$d")" -eq "$n" ]; then touch -c "$s/$d"; echo "$d"; fi
done
""", timeout=120)
            for d in res.text.split():
                if d in want and d not in self.have:  # (another start may have asked too)
                    self.have[d] = want[d].size
                    self.reused += 1
        waits = []
        for d, item in want.items():
            if d in self.have:
                continue
            fut = self.sending.get(d)
            if fut is None:
                fut = self.sending[d] = asyncio.ensure_future(self._send(item))
                fut.add_done_callback(lambda _f, d=d: self.sending.pop(d, None))
            waits.append(fut)
        if waits:
            await asyncio.gather(*waits)

    async def _send(self, item: Item) -> None:
        tmp = f"{self.root}/.up-{item.digest[:16]}-{secrets.token_hex(4)}"
        mode = "500" if item.executable else "400"  # read-only, and the user's alone
        await self.conn.run(f"mkdir -p {q(self.root)}\n", timeout=60)
        try:
            await self.conn.put(item.local, tmp)
            res = await self.conn.run(
                f"t={q(tmp)}; f={q(self.root + '/' + item.digest)}\n"
                f'[ "$(wc -c < "$t")" -eq {item.size} ] || {{ echo "size $(wc -c < "$t")"; '
                f'rm -f "$t"; exit 1; }}\n'
                f'chmod {mode} "$t" && mv -f "$t" "$f"\n', timeout=120)
        except BaseException:
            await _quietly(self.conn.run(f"rm -f {q(tmp)}\n", timeout=60))
            raise
        if res.exit_status != 0:
            raise HostError(self.conn.name, f"uploading {item.local}: arrived with "
                                            f"{res.text.strip()} bytes, not {item.size}")
        self.have[item.digest] = item.size
        self.uploaded += item.size
        self.sent += 1
        if self.meter is not None:
            self.meter.add(item.size)

    def _layout_script(self, items: list[Item], input_dir: str) -> str:
        # '--' everywhere: an input may be named '-rf' or '--target-directory=/x'
        put = 'cp -p -- "$s/$1" "$2"' if self.copy else \
            'ln -- "$s/$1" "$2" 2>/dev/null || cp -p -- "$s/$1" "$2"'
        lines = [f"s={q(self.root)}; cd {q(input_dir)} || exit 3", "bad=0",
                 # f DIGEST SIZE TARGET: the store's file, checked by size, linked or copied
                 "f() { if [ -f \"$s/$1\" ] && [ \"$(wc -c < \"$s/$1\")\" -eq \"$3\" ]; then "
                 f"rm -f -- \"$2\"; {put} || exit 3; else echo \"missing:$1\"; bad=1; fi; }}"]
        for i in items:
            t = q(i.target)
            if i.kind == "dir":
                lines.append(f"mkdir -p -- {t} || exit 3")
            elif i.kind == "link":
                lines.append(f"mkdir -p -- \"$(dirname -- {t})\" && ln -sfn -- {q(i.link)} {t} "
                             "|| exit 3")
            else:
                lines.append(f"mkdir -p -- \"$(dirname -- {t})\" || exit 3")
                lines.append(f"f {i.digest} {t} {i.size}")
        lines.append("exit $bad")
        return "\n".join(lines) + "\n"


def prune_script(workdir: str, days: int = KEEP_DAYS) -> str:
    """Remove store entries no head has used for ``days``, and uploads cut short."""
    s = q(f"{workdir}/store")
    return (f"[ -d {s} ] && {{ find {s} -maxdepth 1 -type f -name '[0-9a-f]*' -mtime +{days} "
            f"-exec rm -f {{}} + ; find {s} -maxdepth 1 -name '.up-*' -mmin +1440 "
            "-exec rm -f {} + ; } 2>/dev/null\ntrue\n")


async def _digested(i: Item) -> Item:
    if i.kind != "file" or i.digest:
        return i
    return attrs.evolve(i, digest=await asyncio.to_thread(file_sha256, i.local))


async def _quietly(coro: object) -> None:
    try:
        await coro  # type: ignore[misc]
    except Exception:
        pass

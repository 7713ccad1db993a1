"""A shared lab for tests and benchmarks: several lab members, each with their own unix
account and their own head, against the same simulated workstations (SPEC §6a).

The workstations are the real OpenSSH servers of ``workstations.py``; every member may log
in to every one of them, as on a lab's workstations with shared accounts. Each member runs
``dssh`` as their own local user (root only), with their own state file, inventory and
sweep, from a copy of this checkout's package, so nothing depends on root's files.

The ``Sampler`` reads every workstation's ledger and ``/proc`` every 100 ms while heads
run: what was claimed, against each host's capacity, and which job trees really ran.

Plain module, no pytest import: ``bench/sharing`` uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import site
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workstations import (
    Workstations,
    _ensure_user,
    _kill_user_processes,
    _login_shell,
    _UserLock,
    start_workstations,
)

REPO = Path(__file__).resolve().parent.parent
PENDING_STALE = 60  # as remote/ledger.sh: a claim no wrapper signed counts this long


@dataclass
class Member:
    """One lab member: a unix user with a home, a key, and their own head."""

    user: str
    home: Path
    uid: int
    gid: int
    identity_file: Path

    def inventory(self, ws: Workstations, **host: Any) -> dict[str, Any]:
        """The member's inventory: every workstation, logged in to as this member, each with
        its own workdir under the member's home (the workstations share one filesystem)."""
        return {"hosts": {w.name: {**w.inventory_entry(
            user=self.user, identity_file=str(self.identity_file),
            workdir=str(self.home / w.name / ".dssh")), **host} for w in ws}}


@dataclass
class Lab:
    ws: Workstations
    members: list[Member]
    base: Path
    python: list[str]  # how members start Python
    env: dict[str, str]
    as_root: bool  # members' heads run as root (no Python other users can run)
    _lock: _UserLock | None = None

    def dssh(self, m: Member, *args: str, cwd: Path, log: str = "head.log"
             ) -> subprocess.Popen[str]:
        """Start ``dssh ARGS`` as member ``m`` in ``cwd``; stdout and stderr in cwd/LOG."""
        env = {**self.env, "HOME": str(m.home), "USER": m.user, "LOGNAME": m.user,
               "DSSH_STATE": str(m.home / "state.db")}
        out = open(cwd / log, "w")  # noqa: SIM115 - the child has its own copy
        argv = [*self.python, "-m", "distribute_ssh", *args]
        kw: dict[str, Any] = {}
        if not self.as_root:
            kw = {"user": m.uid, "group": m.gid, "extra_groups": []}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                **kw)
        out.close()
        return proc

    def stop(self) -> None:
        for m in self.members:
            with contextlib.suppress(Exception):
                _kill_user_processes(m.uid, include_sshd=True)
        self.ws.stop()
        if self._lock is not None:
            self._lock.release()


def _member_python(base: Path) -> tuple[list[str], dict[str, str], bool]:
    """A Python other users can run with dssh's dependencies, and its environment: this
    interpreter if others may run it, else the system's interpreter of the same version
    with this one's site-packages linked in. Heads run as root when neither works."""
    pkg = base / "pkg"
    pkg.mkdir(mode=0o755)
    shutil.copytree(REPO / "distribute_ssh", pkg / "distribute_ssh",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", str(pkg)], check=True)
    paths = [str(pkg)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSSH_", "PYTHON"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    candidates = [sys.executable]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        candidates.append(str(system))
    for py in candidates:
        extra = list(paths)
        if py != sys.executable:
            sp = base / "site-packages"
            if not sp.exists():
                src = site.getsitepackages()[0]
                try:
                    subprocess.run(["cp", "-al", src, str(sp)], check=True,
                                   capture_output=True)
                except subprocess.CalledProcessError:
                    shutil.copytree(src, sp, symlinks=True)
                # Dirs only: the files are hard links to this interpreter's own.
                subprocess.run(["find", str(sp), "-type", "d", "-exec", "chmod", "a+rx", "{}",
                                "+"], check=True)
            extra.append(str(sp))
        env_try = {**env, "PYTHONPATH": ":".join(extra)}
        r = subprocess.run(["runuser", "-u", "nobody", "--", py, "-c",
                            "import asyncssh, cattrs, yaml, distribute_ssh.engine"],
                           env=env_try, capture_output=True, cwd="/")
        if r.returncode == 0:
            return [py], env_try, False
    return [sys.executable], {**env, "PYTHONPATH": ":".join(paths)}, True


def start_lab(n_hosts: int, n_members: int, base: Path, prefix: str = "dssh-lab") -> Lab:
    """``n_hosts`` workstations every one of ``n_members`` members may log in to."""
    if os.geteuid() != 0:
        raise RuntimeError("a shared lab needs root: each member is a unix user")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    lock = _UserLock(prefix + "m")
    try:
        users = [f"{lock.prefix}{i}" for i in range(1, n_members + 1)]
        ws = start_workstations(n_hosts, base / "ws", prefix=prefix + "w",
                                sshd_options={"AllowUsers": " ".join(
                                    [f"{prefix}w*", *users])})
    except BaseException:
        lock.release()
        raise
    members = []
    homes = base / "members"
    homes.mkdir(mode=0o755)
    homes.chmod(0o755)
    shell = _login_shell()
    for user in users:
        home = homes / user
        home.mkdir(mode=0o755)
        pw = _ensure_user(user, home, shell)
        _kill_user_processes(pw.pw_uid, include_sshd=True)  # a crashed earlier run's
        key = home / "id_ed25519"
        shutil.copyfile(ws.identity_file, key)
        for p in (home, key):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        key.chmod(0o600)
        members.append(Member(user, home, pw.pw_uid, pw.pw_gid, key))
    python, env, as_root = _member_python(base)
    return Lab(ws, members, base, python, env, as_root, lock)


@contextlib.contextmanager
def lab(n_hosts: int, n_members: int, base: Path, prefix: str = "dssh-lab") -> Iterator[Lab]:
    the_lab = start_lab(n_hosts, n_members, base, prefix)
    try:
        yield the_lab
    finally:
        the_lab.stop()


# -- sampling ------------------------------------------------------------------------------

def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _proc_start(pid: str) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[19] if len(rest) >= 20 and rest[0] not in ("Z", "X") else None


def read_claims(ledger: Path) -> list[dict[str, str]]:
    """The live claims of a ledger, judged by the same rules as ``ledger.sh``, read while
    holding its lock (shared): no claim is made while we read."""
    out: list[dict[str, str]] = []
    lock = ledger / "lock"
    if not lock.exists():
        return out
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        now, boot = time.time(), _boot_id()
        for f in ledger.glob("c-*"):
            try:
                mtime = f.stat().st_mtime
                fields = dict(line.split(" ", 1) if " " in line else (line, "")
                              for line in f.read_text().splitlines())
            except OSError:
                continue
            if "ended" in fields or (fields.get("boot") and fields["boot"] != boot):
                continue
            pid = fields.get("pid")
            if pid:
                if _proc_start(pid) != fields.get("pstart"):
                    continue
            elif now - mtime >= PENDING_STALE:
                continue
            out.append(fields)
    finally:
        os.close(fd)
    return out


def job_trees(jobs_root: str) -> set[str]:
    """The run dirs below ``jobs_root`` whose job has a live process now (its wrapper
    marks every process of a job with ``DSSH_RUN=<run dir>``)."""
    runs: set[str] = set()
    mark = b"DSSH_RUN="
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2:].startswith("Z"):
            continue
        for item in env.split(b"\0"):
            if item.startswith(mark):
                run = item[len(mark):].decode(errors="replace")
                if run.startswith(jobs_root):
                    runs.add(run)
    return runs


@dataclass
class Sample:
    t: float
    host: str
    claimed_cpus: int
    claimed_jobs: int
    running: int  # job trees alive
    unclaimed: list[str]  # job trees alive with no live claim
    users: set[str]  # whose claims the host held


@dataclass
class Sampler:
    """Every ``interval`` seconds, per workstation: the live claims of its ledger and the
    job trees alive in ``/proc`` (any member's), checked against its capacity."""

    lab: Lab
    capacity: dict[str, int]  # host -> cpus
    interval: float = 0.1
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        roots = {w.name: [str(m.home / w.name / ".dssh" / "jobs") + "/"
                          for m in self.lab.members] for w in self.lab.ws}
        while not self._stop.is_set():
            t = time.monotonic()
            for w in self.lab.ws:
                ledger = Path(w.ledger_dir)
                before = read_claims(ledger)
                trees = set().union(*(job_trees(r) for r in roots[w.name]))
                after = read_claims(ledger)
                dirs = {c.get("dir") for c in before + after}
                self.samples.append(Sample(
                    t, w.name, sum(int(c.get("cpus", 0)) for c in before),
                    len(before), len(trees), sorted(trees - dirs),
                    {c.get("user", "") for c in before}))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def peak_oversubscription(self) -> int:
        """The most cpus claimed past a host's capacity at any sample (target: 0)."""
        return max([s.claimed_cpus - self.capacity[s.host] for s in self.samples] + [0])

    def unclaimed(self) -> list[Sample]:
        return [s for s in self.samples if s.unclaimed]

    def utilisation(self, bucket: float = 1.0) -> dict[str, list[float]]:
        """Per host, the share of its cpus claimed, averaged over ``bucket``-second spans."""
        if not self.samples:
            return {}
        t0 = self.samples[0].t
        out: dict[str, list[float]] = {}
        for s in self.samples:
            i = int((s.t - t0) / bucket)
            row = out.setdefault(s.host, [])
            while len(row) <= i:
                row.append([])  # type: ignore[arg-type]
            row[i].append(s.claimed_cpus / self.capacity[s.host])  # type: ignore[attr-defined]
        return {h: [sum(b) / len(b) if b else 0.0 for b in row]  # type: ignore[misc]
                for h, row in out.items()}


def member_of(user: str) -> pwd.struct_passwd:
    return pwd.getpwnam(user)

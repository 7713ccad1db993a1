"""Shared helpers for the benchmarks under ``bench/``.

Every benchmark runs dssh and a peer tool (GNU Parallel, scp, rsync) in one invocation on the
same simulated workstations: real OpenSSH servers on 127.0.0.1 from ``tests/workstations.py``
(as root each has its own unix user and home). This module starts and always stops them (also on
Ctrl-C and SIGTERM), runs and times commands, counts SSH logins from the sshd logs and collects
the facts about the machine that belong next to any number. For benchmarks that watch a
workstation's processes from outside (``bench/pause_latency``) it reads their states from /proc.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from workstations import Workstation, Workstations, start_workstations  # noqa: E402

__all__ = [
    "REPO",
    "BenchError",
    "Proc",
    "Timed",
    "Workstation",
    "Workstations",
    "bench_workstations",
    "clean_env",
    "count_logins",
    "log_sizes",
    "machine_info",
    "parallel_version",
    "pending_signals",
    "percentile",
    "proc_environ",
    "proc_wchan",
    "run_rusage",
    "run_timed",
    "say",
    "stats",
    "user_processes",
    "write_ssh_wrapper",
]


class BenchError(RuntimeError):
    """A tool failed or produced wrong results: the numbers would mean nothing."""


def say(msg: str) -> None:
    """Progress for the person watching (stderr, so stdout stays the table or JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_workstations(n: int, *, prefix: str = "dssh-bench",
                       keep: bool = False) -> Iterator[Workstations]:
    """Start ``n`` loopback workstations in a fresh temp dir; stop them however the block ends.

    SIGINT (even if it was ignored when we started, as in a background job), SIGTERM and SIGHUP
    raise KeyboardInterrupt for the duration, so ``finally`` runs for all of them.
    ``keep`` leaves the files (sshd logs, homes) for inspection.
    """
    old = {s: signal.signal(s, _raise_interrupt)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=workstations_dir()[0]))
    try:
        ws = start_workstations(n, base, prefix=prefix)  # stops what it started if it fails
        try:
            yield ws
        finally:
            # a second Ctrl-C must not cut the clean-up short
            sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                ws.stop()
            finally:
                signal.signal(signal.SIGINT, sigint)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if keep:
            say(f"kept the workstation files under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def clean_env(home: Path) -> dict[str, str]:
    """The environment for a tool under test: its own empty HOME and XDG dirs, no ssh-agent,
    no DSSH_* settings (so nothing of the developer's ~/.ssh or dssh config leaks in)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DSSH_") and k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_CACHE_HOME", ".cache"), ("XDG_STATE_HOME", ".local/state")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(home / sub)
    return env


@dataclass
class Timed:
    argv: list[str]
    returncode: int
    seconds: float  # wall clock from just before the fork to the exit
    start_epoch: float  # time.time() just before the fork
    cpu_seconds: float  # user + system CPU of the tool and the children it waited for
    machine_cpu_seconds: float  # busy CPU of the whole machine meanwhile (sshd, jobs, ...)
    stdout: str
    stderr: str
    max_rss_kib: int = 0  # peak RSS of the tool (or of a child it waited for); run_rusage only

    def check(self, what: str) -> None:
        if self.returncode != 0:
            raise BenchError(
                f"{what} exited with {self.returncode}: {shlex.join(self.argv)}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")


def run_timed(argv: Sequence[str], *, env: dict[str, str], cwd: Path, input: str | None = None,
              timeout: float = 600) -> Timed:
    """Run ``argv`` to its end and time it (wall clock, including the tool's own start-up)."""
    argv = [str(a) for a in argv]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = _machine_busy()
    start_epoch = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True, text=True,
                          timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    busy1 = _machine_busy()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return Timed(argv, proc.returncode, seconds, start_epoch, cpu, busy1 - busy0, proc.stdout,
                 proc.stderr)


# Forks the tool, waits for it with wait4() and writes what it used. It runs as a process of its
# own (python -S, ~10 MB) because a child's ru_maxrss starts from the memory of the process that
# forked it: forked from this benchmark (which may hold a 100,000-job state in memory), even
# `dssh --help` would show the benchmark's peak RSS.
_LAUNCHER = """\
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
try:
    pid = os.fork()
except OSError as e:
    sys.exit(f"fork: {e}")
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, f"cannot run {argv[0]}: {e}\\n".encode())
    os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as f:
    json.dump({"wall": wall, "status": status, "utime": ru.ru_utime, "stime": ru.ru_stime,
               "maxrss": ru.ru_maxrss}, f)
"""


def run_rusage(argv: Sequence[str], *, env: dict[str, str], cwd: Path,
               input: str | None = None, timeout: float = 600) -> Timed:
    """Like ``run_timed``, but the wall time, CPU time and peak RSS are the tool's own, from
    ``wait4()`` on it by a small launcher process: nothing else is mixed in, and the peak RSS
    is not inflated by this (possibly large) benchmark process.

    ``ru_maxrss`` (KiB on Linux) is the largest of the tool and the children it waited for (at
    least the launcher's ~10 MB it was forked from). Output goes through temporary files (no
    pipe to fill up, however much the tool prints). After ``timeout`` s the tool's process
    group is killed (returncode -9, ``seconds`` >= timeout).
    """
    import json as _json
    import threading

    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as ru_file:
        if input is not None:
            inp.write(input.encode())
            inp.seek(0)
        busy0 = _machine_busy()
        start_epoch = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, ru_file.name, *argv],
                                env=env, cwd=cwd, stdout=out, stderr=err,
                                stdin=inp if input is not None else subprocess.DEVNULL,
                                start_new_session=True)

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        killer = threading.Timer(timeout, kill)
        killer.start()
        try:
            proc.wait()
        finally:
            killer.cancel()
        seconds = time.perf_counter() - t0
        busy1 = _machine_busy()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        try:
            ru = _json.loads(ru_file.read())
        except ValueError:  # killed, or the launcher failed
            ru = None
        if ru is None:
            return Timed(argv, proc.returncode if proc.returncode else -9, seconds,
                         start_epoch, 0.0, busy1 - busy0, stdout, stderr)
        return Timed(argv, os.waitstatus_to_exitcode(ru["status"]), ru["wall"], start_epoch,
                     ru["utime"] + ru["stime"], busy1 - busy0, stdout, stderr,
                     max_rss_kib=ru["maxrss"])


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (Linux /proc/stat; 0.0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def write_ssh_wrapper(w: Workstation, path: Path) -> Path:
    """A one-word command that is ``ssh`` with this workstation's key, port, user and known_hosts.

    One word matters: GNU Parallel's ``--controlmaster`` exec()s the ssh command as a single
    program name, so an ``--ssh``/sshlogin command with spaces silently gets no master.
    """
    argv = ["ssh", *w.ssh_options(), "-l", w.user]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {shlex.join(argv)} \"$@\"\n")
    path.chmod(0o755)
    return path


_ACCEPTED = re.compile(rb"^Accepted publickey for ", re.M)


def log_sizes(ws: Workstations) -> dict[str, int]:
    """Where each workstation's sshd log ends now (for ``count_logins``)."""
    return {w.name: w.log_file.stat().st_size if w.log_file.exists() else 0 for w in ws}


def count_logins(ws: Workstations, since: dict[str, int]) -> int:
    """SSH logins (new authenticated connections) on all workstations since ``log_sizes()``."""
    total = 0
    for w in ws:
        with contextlib.suppress(OSError), open(w.log_file, "rb") as f:
            f.seek(since.get(w.name, 0))
            total += len(_ACCEPTED.findall(f.read()))
    return total


def _version(argv: Sequence[str], *, stderr: bool = False) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (r.stderr if stderr else r.stdout).strip()
    return text.splitlines()[0] if text else f"unavailable (exit {r.returncode})"


def _mount_of(path: str) -> tuple[str, str, str]:
    """(mount point, filesystem type, source) of the mount that holds ``path``."""
    best = ("/", "", "")
    real = os.path.realpath(path)
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            fstype, source = (right.split() + ["", ""])[:2]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, fstype, source)
    return best


def _journal_less_ext4(path: str) -> bool:
    """Is ``path`` on an ext4 filesystem mounted without a journal? There the kernel's inode
    allocator looks past every inode deleted in the last moments (ext4 ``find_inode_bit``,
    ``recently_deleted``) at each file it creates, so a host that creates and removes files
    by the thousand slows down as it goes: on such a machine, perf showed half of all CPU
    time in those two functions during a dispatch run."""
    _, fstype, source = _mount_of(path)
    if fstype != "ext4" or not source.startswith("/dev/"):
        return False
    dev = os.path.basename(os.path.realpath(source))
    try:
        return not any(e.startswith(dev + "-") for e in os.listdir("/proc/fs/jbd2"))
    except FileNotFoundError:
        return True  # no ext4 filesystem here has a journal
    except OSError:
        return False


def workstations_dir() -> tuple[str | None, str]:
    """Where the loopback workstations' homes go, and why: ``$DSSH_BENCH_WORKSTATIONS_DIR``
    if set; else the temp dir, unless that is ext4 without a journal (see
    :func:`_journal_less_ext4`), which no lab workstation's home is: then /dev/shm (tmpfs),
    if there is one. The head's own files (state, results) stay in the temp dir."""
    asked = os.environ.get("DSSH_BENCH_WORKSTATIONS_DIR")
    if asked:
        return asked, "$DSSH_BENCH_WORKSTATIONS_DIR"
    tmp = tempfile.gettempdir()
    if _journal_less_ext4(tmp) and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            and _mount_of("/dev/shm")[1] == "tmpfs":
        return "/dev/shm", (f"{tmp} is ext4 without a journal, where creating files slows "
                            "as files are removed (no workstation's home is such a "
                            "filesystem); DSSH_BENCH_WORKSTATIONS_DIR overrides")
    return None, "the temp dir"


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: cores, kernel, Python, OpenSSH, load when measured."""
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        ncpu = os.cpu_count() or 0
    from distribute_ssh import __version__

    wdir, why = workstations_dir()
    return {
        "nproc": ncpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh": _version(["ssh", "-V"], stderr=True),
        "dssh": __version__,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "workstations_dir": {"dir": wdir or tempfile.gettempdir(), "why": why},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def parallel_version() -> str | None:
    """GNU Parallel's version line, or None (said) when ``parallel --version`` does not run."""
    try:
        r = subprocess.run(["parallel", "--version"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"GNU Parallel unavailable ({e}); skipping it")
        return None
    if r.returncode != 0 or not r.stdout.startswith("GNU parallel"):
        say(f"`parallel --version` failed (exit {r.returncode}): "
            f"{(r.stderr or r.stdout).strip()[:200]}; skipping GNU Parallel")
        return None
    return r.stdout.splitlines()[0]


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks
    (numpy's default): of 20 values, p95 lies between the 19th and the 20th smallest."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Proc:
    """One process as ``/proc/PID/stat`` and ``/proc/PID/cmdline`` show it."""

    pid: int
    ppid: int
    pgid: int
    sid: int  # session id
    state: str  # R running, S sleeping, T stopped (SIGSTOP), Z zombie, ...
    argv: tuple[str, ...]

    @property
    def last_word(self) -> str:
        """The last blank-separated word of the command line ("" for kernel threads)."""
        words = " ".join(self.argv).split()
        return words[-1] if words else ""


def user_processes(uid: int) -> dict[int, Proc]:
    """Every process of ``uid`` now (Linux /proc); processes that exit meanwhile are skipped.

    Cheap enough to call every 10 ms: only the processes owned by ``uid`` are read.
    """
    out: dict[int, Proc] = {}
    with os.scandir("/proc") as it:
        for e in it:
            if not e.name.isdigit():
                continue
            try:
                if e.stat().st_uid != uid:
                    continue
                with open(f"/proc/{e.name}/stat", "rb") as f:
                    st = f.read()
                with open(f"/proc/{e.name}/cmdline", "rb") as f:
                    cmd = f.read()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # "PID (COMM) STATE PPID PGRP SESSION ..."; COMM may hold spaces and parentheses
            fields = st[st.rindex(b")") + 2:].split()
            pid = int(e.name)
            out[pid] = Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]),
                            fields[0].decode(), tuple(a.decode(errors="replace")
                                                      for a in cmd.split(b"\0") if a))
    return out


def proc_environ(pid: int) -> list[bytes]:
    """``/proc/PID/environ`` as ``NAME=value`` entries ([] if the process is gone or hidden)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return [e for e in f.read().split(b"\0") if e]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def pending_signals(pid: int) -> int:
    """The signals pending for the process (``SigPnd | ShdPnd`` of /proc/PID/status) as a bit
    mask: bit ``n - 1`` is signal ``n``. 0 if the process is gone."""
    mask = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    mask |= int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return mask


def proc_wchan(pid: int) -> str:
    """Where in the kernel the process waits (/proc/PID/wchan; "" if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip()
    except OSError:
        return ""

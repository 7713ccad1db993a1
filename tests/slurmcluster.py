"""A real single-node Slurm cluster for tests: slurmctld + slurmd + a private munged, as root.

``SlurmCluster(dir).start()`` writes everything under ``dir``: ``slurm.conf``, the munge key,
socket and log (``munge/``), the daemons' logs (``slurmctld.log``, ``slurmd.log``, plus their
stdout/stderr in ``*.out``), ``state/`` (StateSaveLocation), ``spool/`` (SlurmdSpoolDir) and
``jobcomp.log`` (one line per finished job, jobcomp/filetxt). The one node is this machine
(``hostname -s``, address 127.0.0.1) with the CPUs and memory ``slurmd -C`` finds, in one
partition ``debug`` (default, no time limit). Ports are free ones picked at start.

Two ways to reach it, both set up by ``start()`` and undone by ``stop()``:

- ``SLURM_CONF`` in ``os.environ`` (so every subprocess of the test session inherits it);
- ``/etc/slurm/slurm.conf``, the same file: users whose environment is not pytest's (e.g. a
  workstation user's SSH session) run plain ``sbatch``. An existing file is kept as
  ``slurm.conf.dssh-test-orig`` and put back by ``stop()`` (or by the next ``start()`` after a
  crash).

munged is a private instance (own key, socket in ``dir/munge``, ``AuthInfo=socket=...``), so a
system munged, if any, is left alone. The cluster needs root; a Slurm daemon that this module did
not start refuses it (``slurm_missing_reason()``). One cluster per machine at a time (a lock file).

Scheduling is the Slurm default except: ``SelectType=select/cons_tres`` with ``CR_CPU`` (N
single-CPU tasks run at once on N CPUs, whatever the SMT layout), ``batch_sched_delay=0``,
``EnforcePartLimits=ALL``, ``KillWait=5`` (so cancelling is quick), no accounting database
(``sacct`` does not work: use ``job_states()`` / ``scontrol show job``, kept ``MinJobAge`` =
300 s after the end), and a job whose dependency can never be satisfied stays PENDING with
reason ``DependencyNeverSatisfied`` (Slurm's default; ``conf_overrides=
{"DependencyParameters": "kill_invalid_depend"}`` cancels it instead).

Plain module, no pytest import::

    with SlurmCluster(Path(tempfile.mkdtemp())) as cluster:   # start()s
        job = cluster.sbatch(["--array=0-3", "--output=out-%a", "--wrap=hostname"], cwd=d)
        states = cluster.wait_for(job)   # {0: TaskState("COMPLETED", 0), 1: ...}
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from workstations import _free_port, _tail

__all__ = [
    "SlurmCluster",
    "SlurmError",
    "TaskState",
    "slurm_missing_reason",
    "slurm_processes",
    "slurm_session",
]

DAEMONS = ("slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
MUNGED = "munged"
MUNGE_USER = "munge"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
SYSTEM_CONF_BACKUP = Path("/etc/slurm/slurm.conf.dssh-test-orig")
CONF_MARKER = "# written by tests/slurmcluster.py"
DIR_MARKER = "dssh-slurm"  # in every cluster dir name: daemons started from one are ours
LOCK_FILE = Path(tempfile.gettempdir()) / "dssh-slurm-cluster.lock"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL = 0.05
# wait_for() gives up on a job pending with DependencyNeverSatisfied after this long (a job
# to be killed for it, --kill-on-invalid-dep=yes, was never seen pending with that reason)
NEVER_GRACE = 2.0


class SlurmError(RuntimeError):
    """The test cluster could not be started or stopped, or a Slurm command failed."""


class TaskState(NamedTuple):
    """One job (or array task) as ``scontrol show job`` reports it; equal to the plain tuple
    ``(state, exit_code)``. For the signal half of ExitCode, Reason etc. see ``job_records``."""

    state: str  # JobState: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    exit_code: int  # the first half of ExitCode=N:SIGNAL (the batch script's exit status)


# --------------------------------------------------------------------------- small helpers


def _which(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin, /usr/local/sbin (root's PATH may lack them)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def _processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, ppid, comm, cmdline) of every live (non-zombie) process (Linux /proc)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z":
                continue
            yield int(entry.name), int(fields[1]), comm, cmdline


# slurmctld forks slurmscriptd; slurmd forks one slurmstepd per job step (they outlive it)
SLURM_PROCESS_NAMES = frozenset({"slurmctld", "slurmscriptd", "slurmd", "slurmdbd",
                                 "slurmstepd", MUNGED})


def slurm_processes() -> list[tuple[int, str, str]]:
    """(pid, comm, cmdline) of the live Slurm and munge processes on this machine."""
    return [(pid, comm, cmd) for pid, _ppid, comm, cmd in _processes()
            if comm in SLURM_PROCESS_NAMES]


def _foreign_daemons() -> list[tuple[int, str, str]]:
    """Slurm daemons running here that no SlurmCluster started (their command lines do not
    name a ``dssh-slurm`` dir). A system munged is fine: the cluster has its own."""
    return [p for p in slurm_processes()
            if p[1] in ("slurmctld", "slurmd", "slurmdbd") and DIR_MARKER not in p[2]]


def _kill_trees(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGKILL ``pids`` and all their descendants (e.g. a job step's processes); wait until
    they are gone (or zombies)."""
    procs = list(_processes())
    children: dict[int, list[int]] = {}
    for pid, ppid, _comm, _cmd in procs:
        children.setdefault(ppid, []).append(pid)
    victims, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in victims:
            victims.add(pid)
            todo.extend(children.get(pid, ()))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while victims & {p[0] for p in _processes()} and time.monotonic() < deadline:
        time.sleep(0.01)


def _expand_task_ids(spec: str) -> list[int]:
    """``"0-3"``, ``"1,5,7-9"``, ``"0-15:4"``, ``"2-5%2"`` -> the task ids."""
    spec = spec.split("%", 1)[0]
    ids: list[int] = []
    for part in spec.split(","):
        rng, _, step = part.partition(":")
        first, _, last = rng.partition("-")
        ids.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def slurm_missing_reason() -> str | None:
    """Why a test cluster cannot run on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (its slurmd runs jobs as other users)"
    missing = [n for n in (*DAEMONS, *COMMANDS, MUNGED) if _which(n) is None]
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} not found): "
                "apt-get install slurm-wlm munge")
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return f"no {MUNGE_USER!r} user (munged runs as it): apt-get install munge"
    foreign = _foreign_daemons()
    if foreign:
        pid, comm, _ = foreign[0]
        return (f"a Slurm daemon the tests did not start is running ({comm}, pid {pid}); "
                f"the test cluster would take over its ports and {SYSTEM_CONF}")
    return None


# --------------------------------------------------------------------------- the cluster


_SLURM_CONF = """\
{marker} -- a single-node test cluster in {dir}
ClusterName=dssh-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={dir}/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
MinJobAge=300
MailProg=/bin/true
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(eq=False)
class SlurmCluster:
    """One single-node cluster with its files under ``dir``. A context manager (``with``
    starts it); ``start()`` after ``stop()`` starts afresh (no jobs, job ids from 1).

    ``conf_overrides``: extra slurm.conf lines (``{"MinJobAge": "10"}``); a key that is in the
    default config replaces that line. ``system_conf``: also install ``/etc/slurm/slurm.conf``.
    """

    dir: Path
    conf_overrides: Mapping[str, str] = field(default_factory=dict)
    system_conf: bool = True
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = 0  # 0: what slurmd -C finds
    memory_mb: int = 0  # RealMemory; 0: what slurmd -C finds
    start_seconds: float = 0.0  # wall time of the last start()
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _lock_fd: int | None = field(default=None, repr=False)
    _old_slurm_conf: str | None = field(default=None, repr=False)
    _env_set: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        if DIR_MARKER not in str(self.dir):
            # stale daemons of a crashed run are recognised by this in their command lines
            raise ValueError(f"the cluster dir must have {DIR_MARKER!r} in its path: {self.dir}")

    # -- paths
    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def munge_dir(self) -> Path:
        return self.dir / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def jobcomp_log(self) -> Path:
        return self.dir / "jobcomp.log"

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands: os.environ with SLURM_CONF set."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command against this cluster; output captured as text."""
        r = subprocess.run(list(argv), capture_output=True, text=True, env=self.env(),
                           stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)  # type: ignore[call-overload]
        if check and r.returncode:
            raise SlurmError(f"`{' '.join(argv)}` failed ({r.returncode}): "
                             f"{(r.stderr or r.stdout).strip()}")
        return r

    def sbatch(self, args: Sequence[str], cwd: str | os.PathLike[str], *,
               user: str | None = None) -> int:
        """``sbatch --parsable ARGS`` in ``cwd``; returns the job id (an array's job id).

        Pass ``--output`` (or put ``#SBATCH --output`` in the script): the default,
        ``slurm-%j.out`` in the submit dir, is easy to lose. ``user``: submit as that unix user
        (``runuser``) with a login-like environment without ``SLURM_CONF``, as over SSH, so
        that it finds the cluster through ``/etc/slurm/slurm.conf``.
        """
        argv = ["sbatch", "--parsable", *args]
        if user is None:
            r = self.run(argv, cwd=cwd, check=False)
        else:
            pw = pwd.getpwnam(user)
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir, "USER": user,
                   "LOGNAME": user, "SHELL": pw.pw_shell, "LANG": "C.UTF-8"}
            r = subprocess.run([_which("runuser") or "runuser", "-u", user, "--", *argv],
                               cwd=cwd, env=env,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=30)
        if r.returncode:
            raise SlurmError(f"sbatch {' '.join(args)} failed ({r.returncode}): "
                             f"{r.stderr.strip()}")
        return int(r.stdout.strip().split(";")[0])  # "ID" or "ID;CLUSTER"

    def queue(self, jobid: int | str | None = None) -> list[tuple[str, str, str]]:
        """(job id, state, reason) of what ``squeue`` lists (one line per array task, pending
        ones collapsed as ``12_[2-3]``), of ``jobid`` or of every job. Finished jobs are not
        listed; COMPLETING ones are."""
        argv = ["squeue", "-h", "-o", "%i|%T|%r"]
        if jobid is not None:
            argv += ["-j", str(jobid)]
        r = self.run(argv, check=False)
        if r.returncode:
            if jobid is not None and "Invalid job id" in r.stderr:
                return []  # already purged (MinJobAge after its end)
            raise SlurmError(f"squeue failed ({r.returncode}): {r.stderr.strip()}")
        rows = [line.split("|") for line in r.stdout.splitlines() if line.strip()]
        return [(row[0], row[1], row[2]) for row in rows]

    def job_records(self, jobid: int | str) -> dict[int | None, dict[str, str]]:
        """{array task id: {field: value}} of job ``jobid`` from ``scontrol show job -o``
        (JobState, ExitCode "3:0", Reason, UserId "name(uid)", StdOut, ...); the key is None
        for a job that is not an array. Pending tasks not yet split off share one record.
        Empty when slurmctld no longer knows the job (MinJobAge after its end). Values are
        single words: one with spaces (e.g. a WorkDir) is cut at the first space."""
        r = self.run(["scontrol", "show", "job", "-o", str(jobid)], check=False)
        if r.returncode:
            if "Invalid job id" in r.stderr:
                return {}
            raise SlurmError(f"scontrol show job {jobid} failed: {r.stderr.strip()}")
        records: dict[int | None, dict[str, str]] = {}
        for line in r.stdout.splitlines():
            fields = dict(re.findall(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)", line))
            if "JobState" not in fields:
                continue
            if "ArrayTaskId" in fields:
                for task in _expand_task_ids(fields["ArrayTaskId"]):
                    records[task] = fields
            else:
                records[None] = fields
        return records

    def job_states(self, jobid: int | str) -> dict[int | None, TaskState]:
        """{array task id: (state, exit code)} of job ``jobid``, see ``job_records``: e.g.
        ``{0: ("COMPLETED", 0), 1: ("FAILED", 3), 2: ("PENDING", 0)}``, ``{None: ...}`` for a
        job that is not an array, ``{}`` once slurmctld has forgotten it."""
        return {task: TaskState(rec["JobState"], int(rec.get("ExitCode", "0:0").split(":")[0]))
                for task, rec in self.job_records(jobid).items()}

    def wait_for(self, jobid: int | str, timeout: float = 60.0) -> dict[int | None, TaskState]:
        """Wait until job ``jobid`` (every task of an array) has left the queue; returns its
        ``job_states()``. Raises SlurmError on timeout, and soon (``NEVER_GRACE`` s) when a
        task waits for a dependency that can never be satisfied: with neither
        ``--kill-on-invalid-dep=yes`` nor kill_invalid_depend it would stay PENDING forever
        (Reason=DependencyNeverSatisfied) until cancelled."""
        deadline = time.monotonic() + timeout
        never_since: float | None = None
        while True:
            rows = self.queue(jobid)
            if not rows:
                return self.job_states(jobid)
            never = [r for r in rows if r[2] == "DependencyNeverSatisfied"]
            if not never:
                never_since = None
            elif never_since is None:
                never_since = time.monotonic()
            elif time.monotonic() - never_since > NEVER_GRACE:
                raise SlurmError(f"job {never[0][0]} is pending with DependencyNeverSatisfied "
                                 "and will never run (scancel it, or cancel_all())")
            if time.monotonic() > deadline:
                raise SlurmError(f"job {jobid} still queued after {timeout} s: {rows}")
            time.sleep(POLL)

    def cancel_all(self, timeout: float = 30.0) -> None:
        """``scancel`` every job (of every user) and wait until the queue is empty, so no job
        process is left."""
        deadline = time.monotonic() + timeout
        cancelled: set[str] = set()
        while True:
            rows = self.queue()
            if not rows:
                return
            # "12_[2-3]" / "12_1" / "12": cancelling the array job id cancels all its tasks;
            # a cancelled running job is COMPLETING until its processes are gone (KillWait)
            ids = {row[0].split("_", 1)[0] for row in rows if row[1] != "COMPLETING"}
            if ids - cancelled:
                self.run(["scancel", *sorted(ids - cancelled)], check=False)
                cancelled |= ids
            if time.monotonic() > deadline:
                raise SlurmError(f"jobs still queued {timeout} s after scancel: {rows}")
            time.sleep(POLL)

    def node_state(self) -> str:
        """The node's state from ``sinfo`` (``idle``, ``mixed``, ``alloc``, ``idle*``...)."""
        r = self.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    def idle(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the node is ``idle`` (registered, no jobs)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.node_state()
            if state == "idle":
                return
            self._check_daemons("while waiting for the node to be idle")
            if time.monotonic() > deadline:
                raise SlurmError(f"node {self.node} is {state!r}, not idle, after {timeout} s"
                                 f"\n{self._logs()}")
            time.sleep(POLL)

    # -- lifecycle
    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start munged, slurmctld and slurmd with no jobs (state and spool wiped) and wait
        until the node is idle. Raises SlurmError (after cleaning up) if that fails."""
        t0 = time.perf_counter()
        if self._procs:
            raise SlurmError("the cluster is already started")
        reason = slurm_missing_reason()
        if reason:
            raise SlurmError(reason)
        self._lock()
        atexit.register(self.stop)  # no orphan daemons even if the caller forgets
        try:
            self._kill_stale()
            self._prepare_dirs()
            hw_cpus, hw_memory = self._hardware()
            self._start_munged()
            self.conf.write_text(self._with_overrides(_SLURM_CONF.format(
                marker=CONF_MARKER, dir=self.dir, node=self.node,
                host=socket.gethostname().split(".")[0],  # slurmctld must find itself
                ctld_port=_free_port(), slurmd_port=_free_port(),
                munge_socket=self.munge_socket, cpus=self.cpus or hw_cpus,
                memory=self.memory_mb or hw_memory)))
            self.conf.chmod(0o644)
            if self.system_conf:
                self._install_system_conf()
            self._old_slurm_conf = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = str(self.conf)
            self._env_set = True
            self._spawn("slurmctld", [_which("slurmctld") or "slurmctld", "-D",
                                      "-f", str(self.conf)])
            # -N: the node is found by name, never by resolving the host name
            self._spawn("slurmd", [_which("slurmd") or "slurmd", "-D", "-f", str(self.conf),
                                   "-N", self.node])
            self.idle(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0

    def stop(self) -> None:
        """Cancel every job (waiting for them to end: slurmd leaves running jobs behind),
        stop slurmd, slurmctld and munged, put /etc/slurm/slurm.conf and SLURM_CONF back.
        Idempotent; leaves no Slurm or munge process of this cluster."""
        atexit.unregister(self.stop)
        errors: list[str] = []
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                self.cancel_all(timeout=STOP_TIMEOUT + 10)
            except Exception as e:  # still stop the daemons
                errors.append(f"cancelling jobs: {e}")
        for name in ("slurmd", "slurmctld", MUNGED):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                errors.append(f"{name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT} s")
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        # job steps outlive slurmd; after cancel_all none should be left, but make sure
        if self._lock_fd is not None:
            self._kill_stale()
        if self._env_set:
            if self._old_slurm_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self._old_slurm_conf
            self._env_set = False
        if self._lock_fd is not None:
            try:
                self._restore_system_conf()
            except OSError as e:
                errors.append(f"restoring {SYSTEM_CONF}: {e}")
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None
        if errors:
            raise SlurmError("stopping the Slurm cluster: " + "; ".join(errors))

    # -- internals
    def _lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip()
            os.close(fd)
            raise SlurmError(f"another Slurm test cluster runs on this machine ({LOCK_FILE} "
                             f"is locked by {holder or 'another process'})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.dir}\n".encode(), 0)
        self._lock_fd = fd

    def _kill_stale(self) -> None:
        """SIGKILL daemons left by a crashed run (their dirs are ``dssh-slurm`` ones; we hold
        the lock, so not another session's), and every job step with its processes: with no
        foreign slurmd (checked by ``slurm_missing_reason``), each slurmstepd here is ours."""
        mine = {p.pid for p in self._procs.values()}
        victims = [pid for pid, comm, cmd in slurm_processes() if pid not in mine and (
            comm in ("slurmstepd", "slurmscriptd") or DIR_MARKER in cmd)]
        _kill_trees(victims)

    def _prepare_dirs(self) -> None:
        """Fresh state/spool (old jobs would survive a restart) and munge dirs; ``dir`` must
        be reachable by other users (their jobs, the munge socket)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        for p in [self.dir, *self.dir.parents]:
            if not os.stat(p).st_mode & 0o001:
                raise SlurmError(f"{p} is not searchable by other users; their jobs and the "
                                 f"munge socket under {self.dir} would be unreachable")
        for sub in ("state", "spool", "munge"):
            shutil.rmtree(self.dir / sub, ignore_errors=True)
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(mode=0o755)
        for f in ("slurmctld.pid", "slurmd.pid"):
            (self.dir / f).unlink(missing_ok=True)

    def _hardware(self) -> tuple[int, int]:
        """(CPUs, RealMemory MB) as slurmd will detect them (``slurmd -C``)."""
        r = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=30)
        cpus = re.search(r"\bCPUs=(\d+)", r.stdout)
        memory = re.search(r"\bRealMemory=(\d+)", r.stdout)
        return (int(cpus.group(1)) if cpus else os.cpu_count() or 1,
                int(memory.group(1)) if memory else 1)

    def _with_overrides(self, text: str) -> str:
        """``text`` with ``conf_overrides``: a key's line replaced, new keys before NodeName."""
        lines = text.splitlines(keepends=True)
        keys = {k.lower() for k in self.conf_overrides}
        kept = [ln for ln in lines if ln.split("=", 1)[0].lower() not in keys]
        at = next(i for i, ln in enumerate(kept) if ln.startswith("NodeName="))
        extra = [f"{k}={v}\n" for k, v in self.conf_overrides.items()]
        return "".join(kept[:at] + extra + kept[at:])

    def _start_munged(self) -> None:
        """A private munged as the munge user (it refuses root) with a fresh key."""
        pw = pwd.getpwnam(MUNGE_USER)
        d = self.munge_dir
        d.mkdir(mode=0o755)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o755)  # others reach the socket (mode 0777, made by munged)
        key = d / "munge.key"
        key.write_bytes(os.urandom(128))  # what `mungekey -c` writes: 1024 random bits
        os.chown(key, pw.pw_uid, pw.pw_gid)
        key.chmod(0o600)
        self._spawn(MUNGED, [
            _which(MUNGED) or MUNGED, "--foreground", f"--socket={self.munge_socket}",
            f"--key-file={key}", f"--log-file={d / 'munged.log'}",
            f"--pid-file={d / 'munged.pid'}", f"--seed-file={d / 'munged.seed'}",
        ], user=pw)
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            self._check_daemons("while starting munged")
            if time.monotonic() > deadline:
                raise SlurmError(f"munged made no socket in 10 s\n{self._logs()}")
            time.sleep(0.005)

    def _spawn(self, name: str, argv: list[str], user: pwd.struct_passwd | None = None) -> None:
        out = (self.munge_dir if name == MUNGED else self.dir) / f"{name}.out"
        with open(out, "ab") as f:
            self._procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                env={**os.environ, "SLURM_CONF": str(self.conf)},
                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                start_new_session=True)  # a Ctrl-C of pytest must not kill it before stop()

    def _check_daemons(self, when: str) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise SlurmError(f"{name} exited with {proc.returncode} {when}\n{self._logs()}")

    def _logs(self) -> str:
        parts = []
        for path in (self.dir / "slurmctld.log", self.dir / "slurmd.log",
                     self.dir / "slurmctld.out", self.dir / "slurmd.out",
                     self.munge_dir / "munged.log", self.munge_dir / "munged.out"):
            text = _tail(path, limit=1500).strip()
            if text:
                parts.append(f"--- {path}:\n{text}")
        return "\n".join(parts)

    def _install_system_conf(self) -> None:
        """Put our slurm.conf at /etc/slurm/slurm.conf, keeping a foreign one as the backup.
        The backup exists exactly while a foreign file is displaced (also after a crash)."""
        SYSTEM_CONF.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if SYSTEM_CONF.exists() and not _is_ours(SYSTEM_CONF):
            os.replace(SYSTEM_CONF, SYSTEM_CONF_BACKUP)
        tmp = SYSTEM_CONF.with_name(SYSTEM_CONF.name + ".dssh-test-new")
        shutil.copyfile(self.conf, tmp)
        tmp.chmod(0o644)
        os.replace(tmp, SYSTEM_CONF)

    def _restore_system_conf(self) -> None:
        if SYSTEM_CONF_BACKUP.exists():
            os.replace(SYSTEM_CONF_BACKUP, SYSTEM_CONF)
        elif SYSTEM_CONF.exists() and _is_ours(SYSTEM_CONF):
            SYSTEM_CONF.unlink()


def _is_ours(path: Path) -> bool:
    try:
        with open(path) as f:
            return f.readline().startswith(CONF_MARKER)
    except OSError:
        return False


def slurm_session() -> Iterator[SlurmCluster]:
    """A test session's started cluster in a fresh ``/tmp/dssh-slurm-*`` dir, stopped and
    removed afterwards (kept with ``DSSH_TEST_KEEP_SLURM=1``, e.g. for the daemons' logs, and
    when it failed to start: the error shows the ends of the logs)."""
    base = Path(tempfile.mkdtemp(prefix=f"{DIR_MARKER}-"))
    cluster = SlurmCluster(base)
    try:
        cluster.start()
    except BaseException:
        if not any(base.iterdir()):  # refused before writing anything (e.g. the lock)
            base.rmdir()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("DSSH_TEST_KEEP_SLURM", "") in ("", "0"):
            shutil.rmtree(base, ignore_errors=True)

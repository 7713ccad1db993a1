"""The run loop: connect, build, dispatch, watch, collect, retry (SPEC §5, §7, §8).

One asyncio task per host connects it, installs the wrapper, re-attaches jobs a
previous head left running, builds the solver and then listens to the host's watcher
for jobs that end. The main loop asks the pure scheduler where queued jobs go and
starts them. Every job transition is written to the state file before the head acts
on it, so a head killed at any moment can be followed by another.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import getpass
import hashlib
import itertools
import json
import math
import os
import shutil
import socket
import time
from pathlib import Path
from shlex import quote as q
from typing import Any

import attrs

from . import ledger, notify, policy, remote
from . import state as st
from .collect import RESERVED, keep_earlier, place, select, write_json
from .durations import format_until, parse_duration
from .errors import (
    BuildFailed,
    ConfigError,
    DsshError,
    HostError,
    HostUnreachable,
    NoCapableHost,
    ResultsDirError,
)
from .hosts.base import HostConnection, RemoteEntry, expand_sh, make_connection
from .lock import SweepLock
from .model.inventory import Host, Inventory
from .model.sweep import Sweep
from .plan import PlannedJob, build_id, expand, job_command, job_env, render
from .policy import Effective
from .schedule import HostSlots, JobNeed, unrunnable
from .schedule import place as place_jobs
from .store import HostStore, Item, prune_script
from .store import expand as expand_inputs
from .summary import epoch as _epoch
from .summary import iso as _iso
from .summary import write_summary
from .transfer import Fetched, Meter, fetch, fetch_small, name_list


def _ledger_rel() -> str:
    """The ledger script's path under a host's workdir."""
    return f"bin/{remote.script('ledger')[0]}"


_FIND_KINDS = {b"f": "file", b"d": "dir", b"l": "link"}
RECONCILE_EVERY = 5.0  # seconds between checks that catch an end the watcher missed,
# or a job killed with its wrapper (no end to hear): one cheap round trip per host
PAUSE_POLL = 2.0  # how often a paused host is asked whether its owner is done
# A job whose processes vanish (a reboot, its wrapper killed) is queued again without
# counting as a failure, this many times beyond its retries.
LOST_AGAIN = 3
UNREACHABLE_RETRY = 60.0  # how often a host unreachable since the start is looked for again
COLLECTIONS = 2  # jobs' outputs travelling from one host at once
COLLECT_RETRY = 5.0  # seconds before collecting again when the results dir refused a job
# A host whose jobs fail this many times in a row, each within QUICK_FAIL seconds, is a
# "black hole" (a broken install, a full disk): it is quarantined for the sweep.
QUARANTINE_AFTER = 3
QUICK_FAIL = 60.0
MIGRATE_GRACE = 60.0
MIGRATED = "MIGRATED"  # an attempt's state: moved off a long pause (not a job state)  # migrate_after: how long a job may take to save its state
START_FAILS = 3  # failed starts (the host answered, the start did not work) before FAILED
START_BATCH = 64  # jobs started on one host in one round trip, at most
CHECK_EVERY = 0.25  # seconds between looks at other commands' requests and at stalls
LOOK_AHEAD = 100  # queued jobs looked at to tell whether the queue wants a host
COLLECT_BATCH = 64  # ended jobs brought home from one host together, at most
# How long a batch waits for more of its kind: a start for the other slots that the same
# moment freed, a collection for the jobs that end with it. Each round trip costs the
# host a login shell and a few processes, whatever its size.
START_GATHER = 0.025
# A slot's chain (SPEC §5): jobs that take seconds or less are handed to a host a few at
# a time, the slot's wrapper starting each when the one before has ended. At most
# CHAIN_MAX jobs, and about CHAIN_SECONDS of work as the jobs ended so far took, so that
# what a host was handed and has not started yet is never more than a moment's work
# (owners' hours and policies, other heads' turns, a host lost: it is soon given back or
# done). Judged once CHAIN_AFTER jobs have ended; never while the queue is short.
CHAIN_MAX = 32
CHAIN_SECONDS = 1.0
CHAIN_AFTER = 8
# Look-ahead (SPEC §5, "Chains"): when the jobs take about the same time, each as long as a
# chain's turn or longer, a running job is linked its slot's next job LINK_LEAD seconds
# before it is expected to end, so the slot goes on without waiting for the head. Only
# while the durations vary by at most LINK_CV of their mean (a job expected to end soon
# then does), and never when other heads wait for room there.
LINK_LEAD = 0.3
LINK_CV = 0.25
LINK_MAX_MEAN = 60.0
# Trial links (SPEC §5, "Look-ahead"): before any job of the run has ended, nothing tells
# how long the jobs take, and a first wave of equal jobs ends all at once, each slot then
# waiting a round trip and a claim in the ledger for its next job. So a job started in this
# run and still running TRIAL_AFTER seconds later, with none ended, is linked its slot's
# next job all the same, on trial: if it has not ended TRIAL_SECONDS after its start (a
# sweep of long jobs), the linked job is taken back and queued again, attempts untouched.
TRIAL_AFTER = 0.2
TRIAL_SECONDS = 2.0
# ...on hosts whose starts take less than this (h.trip): where they take longer (a head
# swamped by a hundred hosts connecting, which hears ends seconds late), jobs long ended
# still look as if they ran, and their links would come too late.
TRIAL_TRIP = 0.5
# Seconds at most that the cycle collector stays off for a head's start (RunOptions.gc_held).
GC_HOLD = 1.0
# A new workdir's set-up (the pause settings file, dssh's scripts, the look at the ledger)
# goes with the host's first batch of starts, in its round trip (SPEC §5): if no batch
# takes it within PRELUDE_WAIT seconds of the host being ready, it goes on its own.
PRELUDE_WAIT = 0.05
PRELUDE_DONE = "DSSH-PRELUDE-DONE"
COLLECT_GATHER = 0.1
# How long a host's collection waits for the starts on their way, to it or to other hosts,
# at most: when many slots free at once, the next jobs start first and the results follow.
STARTS_FIRST = 0.25
GATHER_STEP = 0.004
# A job whose outputs and logs are no bigger than this comes home in its batch's one tar
# archive (held in memory on its way); bigger ones travel on their own, streamed.
BATCH_BYTES = 4 << 20


@attrs.define
class RunOptions:
    results: Path | None = None
    state_path: Path | None = None
    name: str | None = None
    hosts: list[str] | None = None
    accept_new_hostkeys: bool = False
    host_grace: float | None = None  # overrides every host's host_grace (tests)
    rerun_failed: bool = False  # queue FAILED, TIMEOUT and CANCELLED jobs again
    verify: bool = False  # compare SHA-256 of every collected file on both ends
    max_failures: int | None = None  # overrides the sweep's max_failures
    # The caller turned Python's cycle collector off for the start (``dssh run``: its
    # imports, the sweep, the connections and the first starts make many objects and few
    # cycles): the head turns it back on once its first starts are answered, or after
    # GC_HOLD seconds, whichever comes first.
    gc_held: bool = False


@attrs.define
class JobResult:
    name: str
    status: str
    host: str | None
    attempts: int
    exit_code: int | None
    # its parameters' names and values, shared with the planned job (a dict each cost a
    # sweep of 100,000 jobs some 30 MB more at its end): see ``params``
    keys: tuple[str, ...] = attrs.field(repr=False)
    values: tuple[Any, ...] = attrs.field(repr=False)
    root: Path = attrs.field(repr=False)  # the sweep's results dir, shared by its jobs

    @property
    def params(self) -> dict[str, Any]:
        """The job's parameters (a new dict at each call)."""
        return dict(zip(self.keys, self.values, strict=True))

    @property
    def results_dir(self) -> Path:
        """The job's own results dir."""
        return self.root / self.name


@attrs.define
class RunResult:
    sweep: str
    results_dir: Path
    jobs: list[JobResult]
    exit_code: int
    message: str = ""


def _each_granted(n: int, arms: str) -> str:
    """Shell: for each of the ``n`` claims the ledger granted (its decisions are in $o,
    one per line), the ``case $i in`` arm for it."""
    return ("i=0\nwhile IFS= read -r v; do\n"
            f"  [ $i -lt {n} ] || break\n"
            f"  case $v in ok*) case $i in\n{arms}  esac ;; esac\n"
            "  i=$((i + 1))\n"
            "done <<DSSH_O\n$o\nDSSH_O\n")


class _Avoid:
    """The hosts each job should avoid, looked up as the scheduler needs them."""

    def __init__(self, jobs: dict[int, JobRt]) -> None:
        self.jobs = jobs

    def get(self, job: int) -> set[str] | None:
        return self.jobs[job].avoid or None


class Reporter:
    """Receives what happens; the CLI prints it. The default says nothing."""

    def event(self, kind: str, message: str, **info: Any) -> None:
        pass

    def update(self, head: Head) -> None:
        pass


@attrs.define
class JobRt:
    """A job as the running head tracks it."""

    id: int
    planned: PlannedJob
    state: str
    attempts: int
    host: str | None = None
    remote_dir: str | None = None
    cpus: int = 0
    gpus: tuple[int, ...] = ()
    # hosts to try it elsewhere than; one empty set shared by all until it has some (a set
    # each would cost a sweep of 100,000 jobs some 20 MB)
    avoid: frozenset[str] = frozenset()
    busy: bool = False  # a dispatch or collection is in flight
    dispatched: float = 0.0  # monotonic time its current attempt was started
    judged: bool = False  # its current attempt counted towards its host's fail streak
    failure_counted: int = 0  # the attempt already counted towards max_failures
    finished_here: float = 0.0  # when this run collected its final attempt (for the ETA)
    cancel: bool = False  # `dssh cancel` asked for it while its start was in flight
    held: bool = False  # its cpus, gpus and slot are counted against its host
    retry_base: int = 0  # attempts made before its retries were last renewed
    ended: bool = False  # the watcher said it ended while its start was still being recorded
    uncollected: str = ""  # why its ended attempt could not be written to the results dir
    collect_fails: int = 0  # collections in a row the results dir refused
    start_fails: int = 0  # starts that failed on a host (not a host lost, not a full ledger)
    order: int = 0  # its place in the sweep: the queue is taken in this order
    next_id: int = -1  # the job handed over to follow it in its slot's chain
    queued: bool = False  # handed to its host in a chain, its turn not come yet
    linked: bool = False  # handed by a look-ahead link to the job before it, not a batch
    took: bool = False  # ...and its slot's wrapper said it took it (~took)
    fresh: bool = False  # started by this run in a batch, not yet linked a trial's next
    trial: bool = False  # linked on trial (TRIAL_AFTER): taken back if not started in time


@attrs.define
class HostRt:
    spec: Host
    conn: HostConnection | None = None
    status: str = "connecting"  # connecting, building, ready, failed, unreachable, lost
    detail: str = ""
    slots: HostSlots | None = None
    workdir: str = ""
    lost_since: float | None = None
    pconf: str = ""  # the host's pause settings file
    policy: Effective = attrs.Factory(Effective)  # its inventory entry and owners' files
    tz: int = 0  # its clock's offset from UTC, in minutes (for the owners' hours)
    activity: bool = False  # pause_when: the owner's activity is looked at there
    closed: bool = False  # outside the hours its owners allow dssh to start work
    policy_error: str = ""  # its owners' policy, read again during the run, is broken
    cpus_base: int = 1  # its cpus before its owners' policy (inventory, or probed)
    confs: set[str] = attrs.Factory(set)  # the pause settings files in its workdir
    hours_watch: asyncio.Task | None = None
    pause_files: list[str] = attrs.Factory(list)  # its patterns, ~ made absolute
    paused_until: float = 0.0
    paused_by: str = ""
    pause_watch: asyncio.Task | None = None
    fail_streak: list[int] = attrs.Factory(list)  # jobs that failed quickly here, in a row
    quarantined: bool = False
    given_back: set[int] = attrs.Factory(set)  # jobs whose attempt the quarantine returned
    streak_since: float = 0.0
    user: str = ""  # the login dssh uses there: the owner of its claims in the ledger
    ledger_token: str = ""  # the ledger's state when this head last looked
    ledger_watch: asyncio.Task | None = None
    waiting: bool = False  # queued jobs want room here that other heads hold
    registered: bool = False  # this head may be in the host's ledger as waiting
    full_noted: bool = False
    image: str = ""  # the sweep's container image, ready on the host
    tar: bool = False  # GNU tar there: outputs come home as one stream
    find_printf: bool = False  # GNU find there (-printf): jobs are collected in batches
    store: HostStore | None = None  # input files there, by content
    meter: Meter = attrs.Factory(Meter)  # bytes moved to and from the host
    # Collections at once from this host: enough to keep the link busy, while channels
    # stay free for starting jobs.
    collecting: asyncio.Semaphore = attrs.Factory(lambda: asyncio.Semaphore(COLLECTIONS))
    # Jobs placed here, waiting for the next batch of starts (one round trip each batch).
    # Each with the jobs that follow it in its slot's chain (SPEC §5), if any.
    to_start: list[tuple[JobRt, int, tuple[int, ...], list[JobRt]]] = attrs.Factory(list)
    starter: asyncio.Task | None = None
    start_inflight: int = 0  # batches of starts on their way
    # Ended jobs waiting for the next batch of collections.
    to_collect: list[JobRt] = attrs.Factory(list)
    collector: asyncio.Task | None = None
    # Look-ahead links to send (a running job, the job to follow it), one round trip each
    # batch.
    to_link: list[tuple[JobRt, JobRt]] = attrs.Factory(list)
    linker: asyncio.Task | None = None
    ended_at: int = 0  # the Head's count of ends heard when one was last heard here
    # How long a start or a link takes there, its round trip and the host's work (a moving
    # average): a link that would arrive after its job's expected end is not sent.
    trip: float = 0.0
    tidied: asyncio.Task | None = None  # its old marks being removed, once in a run
    recall: asyncio.TimerHandle | None = None  # when trial links are next due back
    # The set-up left for the first batch of starts to carry (see PRELUDE_WAIT): its
    # script, what it does (install, forget), set once it has run, and why it failed.
    prelude: str = ""
    prelude_does: tuple[bool, bool] = (False, False)
    prelude_done: asyncio.Event | None = None
    prelude_error: str = ""
    prelude_ran: bool = False  # its answer came (not so when the connection was lost)
    connections: int = 0  # made in this run: a set-up waited for belongs to one of them

    @property
    def hopeful(self) -> bool:
        """Could this host still take jobs in this run?"""
        return self.status in ("connecting", "building", "ready", "lost", "paused")


def capable_hosts(sweep: Sweep, inventory: Inventory, sweep_file: str | None = None) -> list[Host]:
    """Hosts that have what the sweep requires; ConfigError (exit 2) when none could take
    its jobs, judged from the inventory alone."""

    def where(*path: str) -> str:
        if not sweep_file:
            return f"sweep {sweep.name}"
        try:
            from .model.yamlload import key_line

            line = key_line(Path(sweep_file).read_text(), path)
        except OSError:
            line = None
        return f"{sweep_file}:{line}" if line else sweep_file

    need = set(sweep.needs)
    capable = [h for h in inventory.hosts.values() if need <= h.capabilities]
    if not capable:
        have = "; ".join(f"{h.name}: {', '.join(sorted(h.capabilities)) or 'none'}"
                         for h in inventory.hosts.values())
        raise ConfigError(
            f"{where('requires')}: requires: {', '.join(sorted(need))}, but no "
            f"host in the inventory ({inventory.source}) has all of them (capabilities: "
            f"{have}). Add them to a host's 'capabilities' or change 'requires'",
            key="requires")
    gpus = sweep.run.gpus
    if gpus and not any(len(h.gpus) >= gpus for h in capable):
        raise ConfigError(
            f"{where('run', 'gpus')}: run.gpus is {gpus}, but no capable host "
            f"in {inventory.source} lists that many GPUs: add 'gpus: [0, ...]' to a "
            "host, or lower run.gpus", key="run.gpus")
    cpus = sweep.run.cpus
    if cpus and all(h.cpus is not None and h.cpus < cpus for h in capable):
        raise ConfigError(
            f"{where('run', 'cpus')}: run.cpus is {cpus}, but every capable "
            f"host offers fewer cpus ({', '.join(f'{h.name}: {h.cpus}' for h in capable)}): "
            "lower run.cpus", key="run.cpus")
    # Hosts that could never take a job are not connected to at all.
    return [h for h in capable if len(h.gpus) >= gpus and (cpus is None or h.cpus is None
                                                            or h.cpus >= cpus)]


class Head:
    """Drives one sweep to its end."""

    def __init__(self, sweep: Sweep, inventory: Inventory, options: RunOptions | None = None,
                 reporter: Reporter | None = None, sweep_file: str | None = None) -> None:
        self.options = options or RunOptions()
        self._gc_held = self.options.gc_held
        if self.options.name:
            sweep = attrs.evolve(sweep, name=self.options.name)
        self.sweep = sweep
        self.inventory = inventory.select(self.options.hosts)
        self.reporter = reporter or Reporter()
        self.sweep_file = sweep_file
        self.planned = expand(sweep)
        self.build_id = build_id(sweep)
        results_root = self.options.results or Path(sweep.base_dir) / "results"
        self.results_dir = Path(results_root).resolve() / sweep.namespace / sweep.name
        self.state_path = Path(self.options.state_path or st.default_state_path())
        self._state: st.State | None = None  # opened once the run is known to be valid
        self._frozen = False  # prepare() froze what there was for the cycle collector
        self.lock = SweepLock(self.state_path, sweep.namespace, sweep.name)
        self.jobs: dict[int, JobRt] = {}
        self.by_name: dict[str, JobRt] = {}
        self._words: dict[str, str] = {}  # one copy of each state's and host's name
        self.in_order: list[JobRt] = []
        # Kept up to date as jobs move, so that nothing the loop does per event costs
        # time in proportion to the sweep's size: how many jobs are in each state, the
        # active jobs on each host, the first job in the queue, jobs asked to cancel.
        self.by_state: dict[str, int] = {}
        self.on_host: dict[str, set[int]] = {}
        self.cursor = 0
        self.cancelling: set[int] = set()
        self._last_checks = 0.0
        self.hosts: dict[str, HostRt] = {}
        self.wakeup = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()
        self.cleanups: set[asyncio.Future] = set()
        self.starting = 0  # job starts in flight: collections wait for them
        self._noted_all_paused = False
        self.last_success: dict[str, float] = {}  # host -> when a job last succeeded there
        self.started_all = asyncio.Event()
        self._input_items: dict[tuple, list[Item]] = {}
        # Jobs moved off a long pause, with what they saved (SPEC §6d): by job id.
        self.checkpointed: set[int] = set()
        self.fatal: DsshError | None = None
        self.started = time.time()
        self.sweep_id = 0
        self.failures = 0  # jobs failed for good in this run
        self.max_failures = self.options.max_failures or sweep.max_failures
        self.halted = False  # max_failures reached: no new starts
        self.first_failure: int | None = None  # the job that failed first in this run
        self.first_start = 0.0  # when this run started its first job (for the ETA)
        # Jobs of chains that have started, to be recorded as running (_record_handed).
        self.handed: list[tuple[HostRt, JobRt, int]] = []
        # Ends heard, and how many of them the scheduler had seen when it last placed jobs.
        self.ends = 0
        self.placed_at = 0
        # How long jobs took, start to end heard, in this run: how long a chain may be.
        self.ended_n = 0
        self.ended_secs = 0.0
        self.ended_sq = 0.0  # (their squares: how much they vary, for the look-ahead)
        self._link_timer: asyncio.TimerHandle | None = None
        # Who this head is, in the mark a collected run leaves on its host and in its
        # claims in the hosts' ledgers.
        self.machine = socket.gethostname()
        self.head_id = f"{getpass.getuser()}@{self.machine}:{self.results_dir}"

    @property
    def state(self) -> st.State:
        if self._state is None:
            self._state = st.State(self.state_path)
        return self._state

    def close(self) -> None:
        self._gc_back()
        if self._state is not None:
            self._state.close()
            self._state = None
        if self._frozen:
            self._frozen = False
            gc.unfreeze()

    def _gc_back(self) -> None:
        """The cycle collector on again, if the caller held it off for the start."""
        if self._gc_held:
            self._gc_held = False
            gc.enable()

    # -- set-up ---------------------------------------------------------------------------
    def check_hosts(self) -> list[Host]:
        return capable_hosts(self.sweep, self.inventory, self.sweep_file)

    def prepare(self) -> None:
        """Lock the sweep and bring the state file in line with the sweep file.

        The jobs made here live as long as the run. Python's cycle collector would look
        them all over again and again while they are made (with 100,000 jobs, 0.13 s more
        between the last "queued" event and the first connection), then at each of its full
        collections for the rest of the run: it waits while they are made, and what there
        is then is frozen out of its sight (``gc.freeze``) until ``close``."""
        was = gc.isenabled()
        gc.disable()
        try:
            self._prepare()
        finally:
            if was:
                gc.enable()
        gc.freeze()
        self._frozen = True

    def _prepare(self) -> None:
        self.lock.acquire()
        self.sweep_id = self.state.upsert_sweep(self.sweep.namespace, self.sweep.name,
                                                self.sweep_file or "", str(self.results_dir))
        by_name = {j.name: j for j in self.planned}
        # What the state holds of each job, in a few words: with a sweep of 100,000 jobs,
        # whole rows held at once cost the head's peak memory tens of MB. (id, state,
        # definition unchanged, place in the sweep)
        existing: dict[str, tuple[int, str, bool, int]] = {}
        words = self._words
        for r in self.state.each_job(self.sweep_id, "id, name, state, definition, seq"):
            pj = by_name.get(r[1])
            existing[r[1]] = (r[0], words.setdefault(r[2], r[2]),
                              pj is not None and r[3] == pj.definition, r[4])
        with self.state.tx() as db:
            for name, (jid, state, _, _) in existing.items():
                if name not in by_name and state not in st.ACTIVE_STATES:
                    db.execute("DELETE FROM jobs WHERE id=?", (jid,))
                    self.state.event(db, self.sweep_id, None, "removed", None, {"job": name})
            # New jobs go in at once, then their "queued" events in one statement: row by
            # row, 100,000 jobs took over two seconds more before the first host was
            # contacted. (Job ids are the table's next rowids, in the sweep's order.)
            before = db.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]
            new: list[tuple[int, int, str, str, str, str]] = []
            dumps, sid = json.dumps, self.sweep_id
            for pj in self.planned:
                row = existing.get(pj.name)
                if row is None:
                    new.append((sid, pj.index, pj.name, dumps(pj.params),
                                pj.definition, st.PENDING))
                    continue
                jid, state, same, seq = row
                if not same and state in st.FINISHED_STATES:
                    db.execute("UPDATE jobs SET definition=?, params=?, seq=?, state=?, "
                               "exit_code=NULL, reason=NULL WHERE id=?",
                               (pj.definition, json.dumps(pj.params), pj.index, st.PENDING,
                                jid))
                    self.state.event(db, self.sweep_id, jid, "requeued",
                                     detail={"why": "definition changed"})
                    self.reporter.event("warning", f"{pj.name}: its definition changed since it "
                                                   "ran; running it again")
                elif self.options.rerun_failed and state in (st.FAILED, st.TIMEOUT,
                                                             st.CANCELLED):
                    # A fresh set of retries; attempt numbers go on, so dirs never clash.
                    db.execute("UPDATE jobs SET seq=?, state=?, retry_base=attempts, "
                               "reason=NULL WHERE id=?", (pj.index, st.PENDING, jid))
                    self.state.event(db, self.sweep_id, jid, "requeued",
                                     detail={"why": "--rerun-failed"})
                elif seq != pj.index:  # (the sweep file's order changed)
                    db.execute("UPDATE jobs SET seq=? WHERE id=?", (pj.index, jid))
            if new:
                db.executemany("INSERT INTO jobs (sweep_id, seq, name, params, definition, "
                               "state) VALUES (?,?,?,?,?,?)", new)
                db.execute("INSERT INTO events (sweep_id, job_id, time, kind) SELECT ?, id, ?, "
                           "'queued' FROM jobs WHERE id > ? AND sweep_id = ? ORDER BY id",
                           (sid, time.time(), before, sid))
        jobs = self.jobs
        if not existing:
            # A sweep new to the state: every job is what was just written, PENDING and
            # never tried, and its id is the next rowid, in the order written. Only the ids
            # are read back (all of each row took a sweep of 100,000 jobs 0.3 s more before
            # the first host was contacted).
            pending = words.setdefault(st.PENDING, st.PENDING)
            ids = [r[0] for r in self.state.db.execute(
                "SELECT id FROM jobs WHERE sweep_id=? AND id>? ORDER BY id", (sid, before))]
            if len(ids) != len(new):
                raise DsshError(f"the state file {self.state.path} changed while this head "
                                "wrote it: run again")
            for jid, pj in zip(ids, self.planned, strict=True):
                jobs[jid] = JobRt(jid, pj, pending, 0)
        else:
            for (jid, name, state, attempts, host, remote_dir, cpus, gpus, retry_base) in \
                    self.state.each_job(self.sweep_id, "id, name, state, attempts, host, "
                                        "remote_dir, cpus, gpus, retry_base", rows=False):
                pj = by_name.get(name)
                if pj is None:
                    continue
                jobs[jid] = JobRt(  # (one copy of each state's and host's name, not one a job)
                    jid, pj, words.setdefault(state, state), attempts,
                    host and words.setdefault(host, host), remote_dir, cpus or 0,
                    tuple(json.loads(gpus)) if gpus else (), retry_base=retry_base)
        del existing, new
        self.by_name = {j.planned.name: j for j in self.jobs.values()}
        # The queue's order: higher priority first (run.priority), then the sweep's order.
        self.in_order = sorted(self.jobs.values(),
                               key=lambda j: (-j.planned.priority, j.planned.index))
        self._index()
        with contextlib.suppress(OSError):  # what jobs moved off a long pause carry along
            for d in (self.results_dir / ".checkpoints").iterdir():
                j = self.by_name.get(d.name)
                if j is not None and j.state not in st.FINISHED_STATES:
                    self.checkpointed.add(j.id)

    def _index(self) -> None:
        """(Re)build the counts and indexes kept as jobs move (see _move)."""
        self.by_state, self.on_host, self.cursor = {}, {}, 0
        for i, j in enumerate(self.in_order):
            j.order = i
            self.by_state[j.state] = self.by_state.get(j.state, 0) + 1
            if j.host and j.state in st.ACTIVE_STATES:
                self.on_host.setdefault(j.host, set()).add(j.id)

    def _move(self, job: JobRt, state: str | None = None, host: str | None = None) -> None:
        """Change a job's state and host, and the counts and indexes that follow them."""
        old_state, old_host = job.state, job.host
        new_state = old_state if state is None else state
        new_host = old_host if host is None else host
        if new_state != old_state:
            self.by_state[old_state] -= 1
            self.by_state[new_state] = self.by_state.get(new_state, 0) + 1
            job.state = new_state
            if new_state == st.PENDING:
                self.cursor = min(self.cursor, job.order)
        job.host = new_host
        was = old_host if old_state in st.ACTIVE_STATES else None
        now = new_host if new_state in st.ACTIVE_STATES else None
        if was != now:
            if was:
                self.on_host.get(was, set()).discard(job.id)
            if now:
                self.on_host.setdefault(now, set()).add(job.id)

    def _active_on(self, name: str) -> list[JobRt]:
        """The jobs this sweep has running (or starting, suspended) on a host."""
        return [self.jobs[i] for i in self.on_host.get(name, ())]

    # -- helpers ----------------------------------------------------------------------------
    def resume_command(self) -> str:
        """The command line that picks this sweep up again."""
        words = ["dssh", "run", self.sweep_file or self.sweep.key]
        if self.inventory.source.endswith((".yaml", ".yml")):
            words += ["-i", self.inventory.source]
        if self.options.name:
            words += ["--name", self.sweep.name]
        if self.options.results:
            words += ["--results", str(self.options.results)]
        return " ".join(q(w) for w in words)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.by_state.items() if v}

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task) -> None:
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None and self.fatal is None:
            exc = t.exception()
            self.fatal = exc if isinstance(exc, DsshError) else DsshError(
                f"internal error: {type(exc).__name__}: {exc}")
            self.fatal.__cause__ = exc
        self.wakeup.set()

    def _set(self, job: JobRt, kind: str, db: Any = None, **fields: Any) -> None:
        if fields.get("state") == st.RUNNING:
            fields.setdefault("reason", None)  # a running job waits for nothing
        if "state" in fields or "host" in fields:
            self._move(job, fields.get("state"), fields.get("host"))
        for k, v in fields.items():
            if k in ("attempts", "remote_dir", "cpus"):
                setattr(job, k, v)
        if "gpus" in fields:
            job.gpus = tuple(fields["gpus"])
            fields["gpus"] = json.dumps(list(fields["gpus"]))
        self.state.set_job(job.id, kind, db=db, sweep_id=self.sweep_id, **fields)
        self.reporter.update(self)

    def _job_dir(self, h: HostRt, job: JobRt, attempt: int) -> str:
        s = self.sweep
        return f"{h.workdir}/jobs/{s.namespace}/{s.name}/{job.planned.name}/{attempt}"

    def _events_rel(self) -> str:
        """The dir of this sweep's event logs, under a host's workdir."""
        return f"events/{self.sweep.namespace}"

    def _event_log(self, h: HostRt) -> str:
        return f"{h.workdir}/{self._events_rel()}/{self.sweep.name}.log"

    # -- hosts ------------------------------------------------------------------------------
    async def _connect(self, h: HostRt, first: bool = False) -> None:
        if h.prelude_done is not None:
            h.prelude_done.set()  # (those waiting for it see that the connection is new)
        h.prelude, h.prelude_done, h.prelude_error = "", None, ""
        h.prelude_ran = False
        h.connections += 1
        conn = make_connection(h.spec, accept_new_hostkeys=self.options.accept_new_hostkeys)
        # The home dir comes with the set-up's answer, not in a round trip of its own: with
        # a hundred hosts on a busy network each round trip is a wait.
        await conn.connect(learn_home=False)
        h.conn = conn
        names = ["wrapper", "watch", "ledger", "activity"]
        res = await conn.run(
            f"umask 077\nprintf 'home %s\\n' \"$HOME\"\n"
            f"w={expand_sh(h.spec.workdir)}; e=\"$w\"/{q(self._events_rel())}\n"
            # the workdir is this user's alone, whatever made it before (few processes:
            # with a hundred hosts, the set-up of each costs what its processes cost)
            '{ { [ -d "$w/bin" ] && [ -d "$e" ]; } || mkdir -p "$w/bin" "$e"; } '
            '&& chmod 700 "$w" || exit 3\n'
            "command -v setsid >/dev/null || echo nosetsid\n"
            # GNU tar and find there (batched collection): looked at once per boot
            + remote.tool_facts('"$w"/bin')
            # the login name as sshd set it (no process); id where it did not
            + 'u=${LOGNAME:-}; [ -n "$u" ] || u=$(id -un); echo "user $u"\n'
            + ("" if h.spec.cpus else
               "echo cpus $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)\n")
            + remote.install_check('"$w"/bin', names)
            # The pause settings files there already, the host's clock (for the owners'
            # hours), then its owners' policy files.
            + 'c=; for p in "$w"/pause-*.conf; do [ ! -e "$p" ] || c="$c ${p##*/}"; done\n'
            + 'echo "confs$c"\n'
            + "echo \"clock $(date '+%s %z')\"\necho '-- policy'\n"
            + policy.read_script(h.spec.policy_files, None)
            # The ledger, when its script is there already (see _forget).
            + f"l=\"$w\"/{q(_ledger_rel())}\n"
            + '[ -f "$l" ] && { echo "-- ledger"; '
            + f'sh "$l" forget {q(h.spec.ledger_dir)} {q(self.head_id)} "$u"; }}\n'
            + "exit 0\n",
            timeout=30)
        if not conn.home:
            said = next((ln[5:] for ln in res.text.splitlines() if ln.startswith("home ")), "")
            conn.home = said.strip() or "/"
        h.workdir = conn.expand(h.spec.workdir).rstrip("/")
        bin_dir = f"{h.workdir}/bin"
        if res.exit_status != 0:
            raise HostError(h.spec.name, f"cannot create the workdir {h.workdir}: "
                                         f"{res.stderr.decode(errors='replace').strip()}")
        cpus = h.spec.cpus
        missing: list[str] = []
        text, _, looked = res.text.partition("-- ledger\n")
        text, _, owners = text.partition("-- policy\n")
        for line in text.splitlines():
            word, _, rest = line.partition(" ")
            if word == "nosetsid":
                raise HostError(h.spec.name, "has no 'setsid' (util-linux): dssh needs it to "
                                             "run jobs detached")
            if word == "gnutar":
                h.tar = True
            if word == "findprintf":
                h.find_printf = True
            if word == "user":
                h.user = rest.strip()
            if word == "cpus" and cpus is None:
                with contextlib.suppress(ValueError):
                    cpus = int(rest)
            if word == "clock":
                h.tz = policy.parse_tz(rest.partition(" ")[2])
            if word == "confs":
                h.confs = set(rest.split())
            if word in names:
                missing.append(word)
        h.cpus_base = cpus or 1
        # The scripts missing there (a new workdir, or a new dssh) go in the round trip
        # that writes the pause settings file; so does the look at the ledger's claims
        # when its script was missing for it.
        install = remote.install(bin_dir, missing) if missing else ""
        forget = "" if looked else ledger.forget_command(
            self._ledger_script(h), h.spec.ledger_dir, self.head_id, h.user or "dssh")
        cpus, gpus, write = self._policy_conf(
            h, conn, policy.combine(h.spec, policy.parse_found(owners)))
        todo = write + install + forget
        if write:  # (written below, or with the first batch of starts)
            h.confs.add(h.pconf.rpartition("/")[2])
        # A new workdir on a host this run starts afresh: what is left to do goes with the
        # first batch of starts, in its round trip (see _settle_prelude).
        defer = bool(todo) and first and self._fresh_host(h)
        said = (await conn.run(todo, timeout=60)).text if todo and not defer else None
        h.store = HostStore(conn, h.workdir, copy=h.user == "root", meter=h.meter)
        h.slots = HostSlots(h.spec.name, cpus, h.spec.slots, gpus,
                            h.spec.capabilities, available=False)
        self._reserve_existing(h)
        if not forget:
            self._prelude_said(h, looked, (False, True))  # (looked at in the set-up)
        if defer:
            h.prelude, h.prelude_does = todo, (bool(install), bool(forget))
            h.prelude_done = asyncio.Event()
        elif said is not None:
            # No start of this head is in flight yet: claims it holds for unstarted runs
            # are from its earlier life, cut short ("forget"), in this round trip.
            self._prelude_said(h, said, (bool(install), bool(forget)))

    def _fresh_host(self, h: HostRt) -> bool:
        """May the host's set-up wait for its first batch of starts: no job of this sweep
        there to look at first, no build and no image to make first, jobs to start?"""
        return (self.build_id is None and self.sweep.run.container is None
                and not self.on_host.get(h.spec.name) and bool(self.by_state.get(st.PENDING)))

    def _prelude_said(self, h: HostRt, said: str, does: tuple[bool, bool]) -> None:
        """What the set-up's last part printed: scripts installed (HostError if not), the
        ledger as this head's earlier life left it."""
        install, forget = does
        if install and remote.INSTALL_FAILED in said.splitlines():
            why = said.partition(remote.INSTALL_FAILED)[0].strip()[-300:]
            raise HostError(h.spec.name, f"cannot write dssh's scripts into {h.workdir}/bin"
                                         + (f": {why}" if why else ""))
        if forget:
            led, _ = ledger.parse(said)
            if led.error:
                raise HostError(h.spec.name, f"cannot use its ledger: {led.error}")
            self._apply_ledger(h, led)

    async def _settle_prelude(self, h: HostRt) -> None:
        """Before the watcher starts (it runs an installed script): the set-up left for
        the first batch of starts has run, in that batch's round trip or, if no batch
        took it in time, on its own. HostError when it failed."""
        done = h.prelude_done
        assert done is not None
        end = time.monotonic() + PRELUDE_WAIT
        while h.prelude and time.monotonic() < end:
            await asyncio.sleep(GATHER_STEP)
        if h.prelude:  # no batch came for it
            todo, h.prelude = h.prelude, ""
            try:
                said = (await self._need_conn(h).run(todo, timeout=60)).text
                h.prelude_ran = True
                self._prelude_said(h, said, h.prelude_does)
            except HostUnreachable:
                raise  # (connected again, it is set up afresh)
            except HostError as e:
                h.prelude_error = str(e)
                raise
            finally:
                done.set()
        await done.wait()
        h.prelude_done = None
        if h.prelude_error:
            raise HostError(h.spec.name, h.prelude_error)
        if not h.prelude_ran:  # the batch that carried it lost the connection
            raise HostUnreachable(h.spec.name, "the connection was lost during its set-up")

    def _prelude_part(self, h: HostRt, res: Any) -> bytes | None:
        """Read the set-up's part of a first batch's answer; the rest, the starts' own
        output, or None when the set-up stopped the script before the starts (its error
        then in ``h.prelude_error``)."""
        before, marker, rest = res.stdout.partition(f"{PRELUDE_DONE}\n".encode())
        h.prelude_ran = True
        try:
            self._prelude_said(h, before.decode(errors="replace"), h.prelude_does)
        except HostError as e:
            h.prelude_error = str(e)
        if not marker:
            h.prelude_error = h.prelude_error or (
                "its set-up did not finish: "
                + (res.stderr.decode(errors="replace").strip()[-300:] or "no answer"))
            return None
        return rest

    @staticmethod
    def _need_conn(h: HostRt) -> HostConnection:
        if h.conn is None:
            raise HostUnreachable(h.spec.name, "connection lost")
        return h.conn

    # -- the owners' policies (SPEC §6b) ------------------------------------------------------
    async def _apply_policy(self, h: HostRt, conn: HostConnection, eff: Effective,
                            ) -> tuple[int, tuple[int, ...]]:
        """Make the host's pause settings file say what ``eff`` says; the cpus and GPUs it
        leaves dssh. HostError when it closes the host."""
        cpus, gpus, write = self._policy_conf(h, conn, eff)
        if write:
            await conn.run(write, timeout=30)
            h.confs.add(h.pconf.rpartition("/")[2])
        return cpus, gpus

    def _policy_conf(self, h: HostRt, conn: HostConnection, eff: Effective,
                     ) -> tuple[int, tuple[int, ...], str]:
        """What ``eff`` makes of the host: the cpus and GPUs it leaves dssh, and the script
        that writes its pause settings file, if not there yet (empty). HostError when it
        closes the host."""
        if eff.errors:
            raise HostError(h.spec.name, f"its owner's policy cannot be read, so dssh starts "
                                         f"nothing there until it is fixed: "
                                         f"{'; '.join(eff.errors)}")
        if eff.cpus == 0:
            raise HostError(h.spec.name, "its owners' policy allows dssh no cpus (cpus: 0 in "
                            + ", ".join(f.path for f in eff.files
                                        if f.policy and f.policy.cpus == 0) + ")")
        gpus = eff.allowed_gpus(h.spec.gpus)
        conf = remote.pause_conf(conn.home, h.spec.pause_files, eff.max_pause,
                                 h.spec.on_pause, eff.nice, h.spec.pause_when,
                                 f"{h.workdir}/bin/{remote.script('activity')[0]}",
                                 f"{h.workdir}/activity.state", gpus, h.spec.ledger_dir)
        name = f"pause-{hashlib.sha256(conf.encode()).hexdigest()[:12]}.conf"
        pconf = f"{h.workdir}/{name}"
        # (its name is its content's hash: one there already says the same)
        write = "" if name in h.confs else \
            f"[ -f {q(pconf)} ] || printf '%s' {q(conf)} > {q(pconf)}\n"
        h.pconf = pconf
        h.pause_files = [line[5:] for line in conf.splitlines() if line.startswith("file ")]
        h.activity = "\nactivity " in conf  # the owner's activity pauses it too (SPEC §6c)
        h.policy = eff
        return (h.cpus_base if eff.cpus is None else min(h.cpus_base, eff.cpus)), gpus, write

    async def _refresh_policy(self, h: HostRt) -> None:
        """Read the owners' files again: a changed policy holds for what starts from now
        on (running jobs keep their nice level and room); a broken one closes the host
        until it is fixed."""
        conn = h.conn
        if conn is None or h.slots is None or h.status not in ("ready", "paused", "failed"):
            return
        if h.status == "failed" and not h.policy_error:
            return  # failed for another reason (a build, a quarantine): stays so
        res = await conn.run(policy.read_script(h.spec.policy_files, conn.home), timeout=30)
        eff = policy.combine(h.spec, policy.parse_found(res.text))
        if eff == h.policy and not h.policy_error:
            return
        try:
            cpus, gpus = await self._apply_policy(h, conn, eff)
        except HostError as e:
            if h.policy_error != str(e):
                h.policy_error = str(e)
                h.status, h.detail = "failed", h.policy_error
                h.slots.available = False
                self.reporter.event("host", f"excluded: {e}; its running jobs go on",
                                    host=h.spec.name)
                self._record_host(h)
                self.wakeup.set()
            return
        h.slots.cpus, h.slots.gpus = cpus, gpus
        if h.policy_error:
            h.policy_error, h.status, h.detail = "", "ready", ""
            h.slots.available = not h.closed
        self.reporter.event("host", f"{h.spec.name}: its owners' policy is now: "
                                    f"{eff.describe()}", host=h.spec.name)
        self._record_host(h)
        self._check_hours(h)
        self.wakeup.set()

    # -- the ledger shared with other heads (SPEC §6a) ----------------------------------------
    def _ledger_script(self, h: HostRt) -> str:
        return f"{h.workdir}/{_ledger_rel()}"

    def _apply_ledger(self, h: HostRt, led: ledger.Ledger) -> None:
        """Take what other heads hold on the host, and its capacity in force, from a look
        at its ledger."""
        if led.token:
            h.ledger_token = led.token
        if h.slots is None:
            return
        foreign = led.foreign({c.dir for c in led.claims if self._holds(h, c)})
        s = h.slots
        s.foreign_cpus = sum(c.cpus for c in foreign)
        s.foreign_jobs = len(foreign)
        s.foreign_gpus = {g for c in foreign for g in c.gpus}
        s.ledger_cpus, s.ledger_slots, s.ledger_gpus = led.cap_cpus, led.cap_slots, led.cap_gpus

    def _holds(self, h: HostRt, c: ledger.Claim) -> bool:
        """Is this claim this head's own: for one of its active jobs on the host, for the
        job's current attempt and run dir? (Found by the claim's job, not by scanning
        every job: this runs at every start.)"""
        if c.head != self.head_id or c.kind != "job":
            return False
        name, _, attempt = c.job.rpartition(".")
        j = self.by_name.get(name)
        # Held or not: a look at the ledger may be older than what the head knows. A job
        # heard ending (its room given back) may still hold its claim in that look, and a
        # chain's wrapper that moved on names the next job of its chain before the head
        # hears of the move. Neither is another head's room. (A job queued again, with a
        # wrapper that may still run there, is not ours to count: its claim stays foreign.)
        return (j is not None and j.state in st.ACTIVE_STATES and j.host == h.spec.name
                and str(j.attempts) == attempt and j.remote_dir == c.dir)

    def _job_need(self, h: HostRt) -> tuple[int, int]:
        """The cpus and GPUs one job of this sweep takes on the host."""
        assert h.slots is not None
        return self.sweep.run.cpus or h.slots.limit_cpus, self.sweep.run.gpus

    def _claim_command(self, h: HostRt, run_dir: str, job: str, kind: str, cpus: int,
                       gpus: tuple[int, ...]) -> tuple[str, str]:
        """The command that claims room for a run in the host's ledger, and the claim's path."""
        assert h.slots is not None
        name = ledger.claim_name(h.user or "dssh", run_dir)
        cmd = ledger.claim_command(
            self._ledger_script(h), h.spec.ledger_dir, name=name, head=self.head_id,
            user=h.user or "dssh", machine=self.machine, sweep=self.sweep.key, job=job,
            kind=kind, cpus=cpus, gpus=gpus, cap_cpus=h.slots.cpus, cap_slots=h.spec.slots,
            cap_gpus=h.slots.gpus, run_dir=run_dir)
        return cmd, f"{h.spec.ledger_dir}/c-{name}"

    def _refused(self, h: HostRt, led: ledger.Ledger, build: bool = False) -> None:
        """The ledger had no room for us: wait until it changes before trying again."""
        self._apply_ledger(h, led)
        h.registered = True
        if h.slots is not None and not build:
            h.slots.blocked = True
        if not h.full_noted:
            h.full_noted = True
            who = sorted({f"{c.user} ({c.sweep})" for c in led.foreign(set())
                          if c.head != self.head_id})
            why = "another head has waited longer" if led.verdict == "yield" else "it is full"
            self.reporter.event("host", f"{h.spec.name}: waiting for room "
                                        f"{'to build ' if build else ''}({why}; held by "
                                        f"{', '.join(who) or 'this sweep'})", host=h.spec.name)
        if not build:
            self._want_room(h)

    def _want_room(self, h: HostRt) -> None:
        h.waiting = True
        if h.ledger_watch is None or h.ledger_watch.done():
            h.ledger_watch = self._spawn(self._ledger_watch(h))

    async def _wait_for_room(self, h: HostRt) -> bool:
        """Stand in the host's ledger queue until the ledger changes (at most ~2 s), then
        take the new look. False when the host could not be asked."""
        assert h.conn is not None and h.slots is not None
        cpus, gpus = self._job_need(h)
        res = await h.conn.run(ledger.wait_command(
            self._ledger_script(h), h.spec.ledger_dir, h.ledger_token, head=self.head_id,
            user=h.user or "dssh", sweep=self.sweep.key, cpus=cpus, gpus=gpus), timeout=60)
        h.registered = True
        led, _ = ledger.parse(res.text)
        if led.error:
            return False
        self._apply_ledger(h, led)
        return True

    async def _ledger_watch(self, h: HostRt) -> None:
        """While queued jobs want room that other heads hold here, stand in the host's
        queue and look again as soon as its ledger changes."""
        while h.waiting and h.conn is not None and h.slots is not None and not self._finished():
            try:
                if not await self._wait_for_room(h):
                    return
            except HostError:
                return  # the host is gone: its task reconnects, and looks again
            h.slots.blocked = False
            h.waiting = False  # the scheduler says again whether we still wait
            self.wakeup.set()
            await asyncio.sleep(0.05)

    async def _unwait(self, h: HostRt) -> None:
        h.registered = False
        if h.conn is not None:
            with contextlib.suppress(HostError):
                await h.conn.run(ledger.unwait_command(self._ledger_script(h),
                                                       h.spec.ledger_dir, self.head_id,
                                                       h.user or "dssh"), timeout=30)

    async def host_main(self, h: HostRt) -> None:
        """Connect, re-attach, build, then watch for ended jobs; reconnect if the host drops."""
        first = True
        delay = 1.0
        while True:
            try:
                if h.conn is None:
                    if h.status != "unreachable":
                        h.status = "connecting" if first else "lost"
                    await self._connect(h, first)
                    self.reporter.event("host", f"{h.spec.name}: connected", host=h.spec.name)
                    delay = 1.0
                    h.lost_since = None
                    await self._settle_strays(h)
                    if first:  # in the background; the run waits for it before it ends
                        tidy = asyncio.ensure_future(self._retire_leftovers(h))
                        self.cleanups.add(tidy)
                        tidy.add_done_callback(self.cleanups.discard)
                await self._reattach(h)
                if h.status != "ready":
                    await self._build(h)
                if h.status == "failed":
                    return
                if self.sweep.run.container is not None and not h.image:
                    await self._prepare_image(h)
                h.status = "ready"
                assert h.slots is not None
                self._check_hours(h)
                h.slots.available = not h.closed
                self.wakeup.set()
                self.reporter.update(self)
                if h.prelude_done is not None:
                    await self._settle_prelude(h)
                await self._watch(h)
                if self._finished():
                    return
                raise HostUnreachable(h.spec.name, "the watcher stopped")
            except HostUnreachable as e:
                if h.slots is not None:
                    h.slots.available = False
                if h.conn is not None:
                    with contextlib.suppress(Exception):
                        await h.conn.close()
                    h.conn = None
                on_host = [j for j in self.jobs.values()
                           if j.host == h.spec.name and j.state in st.ACTIVE_STATES]
                if h.status == "unreachable" or (first and not on_host):
                    # Unreachable from the start, or lost for good: no job waits for it, but
                    # it is looked for now and then, to take jobs again (and to stop what an
                    # earlier head left there) once it is back.
                    if h.status != "unreachable":
                        h.status, h.detail = "unreachable", str(e)
                        self.reporter.event("host", f"unreachable: {e}", host=h.spec.name)
                    self.wakeup.set()
                    await asyncio.sleep(delay if h.lost_since is not None else UNREACHABLE_RETRY)
                    delay = min(delay * 2, 30.0)
                    continue
                now = time.monotonic()
                if h.lost_since is None:
                    h.lost_since = now
                    self.reporter.event("host", f"lost: {e}; reconnecting", host=h.spec.name)
                h.status, h.detail = "lost", str(e)
                if now - h.lost_since > self._grace(h):
                    self._requeue_lost(h)
                    h.status = "unreachable"
                    self.reporter.event("host", f"{h.spec.name}: gone for over "
                                                f"{self._grace(h):.0f}s; its jobs are requeued; "
                                                "still looking for it", host=h.spec.name)
                self.wakeup.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except (HostError, OSError) as e:
                h.status, h.detail = "failed", str(e)
                if h.slots is not None:
                    h.slots.available = False
                self.reporter.event("host", f"excluded: {e}", host=h.spec.name)
                self.wakeup.set()
                return
            finally:
                first = False

    def _grace(self, h: HostRt) -> float:
        return self.options.host_grace if self.options.host_grace is not None \
            else h.spec.host_grace

    def _requeue_lost(self, h: HostRt) -> None:
        for j in self.jobs.values():
            if j.host == h.spec.name and j.state in st.ACTIVE_STATES:
                # Recorded first: the copy that may live on there is stopped once it is back.
                self.state.set_attempt(j.id, j.attempts, st.ABANDONED, "host lost")
                j.held = False  # the host's slots are counted afresh when it is back
                if j.queued:  # handed over in a chain, not started: nothing is in flight
                    j.busy = j.queued = j.linked = False
                j.next_id = -1
                self._set(j, "requeued", state=st.PENDING,
                          reason=f"host {h.spec.name} lost for over "
                                 f"{self._grace(h):.0f}s")
                j.avoid |= {h.spec.name}
                self.reporter.event("job", f"{j.planned.name}: requeued, {h.spec.name} is gone")

    async def _watch(self, h: HostRt) -> None:
        """Follow the host's event log: one line per job that ended, as it ends."""
        assert h.conn is not None
        fname, _ = remote.script("watch")
        script = f"exec sh {q(h.workdir + '/bin/' + fname)} {q(self._event_log(h))}\n"
        ticker = asyncio.ensure_future(self._tick(h))
        try:
            async for line in h.conn.stream(script):
                if line == "READY":
                    # Jobs that ended before the watcher listened are found by looking.
                    self._spawn(self._reattach_quietly(h))
                    continue
                what, _, rest = line.strip().partition(" ")
                if what in ("~suspend", "~resume", "~paused"):
                    name, _, attempt = rest.rpartition(".")
                    self._on_pause_event(h, what, name, attempt)
                    continue
                if what == "~withdrawn":
                    name, _, attempt = rest.rpartition(".")
                    self._withdrawn(h, name, attempt)
                    continue
                if what == "~took":
                    name, _, attempt = rest.rpartition(".")
                    b = self.by_name.get(name)
                    if (b is not None and b.host == h.spec.name and b.queued
                            and str(b.attempts) == attempt):
                        b.took = True
                    continue
                head, _, rc = line.strip().partition(" ")
                name, _, attempt = head.rpartition(".")
                if name:
                    self._on_end(h, name, attempt, rc)
                if self._finished():
                    return
        finally:
            ticker.cancel()

    async def _tick(self, h: HostRt) -> None:
        """A slow safety net: catch an end the watcher missed. And the owners' policies
        are read again, so a changed one holds within seconds."""
        while True:
            await asyncio.sleep(RECONCILE_EVERY)
            await self._reattach_quietly(h)
            with contextlib.suppress(HostError):
                await self._refresh_policy(h)

    def _on_end(self, h: HostRt, name: str, attempt: str, rc: str = "") -> None:
        j = self.by_name.get(name)
        if j is None or j.host != h.spec.name or str(j.attempts) != attempt:
            return
        if rc.lstrip("-").isdigit():
            took = time.monotonic() - j.dispatched
            if j.dispatched:
                # Only jobs this head started tell how long jobs take: one it found running
                # (left by a head before it) has no start time here, and counted from
                # none would make every job look days long: no chains, no look-ahead.
                self.ended_n += 1
                self.ended_secs += took
                self.ended_sq += took * took
            # Judge the host before its slot is handed out again (see _judge_host).
            self._judge_host(h, j, int(rc) == 0, took)
            if int(rc) != 0 and j.attempts - j.retry_base > self.sweep.run.retries:
                # Failed for good: counted now, before the slot takes another job.
                self._count_failure(j)
        self._chain_next(h, j)  # the slot goes on to the next job of its chain, if any
        self._release(h, j)  # its processes are gone: the next job may start now
        self.ends += 1
        h.ended_at = self.ends
        if j.state in (st.RUNNING, st.SUSPENDED) and not j.busy:
            j.busy = True
            self._spawn(self._collect(h, j))
        elif j.state == st.STARTING:
            j.ended = True

    def _chain_next(self, h: HostRt, j: JobRt, heard: bool = True) -> None:
        """The job has ended: the next of its chain has started in its slot (the wrapper
        takes it before it tells of the end), or is being given back (~withdrawn)."""
        if j.next_id < 0:
            return
        b = self.jobs.get(j.next_id)
        j.next_id = -1
        if b is None or not b.queued or b.host != h.spec.name:
            return
        if b.linked and not b.took:
            if not heard:
                # The end was found by looking (the watch was away): whether the wrapper
                # took it is unknown. A look at its dir settles it, as for any run whose
                # start was cut short: followed if launched, else taken back and queued.
                b.busy = b.queued = b.linked = False
                return
            # Linked while the job ran, not taken: the wrapper closed the slot first, or
            # gave it back; the link's answer (or ~withdrawn) settles it.
            return
        self._hand_on(h, j, b)

    def _hand_on(self, h: HostRt, j: JobRt, b: JobRt) -> None:
        """The slot of ``j``, which has ended, went on to ``b`` on the host."""
        b.queued = b.linked = b.took = False
        if j.held:  # the slot passes on: its room is not given back in between
            j.held, b.held = False, True
        else:
            self._hold(h, b)
        b.dispatched, b.judged = time.monotonic(), False
        # Recorded with the others handed on in the same moment, in one transaction: a
        # stream of short jobs would otherwise cost the head a commit each.
        if not self.handed:
            asyncio.get_running_loop().call_soon(self._record_handed)
        self.handed.append((h, b, b.attempts))

    def _record_handed(self) -> None:
        """Record the jobs of chains that started since the last time as running."""
        handed, self.handed = self.handed, []
        with self.state.tx() as db:
            for h, b, attempt in handed:
                # (not if given back meanwhile, or requeued with its host lost)
                if b.state == st.STARTING and b.host == h.spec.name and b.attempts == attempt:
                    self._started(h, b, attempt, 0, db=db)

    def _withdrawn(self, h: HostRt, name: str, attempt: str) -> None:
        """A wrapper gave back a job of its chain, not started (its host is paused): the
        job is queued again, as if never started; its dir is gone already."""
        j = self.by_name.get(name)
        if (j is None or j.host != h.spec.name or str(j.attempts) != attempt
                or j.state not in (st.STARTING, st.RUNNING)):
            return
        attempt = j.attempts
        self._unstart(h, j, attempt, undo=True)
        with self.state.tx() as db:
            self.state.event(db, self.sweep_id, j.id, "given-back", h.spec.name,
                             {"attempt": attempt, "why": "its host is paused"})
        self.reporter.event("job", f"{j.planned.name}: given back by {h.spec.name} before "
                                   "it started there (the host is paused); queued again",
                            job=j.planned.name)
        self.wakeup.set()

    def _on_pause_event(self, h: HostRt, what: str, name: str, attempt: str) -> None:
        j = self.by_name.get(name)
        if what in ("~suspend", "~paused") and h.status != "paused":
            self._spawn(self._check_pause(h))  # learn by which file, until when
        if j is None or j.host != h.spec.name or str(j.attempts) != attempt:
            return
        if what == "~suspend" and j.state == st.RUNNING:
            self._set(j, "suspended", state=st.SUSPENDED)
            self.reporter.event("job", f"{name}: SUSPENDED, {h.spec.name} is paused")
        elif what == "~resume" and j.state == st.SUSPENDED:
            self._set(j, "resumed", state=st.RUNNING)
            self.reporter.event("job", f"{name}: resumed on {h.spec.name}")

    # -- pause ------------------------------------------------------------------------------
    def _host_paused(self, h: HostRt, state: str, building: bool = False) -> None:
        """The host's owner paused it: nothing new starts there until they are done."""
        until, _, by = state.partition(" ")
        with contextlib.suppress(ValueError):
            h.paused_until = float(until)
        h.paused_by = by
        if h.status != "paused":
            h.status = "paused"
            when = format_until(h.paused_until) if h.paused_until else "?"
            self.reporter.event("host", f"{h.spec.name}: paused by {by} until {when}",
                                host=h.spec.name)
            self._record_host(h)
        if h.slots is not None:
            h.slots.available = False
        if not building and (h.pause_watch is None or h.pause_watch.done()):
            h.pause_watch = self._spawn(self._watch_pause(h))
        self._all_paused_note()

    def _host_free(self, h: HostRt, building: bool = False) -> None:
        if h.status == "paused":
            h.status = "building" if building else "ready"
            h.paused_until, h.paused_by = 0.0, ""
            self.reporter.event("host", f"{h.spec.name}: no longer paused", host=h.spec.name)
            self._record_host(h)
        if h.slots is not None and not building:
            h.slots.available = not h.closed
        self.wakeup.set()

    # -- the owners' hours (SPEC §6b) -----------------------------------------------------
    def _check_hours(self, h: HostRt) -> None:
        """Open or close the host to new work by its owners' hours; a task follows them."""
        if not h.policy.hours:
            return
        now = policy.host_now(h.tz)
        closed = not h.policy.open_at(now)
        if closed != h.closed:
            h.closed = closed
            hours = " and ".join(h.policy.hours_text)
            if closed:
                nxt = h.policy.next_change(now)
                h.detail = (f"outside the hours its owners allow ({hours})"
                            + (f" until {nxt:%a %H:%M}" if nxt else ""))
                self.reporter.event("host", f"{h.spec.name}: {h.detail}: nothing new starts "
                                            "there; running jobs go on", host=h.spec.name)
            else:
                h.detail = ""
                self.reporter.event("host", f"{h.spec.name}: within its owners' hours "
                                            f"({hours}) again", host=h.spec.name)
            self._record_host(h)
            if h.slots is not None:
                h.slots.available = not closed and h.status == "ready"
            self.wakeup.set()
        if h.hours_watch is None or h.hours_watch.done():
            h.hours_watch = self._spawn(self._watch_hours(h))

    async def _watch_hours(self, h: HostRt) -> None:
        while h.policy.hours:
            now = policy.host_now(h.tz)
            nxt = h.policy.next_change(now)
            wait = 60.0 if nxt is None else (nxt - now).total_seconds()
            await asyncio.sleep(min(max(wait, 0.2), 60.0))
            if h.status in ("failed", "unreachable"):
                continue
            self._check_hours(h)

    async def _check_pause(self, h: HostRt) -> bool:
        """Ask the host now; True if it is paused."""
        if h.conn is None:
            return False
        wrapper, _ = remote.script("wrapper")
        try:
            res = await h.conn.run(f"sh {q(h.workdir + '/bin/' + wrapper)} --pause-state "
                                   f"{q(h.pconf)}\n", timeout=30)
        except HostError:
            return False
        word, _, rest = res.text.strip().partition(" ")
        if word == "paused":
            self._host_paused(h, rest)
            return True
        return False

    async def _watch_pause(self, h: HostRt) -> None:
        """While the host is paused, look every few seconds whether it is free again."""
        while h.status == "paused" and h.conn is not None:
            await asyncio.sleep(PAUSE_POLL)
            if h.status != "paused" or h.conn is None:
                return
            if not await self._check_pause(h):
                if h.conn is not None:
                    self._host_free(h)
                return

    def _all_paused_note(self) -> None:
        hopeful = [h for h in self.hosts.values() if h.hopeful]
        if hopeful and all(h.status == "paused" for h in hopeful) and not self._noted_all_paused:
            self._noted_all_paused = True
            who = ", ".join(f"{h.spec.name} (by {h.paused_by})" for h in hopeful)
            self.reporter.event("host", f"every capable host is paused by its owner: {who}; "
                                        "jobs wait until one is free")
        elif not all(h.status == "paused" for h in hopeful):
            self._noted_all_paused = False

    def _record_host(self, h: HostRt) -> None:
        with contextlib.suppress(Exception):
            self.state.set_host(h.spec.name, h.status, h.paused_by or None,
                                h.paused_until or None, h.detail or None)

    async def _reattach_quietly(self, h: HostRt) -> None:
        with contextlib.suppress(HostError):
            await self._reattach(h, quiet=True)

    async def _reattach(self, h: HostRt, quiet: bool = False) -> None:
        """Find out what became of jobs this sweep has on the host (left by a previous head)."""
        assert h.conn is not None
        mine = [j for j in self._active_on(h.spec.name) if not j.busy and j.remote_dir]
        if not mine:
            return
        asked = [(j.attempts, j.remote_dir) for j in mine]
        res = await h.conn.run(remote.inspect([j.remote_dir for j in mine]), timeout=60)
        back: list[int] = []  # indices into mine of runs to take back, in one round trip
        for line in res.text.splitlines():
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit() or int(parts[0]) >= len(mine):
                continue
            j, what = mine[int(parts[0])], parts[1]
            # Only what is still true after the round trip counts: the job may have been
            # collected (and its dir removed) or restarted while the host answered.
            if (j.busy or j.state not in st.ACTIVE_STATES or j.host != h.spec.name
                    or (j.attempts, j.remote_dir) != asked[int(parts[0])]):
                continue
            if what == "ended":
                j.busy = True
                if j.state != st.RUNNING:
                    self._set(j, "running", state=st.RUNNING)
                self._spawn(self._collect(h, j))
            elif what == "suspended":
                if j.state != st.SUSPENDED:
                    self._set(j, "suspended", state=st.SUSPENDED)
            elif what in ("running", "starting"):
                if j.state != st.RUNNING:
                    self._set(j, "reattached", state=st.RUNNING)
                elif not quiet:
                    self.reporter.event("job", f"{j.planned.name}: re-attached on {h.spec.name}")
            elif what == "claimed" and not self._own_claim(line):
                pass  # another head's start of it is in flight: look again later
            elif what == "collected":
                self._taken_elsewhere(h, j, line.split(None, 2)[2] if len(parts) > 2 else "?")
            elif what in ("missing", "new", "claimed"):
                # Never launched (a claim of our own is from a start cut short, or a run
                # handed over in a chain that an earlier life of this head left): safe to
                # start again, under the same attempt number, once taken back from any
                # wrapper that could still take it (O_EXCL, see remote.withdraw).
                if what == "missing":
                    self._start_again(h, j)
                else:
                    back.append(int(parts[0]))
            elif what == "lost" and parts[2:3] != ["reboot"]:
                # Same boot, wrapper gone without an exit code: killed from outside (kill -9
                # of its session, the out-of-memory killer). A failure like any other: its
                # leftovers are stopped, it is collected as exit 137 and retried if it may.
                j.busy = True
                try:
                    await h.conn.run(remote.mark_killed(j.remote_dir), timeout=60)
                except HostError:
                    j.busy = False
                    continue
                self._spawn(self._collect(h, j))
            elif what == "lost":  # the host rebooted: not the job's fault
                self._release(h, j)
                self.state.set_attempt(j.id, j.attempts, st.ABANDONED, "host rebooted")
                self._spawn(self._settle_strays_quietly(h))  # clears its dir
                if j.attempts - j.retry_base > self.sweep.run.retries + LOST_AGAIN:
                    # A job that brings its host down every time is not requeued forever.
                    self._set(j, "failed", state=st.FAILED, exit_code=None,
                              reason=f"its host rebooted under attempt {j.attempts}; "
                                     "no attempts left")
                    self.reporter.event("job", f"{j.planned.name}: FAILED, {h.spec.name} "
                                               "rebooted under it again")
                    continue
                self._set(j, "requeued", state=st.PENDING,
                          reason=f"{h.spec.name} rebooted while it ran")
                self.reporter.event("job", f"{j.planned.name}: lost on {h.spec.name} (it "
                                           "rebooted); requeued")
        if back:
            gone = await self._take_back(h, [mine[i].remote_dir for i in back])
            for i, taken in zip(back, gone, strict=True):
                j = mine[i]
                if (j.busy or j.state not in st.ACTIVE_STATES or j.host != h.spec.name
                        or (j.attempts, j.remote_dir) != asked[i]):
                    continue  # (changed while the host answered: what is true now counts)
                if taken:
                    self._start_again(h, j)
                elif j.state != st.RUNNING:  # a chain's wrapper launched it first
                    self._set(j, "reattached", state=st.RUNNING)
        self.wakeup.set()

    def _start_again(self, h: HostRt, j: JobRt) -> None:
        """A run never launched: back to the queue, to start again under the same attempt."""
        self._release(h, j)
        self._set(j, "requeued", state=st.PENDING, attempts=max(0, j.attempts - 1),
                  reason="its start was interrupted")

    async def _take_back(self, h: HostRt, jdirs: list[str]) -> list[bool]:
        """Take runs never launched back from their host (their dirs removed), in one round
        trip: for each, False when a chain's wrapper launched it first, or the host could not
        be asked."""
        if h.conn is None:  # lost meanwhile
            return [False] * len(jdirs)
        try:
            res = await h.conn.run(remote.withdraw(jdirs), timeout=60)
        except HostError:
            return [False] * len(jdirs)
        gone = [False] * len(jdirs)
        for line in res.text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < len(jdirs):
                gone[int(parts[0])] = parts[1] == "gone"
        return gone

    async def _settle_strays_quietly(self, h: HostRt) -> None:
        with contextlib.suppress(HostError):
            await self._settle_strays(h)

    async def _settle_strays(self, h: HostRt) -> None:
        """Deal with copies of jobs the head gave up on while ``h`` was gone (SPEC §7:
        never two live copies, exactly one result). A job not started elsewhere yet takes
        its old copy back; any other old copy is stopped and its dir removed."""
        if h.conn is None:  # lost again before its turn came: settled after reconnecting
            raise HostUnreachable(h.spec.name, "connection lost")
        rows = self.state.abandoned(self.sweep_id, h.spec.name)
        if not rows:
            return
        res = await h.conn.run(remote.inspect([r["remote_dir"] for r in rows]), timeout=60)
        seen: dict[int, str] = {}
        for line in res.text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                seen[int(parts[0])] = "new" if self._own_claim(line) else parts[1]
        stop = []
        for i, r in enumerate(rows):
            what = seen.get(i, "missing")
            j = self.jobs.get(r["job_id"])
            current = j is not None and j.attempts == r["attempt"]
            if current and j.host == h.spec.name and j.state in st.ACTIVE_STATES:
                # Still the job's own attempt (a head died between two records).
                self.state.set_attempt(j.id, j.attempts, st.RUNNING)
            elif (current and j.state == st.PENDING and not j.busy
                  and what in ("running", "suspended", "ended", "starting")):
                # Not restarted elsewhere yet: the old copy is the job's again.
                self.state.set_attempt(j.id, j.attempts, st.RUNNING)
                self._set(j, "reattached", state=st.RUNNING, host=h.spec.name,
                          remote_dir=r["remote_dir"], reason=None)
                self._hold(h, j)
                self.reporter.event("job", f"{j.planned.name}: its copy on {h.spec.name} is "
                                           "back; re-attached", job=j.planned.name)
            elif what in ("missing", "collected"):
                self.state.set_attempt(r["job_id"], r["attempt"], st.STOPPED)
            elif what == "claimed":
                continue  # a start by another head is in flight: looked at next time
            else:
                stop.append(r)
        if not stop:
            return
        from .cancel import kill_script

        await h.conn.run(kill_script([r["remote_dir"] for r in stop], remove=True), timeout=120)
        with self.state.tx() as db:
            for r in stop:
                db.execute("UPDATE attempts SET state=? WHERE id=?", (st.STOPPED, r["id"]))
                self.state.event(db, self.sweep_id, r["job_id"], "stray-stopped", h.spec.name,
                                 {"attempt": r["attempt"], "remote_dir": r["remote_dir"]})
        for r in stop:
            j = self.jobs.get(r["job_id"])
            where = (f"its result came from {j.host}" if j and j.state == st.COMPLETED
                     else "the job runs elsewhere" if j and j.state in st.ACTIVE_STATES
                     else "")
            self.reporter.event("job", f"{r['job']}: stopped and removed an old copy (attempt "
                                       f"{r['attempt']}) on {h.spec.name}"
                                       f"{'; ' + where if where else ''}", job=r["job"])

    def _own_claim(self, line: str) -> bool:
        """Is this ``inspect`` line a dir claimed by this head (a start of ours cut short)?"""
        parts = line.split(None, 2)
        return parts[1:2] == ["claimed"] and parts[2:] == [self.head_id]

    def _reserve_existing(self, h: HostRt) -> None:
        """Count jobs a previous head left running here against the host's capacity."""
        for j in self._active_on(h.spec.name):
            self._hold(h, j)

    def _hold(self, h: HostRt, j: JobRt) -> None:
        """Count a job already on the host against the host's cpus, GPUs and slots."""
        if h.slots is not None:
            h.slots.used_cpus += j.cpus
            h.slots.running += 1
            h.slots.busy_gpus.update(j.gpus)
            j.held = True

    def _release(self, h: HostRt | None, j: JobRt) -> None:
        if j.held and h is not None and h.slots is not None:
            h.slots.give_back(j.cpus, j.gpus)
        j.held = False
        self.wakeup.set()

    # -- builds -----------------------------------------------------------------------------
    async def _build(self, h: HostRt) -> None:
        assert h.conn is not None and h.slots is not None
        if self.build_id is None:
            h.status = "ready"
            return
        if h.policy.hours and not h.policy.open_at(policy.host_now(h.tz)):
            # A build is work too: it waits for the hours its owners allow.
            self._check_hours(h)  # says so; a task follows the hours
            while h.closed and h.conn is not None:
                await asyncio.sleep(0.5)
        h.status = "building"
        self.reporter.update(self)
        conn = h.conn
        bdir = f"{h.workdir}/builds/{self.build_id}"
        ctl = f"{bdir}/.dssh"
        with self.state.tx() as db:  # `dssh logs --build` reads it from the host meanwhile
            db.execute("INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?)",
                       (self.sweep_id, h.spec.name, self.build_id, "BUILDING", time.time()))
        while True:
            what = await self._start_build(h, conn, bdir, ctl)
            rc = await self._wait_build(conn, bdir)
            if rc is not None:
                break
            await asyncio.sleep(1)  # claimed long ago, never started (its head died): again
        await self._build_done(h, conn, bdir, ctl, what, rc)

    async def _start_build(self, h: HostRt, conn: HostConnection, bdir: str, ctl: str) -> str:
        """Claim the build dir and start the build, or learn it is cached or under way."""
        claim = await conn.run(
            f"mkdir -p {q(h.workdir + '/builds')} || exit 3\n"
            f"b={q(bdir)}; c={q(ctl)}; me={q(self.head_id)}\n" + r"""
if [ -f "$c/exit_code" ] && [ "$(cat "$c/exit_code")" = 0 ]; then echo cached; exit 0; fi
claim() { mkdir "$c" && printf '%s\n' "$me" > "$c/claim" && echo claimed; }
if mkdir "$b" 2>/dev/null; then claim; exit 0; fi
if [ ! -s "$c/exit_code" ] && [ -f "$c/pid" ] && kill -0 "$(cat "$c/pid")" 2>/dev/null; then
    echo busy; exit 0
fi
if [ ! -f "$c/launched" ] && [ "$(cat "$c/claim" 2>/dev/null)" != "$me" ]; then
    # claimed moments ago by another head: its start is on the way
    m=$(stat -c %Y "$c" 2>/dev/null || stat -c %Y "$b" 2>/dev/null || echo 0)
    [ $(( $(date +%s) - m )) -lt """ + str(remote.CLAIM_STALE) + r""" ] && { echo busy; exit 0; }
fi
rm -rf "$b" && mkdir "$b" && claim
""", timeout=120)
        what = claim.text.strip()
        if what == "claimed":
            self.reporter.event("build", f"{h.spec.name}: building", host=h.spec.name)
            await conn.run(f"mkdir -p {q(ctl)}\n", timeout=30)
            assert self.sweep.build is not None
            for f in self.sweep.build.files:
                local = str(Path(self.sweep.base_dir, os.path.expanduser(f.path)))
                await conn.put(local, f"{bdir}/{f.target}")
            env = {"DSSH_SWEEP": self.sweep.name, "DSSH_NAMESPACE": self.sweep.namespace,
                   "DSSH_BUILD": bdir, "DSSH_PYTHON": h.spec.python, **h.spec.env}
            # A build command has no placeholders, but {{ and }} stand for braces, as in
            # run commands.
            command = render(self.sweep.build.command, {}, quote=False)
            await conn.write_file(f"{ctl}/command.sh", remote.command_script(
                bdir, env, command, merge_stderr=True).encode(), 0o600)
            wrapper, _ = remote.script("wrapper")
            # A build takes what one job of the sweep takes, claimed like one.
            cpus = self._job_need(h)[0]
            while True:
                claim_cmd, claim = self._claim_command(h, bdir, "build", "build", cpus, ())
                res = await conn.run(
                    f"o=$({claim_cmd}); printf '%s\\n' \"$o\"\n"
                    "case $o in ok*) ;; *) exit 0 ;; esac\n"
                    + remote.launch(f"{h.workdir}/bin/{wrapper}", bdir, 0, "", "", h.pconf,
                                    claim=claim), timeout=30)
                led, after = ledger.parse(res.text)
                if led.error:
                    raise HostError(h.spec.name, f"its ledger: {led.error}")
                if led.verdict != "ok":
                    self._refused(h, led, build=True)
                    await self._wait_for_room(h)
                    continue
                self._apply_ledger(h, led)
                h.registered = h.full_noted = False
                word, _, rest = "\n".join(after).strip().partition(" ")
                if word != "paused":
                    break
                self._host_paused(h, rest, building=True)
                await asyncio.sleep(PAUSE_POLL)
            if h.status == "paused":
                self._host_free(h, building=True)
        elif what == "cached":
            self.reporter.event("build", f"{h.spec.name}: build {self.build_id} is cached",
                                host=h.spec.name)
        elif what == "busy":
            self.reporter.event("build", f"{h.spec.name}: waiting for a build another head "
                                         "started", host=h.spec.name)
        else:
            raise HostError(h.spec.name, f"cannot prepare the build dir {bdir}: "
                                         f"{claim.stderr.decode(errors='replace').strip()}")
        return what

    async def _wait_build(self, conn: HostConnection, bdir: str) -> int | None:
        """The build's exit code once it ends; None if its dir was abandoned unstarted."""
        while True:
            res = await conn.run(remote.inspect([bdir]), timeout=30)
            parts = res.text.split()
            if len(parts) >= 3 and parts[1] == "ended":
                return int(parts[2])
            if len(parts) >= 2 and parts[1] in ("lost", "missing"):
                return -1
            if len(parts) >= 2 and parts[1] == "new":
                return None
            await asyncio.sleep(0.25)  # claimed by another head, which starts it soon

    async def _build_done(self, h: HostRt, conn: HostConnection, bdir: str, ctl: str,
                          what: str, rc: int) -> None:
        try:
            log = await conn.read_file(f"{ctl}/stdout.txt")
        except (FileNotFoundError, HostError):
            log = b""
        header = (f"# build {self.build_id} on {h.spec.name} ({bdir})\n"
                  f"# command: {render(self.sweep.build.command, {}, quote=False) if self.sweep.build else ''}\n"
                  f"# exit code: {rc}{' (reused from cache)' if what == 'cached' else ''}\n")
        logfile = self.results_dir / f"build-{h.spec.name}.log"
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            tmp = logfile.with_name(f".{logfile.name}.tmp")
            tmp.write_bytes(header.encode() + log)
            os.replace(tmp, logfile)
        except OSError as e:
            self.reporter.event("warning", f"{h.spec.name}: cannot write the build log "
                                           f"{logfile}: {e.strerror or e}; it stays in {ctl}")
        with self.state.tx() as db:
            db.execute("INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?)",
                       (self.sweep_id, h.spec.name, self.build_id,
                        "COMPLETED" if rc == 0 else "FAILED", time.time()))
            self.state.event(db, self.sweep_id, None, "build", h.spec.name,
                             {"build": self.build_id, "exit_code": rc})
        if rc != 0:
            h.status = "failed"
            h.detail = f"build failed (exit {rc}); log: {logfile}"
            self.reporter.event("build", f"{h.spec.name}: build FAILED (exit {rc}), host "
                                         f"excluded; log in {logfile}", host=h.spec.name)
        else:
            h.status = "ready"
            if what == "claimed":
                self.reporter.event("build", f"{h.spec.name}: build done", host=h.spec.name)

    # -- container images ---------------------------------------------------------------------
    async def _prepare_image(self, h: HostRt) -> None:
        """Upload the sweep's image once per host (cached by content): a .sif as it is, a
        root filesystem for bwrap as a tar archive that is unpacked there."""
        import tarfile
        import tempfile

        from .plan import files_digest

        c = self.sweep.run.container
        assert c is not None and h.conn is not None
        conn = h.conn
        local = Path(self.sweep.base_dir, os.path.expanduser(c.image))
        key = json.dumps([files_digest([(str(local), local.name)]), c.runtime, c.mounts])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        final = f"{h.workdir}/images/{digest}"
        name = local.name if c.runtime == "apptainer" else "rootfs.tar"
        h.image = {"bwrap": f"{final}/rootfs", "apptainer": f"{final}/{name}",
                   "podman": f"localhost/dssh-{digest}"}[c.runtime]
        res = await conn.run(f"[ -f {q(final + '/.ready')} ] && echo ready\n", timeout=30)
        if res.text.strip() == "ready":
            await self._podman_image(h, final)
            return
        self.reporter.event("build", f"{h.spec.name}: uploading the image {c.image}",
                            host=h.spec.name)
        tmp = f"{final}.tmp{os.getpid()}"
        await conn.run(f"rm -rf {q(tmp)}; mkdir -p {q(tmp)}\n", timeout=60)
        if c.runtime != "apptainer" and local.is_dir():
            with tempfile.TemporaryDirectory() as td:
                tar = Path(td) / name
                with tarfile.open(tar, "w") as tf:  # symlinks stay symlinks
                    tf.add(local, arcname=".")
                await conn.put(str(tar), f"{tmp}/{name}")
        else:
            await conn.put(str(local), f"{tmp}/{name}")
        res = await conn.run(remote.prepare_image(tmp, final, c.runtime, name, c.mounts),
                             timeout=600)
        if res.exit_status != 0:
            h.image = ""
            raise HostError(h.spec.name, f"cannot prepare the image {c.image}: "
                                         f"{res.stderr.decode(errors='replace').strip()}")
        await self._podman_image(h, final)

    async def _podman_image(self, h: HostRt, final: str) -> None:
        c = self.sweep.run.container
        if c is None or c.runtime != "podman" or h.conn is None:
            return
        res = await h.conn.run(remote.podman_image(f"{final}/image.tar", h.image), timeout=600)
        if res.exit_status != 0:
            image, h.image = h.image, ""
            raise HostError(h.spec.name, f"podman cannot import the image {image}: "
                                         f"{res.stderr.decode(errors='replace').strip()}")

    # -- dispatch ---------------------------------------------------------------------------
    def _starts_answered(self, n: int) -> None:
        """``n`` starts have had their answer (or failed): when none is left on its way,
        say so, and the start is over for the cycle collector too (RunOptions.gc_held)."""
        self.starting -= n
        if not self.starting:
            self.started_all.set()
            self._gc_back()

    async def _dispatch(self, h: HostRt, job: JobRt, cpus: int, gpus: tuple[int, ...]) -> None:
        self.starting += 1
        try:
            done, gen = h.prelude_done, h.connections
            if done is not None:  # the host's set-up goes first (see _settle_prelude)
                await done.wait()
            if (h.prelude_error or h.conn is None or gen != h.connections
                    or (done is not None and not h.prelude_ran)):
                # (excluded, lost, or connected anew meanwhile): back to the queue
                self._release(h, job)
                job.busy = False
                return
            await self._dispatch_inner(h, job, cpus, gpus)
        finally:
            self._starts_answered(1)

    async def _dispatch_inner(self, h: HostRt, job: JobRt, cpus: int,
                              gpus: tuple[int, ...]) -> None:
        assert h.conn is not None
        conn = h.conn
        attempt = job.attempts + 1
        jdir = self._job_dir(h, job, attempt)
        job.dispatched, job.judged = time.monotonic(), False
        self._set(job, "starting", state=st.STARTING, attempts=attempt, host=h.spec.name,
                  remote_dir=jdir, cpus=cpus, gpus=gpus, exit_code=None, reason=None)
        with self.state.tx() as db:
            db.execute("INSERT OR REPLACE INTO attempts (job_id, attempt, host, remote_dir, "
                       "state, started) VALUES (?,?,?,?,?,?)",
                       (job.id, attempt, h.spec.name, jdir, st.STARTING, time.time()))
        claim = ""
        try:
            script = self._command_script(h, job, cpus, gpus, attempt, jdir)
            name = f"{job.planned.name}.{attempt}"
            claim_cmd, claim = self._claim_command(h, jdir, name, "job", cpus, gpus)
            launch = remote.launch(self._wrapper(h), jdir, self._timeout(), self._event_log(h),
                                   name, h.pconf, None if h.activity else h.pause_files, claim,
                                   self._migrate(h))
            files = self._inputs(job.planned.files) if job.planned.files else []
            if job.id in self.checkpointed:
                files = files + await asyncio.to_thread(self._checkpoint_items, job)
            # Without input files, claiming room in the host's ledger, making the dir and
            # starting the job is one round trip. Creating .dssh/ claims the dir: it fails
            # if this attempt was started before.
            res = await conn.run(
                f"o=$({claim_cmd}); printf '%s\\n' \"$o\"\n"
                "case $o in ok*) ;; *) exit 0 ;; esac\n"
                f"mkdir -p {q(jdir)} || exit 3\n"
                f"mkdir {q(jdir + '/.dssh')} 2>/dev/null || "
                f"{{ rm -f {q(claim)}; echo exists; exit 0; }}\n"
                # Only once the dir is ours: a run another head took leaves just its mark.
                f"mkdir -p {q(jdir + '/input')} {q(jdir + '/outputs')} || exit 3\n"
                f"printf '%s\\n' {q(self.head_id)} > {q(jdir + '/.dssh/claim')}\n"
                f"printf '%s' {q(script)} > {q(jdir + '/.dssh/command.sh')} || exit 3\n"
                + ("echo made\n" if files else launch), timeout=60)
            led, after = ledger.parse(res.text)
            if led.error:
                raise HostError(h.spec.name, f"its ledger: {led.error}")
            if led.verdict != "ok":
                # Other heads hold the room: back to the queue, as if never started.
                self.state.undo_start(job.id, attempt)
                self._release(h, job)
                self._move(job, st.PENDING)
                job.attempts = attempt - 1
                job.busy = False
                self._refused(h, led)
                self.reporter.update(self)
                return
            self._apply_ledger(h, led)
            h.registered = h.full_noted = False
            res = attrs.evolve(res, stdout="\n".join(after).encode())
            if res.text.strip() == "exists":
                self._follow(h, job, attempt)
                await self._reattach(h, quiet=True)
                return
            if res.exit_status != 0:
                raise HostError(h.spec.name, f"cannot create {jdir}: "
                                             f"{res.stderr.decode(errors='replace').strip()}")
            if files:
                keep = self._spawn(self._keep_claim(conn, claim))
                try:
                    assert h.store is not None
                    await h.store.lay_out(files, f"{jdir}/input")
                    res = await conn.run(launch, timeout=60)
                finally:
                    keep.cancel()
            word, _, rest = res.text.strip().partition(" ")
            if word == "paused":
                # The owner has the machine: give the job back to the queue, wait for them.
                self._host_paused(h, rest)
                self._release(h, job)
                self._set(job, "requeued", state=st.PENDING, attempts=attempt - 1,
                          reason=f"{h.spec.name} is paused")
                job.busy = False
                with contextlib.suppress(HostError):
                    await conn.run(f"rm -rf {q(jdir)}\n", timeout=60)
                return
            if word != "started":
                raise HostError(h.spec.name, f"could not start the job: {res.text.strip()} "
                                             f"{res.stderr.decode(errors='replace').strip()}")
            pid = int(rest or 0)
        except HostUnreachable:
            # Whether it started is unknown: the job stays STARTING and is checked on reconnect.
            job.busy = False
            return
        except (HostError, ValueError) as e:
            self._start_failed(h, job, attempt, e)
            with contextlib.suppress(HostError):
                await conn.run(f"rm -rf {q(jdir)}; rm -f {q(claim)}\n", timeout=60)
            return
        self._started(h, job, attempt, pid)

    def _command_script(self, h: HostRt, job: JobRt, cpus: int, gpus: tuple[int, ...],
                        attempt: int, jdir: str) -> str:
        """The job's ``command.sh``: its environment and its rendered command."""
        bdir = f"{h.workdir}/builds/{self.build_id}" if self.build_id else jdir
        c = self.sweep.run.container
        if c is None:
            kw = dict(cpus=cpus, gpus=gpus, build=bdir, input_dir=f"{jdir}/input",
                      output_dir=f"{jdir}/outputs", attempt=attempt)
        else:  # the paths the job sees inside its image
            kw = dict(cpus=cpus, gpus=gpus, build="/build", input_dir="/input",
                      output_dir="/outputs", attempt=attempt)
        command = job_command(self.sweep, job.planned, **kw)
        env = job_env(self.sweep, job.planned,
                      host_env={"DSSH_PYTHON": h.spec.python, **h.spec.env}, **kw)
        if c is not None:
            command = remote.in_container(c.runtime, h.image, command, c.mounts,
                                          bdir if self.build_id else None, list(env))
        return remote.command_script(jdir, env, command)

    def _wrapper(self, h: HostRt) -> str:
        return f"{h.workdir}/bin/{remote.script('wrapper')[0]}"

    def _timeout(self) -> int:
        timeout = self.sweep.run.timeout_seconds
        return int(timeout) if timeout else 0

    # -- starting jobs in batches --------------------------------------------------------
    async def _start_batches(self, h: HostRt) -> None:
        """Start the jobs placed on the host, as many as wait at once in one round trip:
        while one batch is on its way, the next one gathers. With short jobs the batches
        grow with the rate jobs end at, so the cost per start falls as the load rises."""
        while h.to_start:
            await self._gather(h, START_GATHER)  # the other slots freed by the same ends
            batch, h.to_start = h.to_start[:START_BATCH], h.to_start[START_BATCH:]
            h.start_inflight += 1
            try:
                await self._start_batch(h, batch)
            finally:
                h.start_inflight -= 1
                self._starts_answered(sum(1 + len(b[3]) for b in batch))

    async def _gather(self, h: HostRt, most: float) -> None:
        """Let a batch wait up to ``most`` seconds for more of its kind, while jobs that
        could still end run on the host. Jobs that started together mostly end together:
        once the last of them has ended (a wave of equal jobs, say), waiting longer
        gains nothing."""
        end = time.monotonic() + most
        # ...and until the scheduler has placed jobs in the slots the last end freed (it
        # runs in its own task: without this a wave's last end missed its batch).
        while self._may_end_soon(h) or self.placed_at < h.ended_at:
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, GATHER_STEP))

    def _may_end_soon(self, h: HostRt) -> bool:
        """Could more jobs end on the host? Not when every job this sweep has there has
        ended already: the jobs being started or collected are busy."""
        return any(not self.jobs[i].busy for i in self.on_host.get(h.spec.name, ()))

    async def _start_batch(self, h: HostRt,
                           batch: list[tuple[JobRt, int, tuple[int, ...], list[JobRt]]]
                           ) -> None:
        """One round trip starts a batch of jobs without input files: a look at the
        owner's pause files, one claim in the host's ledger for each slot, their dirs,
        and each slot's wrapper, detached. A slot may be handed a chain: the jobs that
        follow its first get their dirs and commands, and are started there, one after
        the other, by the slot's wrapper (SPEC §5)."""
        conn = h.conn
        if conn is None or h.slots is None:  # lost meanwhile: back to the queue
            for job, _, _, follow in batch:
                self._release(h, job)
                job.busy = False
                for f in follow:
                    f.busy = f.queued = False
            return
        now = time.time()
        starts = []  # (job, cpus, gpus, attempt, jdir), the chains' members in order
        chains: list[list[int]] = []  # indices into starts, the first one starting now
        for job, cpus, gpus, follow in batch:
            chains.append([])
            for member in [job, *follow]:
                attempt = member.attempts + 1
                chains[-1].append(len(starts))
                starts.append((member, cpus, gpus, attempt, self._job_dir(h, member, attempt)))
        # A chain's later jobs wait on the host behind the one before them: `dssh status`
        # shows them as queued there, with that job's name.
        after = {i: starts[members[k - 1]][0].planned.name
                 for members in chains for k, i in enumerate(members) if k}
        with self.state.tx() as db:
            for i, (job, cpus, gpus, attempt, jdir) in enumerate(starts):
                # From now on its end may be heard, even before the answer to its start.
                job.dispatched, job.judged = time.monotonic(), False
                self._record_starting(db, h, job, attempt, jdir, cpus, gpus, now,
                                      after.get(i))
        for members in chains:
            for a, b in itertools.pairwise(members):
                starts[a][0].next_id = starts[b][0].id
            # A job alone in its slot may be linked a next job on trial (TRIAL_AFTER).
            starts[members[0]][0].fresh = len(members) == 1
        user = h.user or "dssh"
        requests, funcs, claims, made, took = [], [], [], [], []
        wrapper, timeout, log = self._wrapper(h), self._timeout(), self._event_log(h)
        migrate = self._migrate(h)
        for c, members in enumerate(chains):
            job, cpus, gpus, attempt, jdir = starts[members[0]]
            name = f"{job.planned.name}.{attempt}"
            cname = ledger.claim_name(user, jdir)
            claim = f"{h.spec.ledger_dir}/c-{cname}"
            claims.append(claim)
            requests.append(ledger.claims_request(cname, name, "job", cpus, gpus, jdir))
            # The chain's later members first, the last one first: each learns the run
            # that follows it (nx) before its own predecessor is written.
            body = ["  nx=; qd=\n"]
            for i in reversed(members[1:]):
                m_job, _, _, m_attempt, m_dir = starts[i]
                ctl = f"{m_dir}/.dssh"
                script = self._command_script(h, m_job, cpus, gpus, m_attempt, m_dir)
                body.append(
                    f"  case $mine in *\" {i} \"*)\n"
                    f"    if printf '%s' {q(script)} >| {q(ctl + '/command.sh')}; then\n"
                    f"      [ -z \"$nx\" ] || printf '%s\\n' \"$nx\" >| {q(ctl + '/next')}\n"
                    f"      nx={q(m_dir + chr(10) + m_job.planned.name + '.' + str(m_attempt))}\n"
                    f"      qd=\"$qd {i}\"; echo 'queued {i}'\n"
                    f"    else echo 'failed {i}'; fi ;;\n"
                    "  esac\n")
            i0 = members[0]
            ctl = f"{jdir}/.dssh"
            script = self._command_script(h, job, cpus, gpus, attempt, jdir)
            orphans = "for x in $qd; do echo \"orphan $x\"; done"
            body.append(
                f"  case $mine in *\" {i0} \"*) ;; *) {orphans}; return ;; esac\n"
                f"  printf '%s' {q(script)} >| {q(ctl + '/command.sh')} || "
                f"{{ rm -f {q(claim)}; echo 'failed {i0}'; {orphans}; return; }}\n"
                f"  [ -z \"$nx\" ] || printf '%s\\n' \"$nx\" >| {q(ctl + '/next')}\n"
                f"  printf '' >| {q(ctl + '/launched')}\n"
                f"  {remote.start_wrapper(wrapper, jdir, timeout, log, name, h.pconf, claim, migrate)}"
                f"  echo \"started {i0} $!\"\n")
            funcs.append(f"k{c}() {{\n" + "".join(body) + "}\n")
            # (case arms, not functions: a function's "set --" would not reach "$@")
            made.append(f"  {c}) set -- \"$@\" "
                        + " ".join(q(starts[i][4] + "/.dssh") for i in members) + " ;;\n")
            # A dir is ours if we create its claim mark (O_EXCL: set -C); a start of this
            # attempt made before (by another head, or by an earlier life of this one) has
            # made it already. Only then do its input/ and outputs/ exist.
            arm = [f"  {c}) ch=\"$ch {c}\"\n"]
            for i in members:
                m_dir = starts[i][4]
                gone = f"rm -f {q(claim)}; " if i == i0 else ""
                arm.append(
                    f"    if printf '%s\\n' {q(self.head_id)} > {q(m_dir + '/.dssh/claim')} "
                    f"2>/dev/null; then\n"
                    f"      set -- \"$@\" {q(m_dir + '/input')} {q(m_dir + '/outputs')}; "
                    f"mine=\"$mine {i} \"\n"
                    f"    else {gone}echo 'exists {i}'; fi\n")
            took.append("".join(arm) + "  ;;\n")
        # A quick look for pause files first; the owner's activity needs the wrapper.
        pause = "true" if h.activity else \
            remote.any_pause_file(h.pause_files) if h.pause_files else "false"
        claim_cmd = ledger.claims_command(
            self._ledger_script(h), h.spec.ledger_dir, head=self.head_id, user=user,
            machine=self.machine, sweep=self.sweep.key, cap_cpus=h.slots.cpus,
            cap_slots=h.spec.slots, cap_gpus=h.slots.gpus)
        n = len(chains)
        script = (
            "".join(funcs) + remote.DETACH + remote.pause_gate(pause, wrapper, h.pconf)
            + f"o=$({claim_cmd} <<'DSSH_CLAIMS'\n{''.join(requests)}DSSH_CLAIMS\n)\n"
            "printf '%s\\n' \"$o\"\n"
            "echo DSSH-STARTS\n"
            # the control dirs of the claims granted, made in one go; then each claimed
            # for this head (or found taken); then the others of those it got, in one go
            "set --\n"
            + _each_granted(n, "".join(made))
            + '[ $# = 0 ] || mkdir -p "$@" || { echo mkdir-failed; exit 0; }\n'
            "set -C; set --; mine=; ch=\n"
            + _each_granted(n, "".join(took))
            + '[ $# = 0 ] || mkdir -p "$@" || { echo mkdir-failed; exit 0; }\n'
            "for c in $ch; do \"k$c\"; done\n")
        # The host's set-up, left for its first batch (see _settle_prelude), goes first.
        prelude, h.prelude = h.prelude, ""
        done = h.prelude_done if prelude else None
        if prelude:
            script = prelude + f"echo {PRELUDE_DONE}\n" + script
        try:
            sent = time.monotonic()
            res = await conn.run(script, timeout=60)
            self._timed(h, sent)
            if prelude:
                rest = self._prelude_part(h, res)
                if rest is None:
                    # The set-up stopped the script (dssh's scripts could not be written):
                    # nothing started; the host is excluded (_settle_prelude says why).
                    for job, _, _, attempt, _ in starts:
                        self._unstart(h, job, attempt, undo=True)
                    return
                res = attrs.evolve(res, stdout=rest)
        except HostUnreachable:
            # Whether they started is unknown: they stay STARTING, checked on reconnect.
            for job, *_ in starts:
                job.busy = job.queued = False
                job.next_id = -1
            return
        except HostError as e:
            if done is not None:
                h.prelude_error = h.prelude_error or str(e)
            res = None
            error = str(e)
        finally:
            if done is not None:
                done.set()
        text = res.text if res is not None else ""
        first = text.strip().partition("\n")[0]
        if first.startswith("paused "):
            # The owner has the machine: give the jobs back to the queue, wait for them.
            self._host_paused(h, first.partition(" ")[2])
            for job, _, _, attempt, _ in starts:
                self._unstart(h, job, attempt, reason=f"{h.spec.name} is paused")
            return
        head_text, _, after = text.partition("DSSH-STARTS\n")
        verdicts, led, _ = ledger.parse_many(head_text, n)
        if res is not None and led.error:
            error = f"its ledger: {led.error}"
        elif res is not None and "mkdir-failed" in after:
            error = f"cannot create the job dirs: {res.stderr.decode(errors='replace').strip()}"
        elif res is not None:
            error = ""
        if led.token:
            self._apply_ledger(h, led)
        outcome: dict[int, list[str]] = {}
        for line in after.splitlines():
            f = line.split()
            if len(f) >= 2 and f[1].isdigit():
                outcome[int(f[1])] = f
        chain_of = {i: c for c, members in enumerate(chains) for i in members}
        undo: list[str] = []  # what starts that did not happen left on the host
        with self.state.tx() as db:
            self._start_outcomes(h, starts, chains, chain_of, verdicts, outcome, error,
                                 after, claims, db, undo)
        for members in chains:
            # The chain as the host made it: its first job, if started, then those queued.
            # A job of the chain that did not join it there (its dir there already, say)
            # is no job's next: a link left to it would hand it, queued later in another
            # chain, to this one's wrapper, which never runs it, and it would wait forever.
            if len(members) > 1:
                jobs = [starts[i][0] for i in members]
                live = [j for i, j in zip(members, jobs, strict=True)
                        if (outcome.get(i) or [""])[0] in ("started", "queued")]
                follows = {a.id: b.id for a, b in itertools.pairwise(live)}
                planned = {a.id: b.id for a, b in itertools.pairwise(jobs)}
                ids = {j.id for j in jobs}
                live_ids = {j.id for j in live}
                for j in jobs:
                    if j.next_id in ids:  # (not handed over already)
                        j.next_id = follows.get(j.id, -1)
                # A job that ended before this answer came handed its slot on at once, to
                # the job planned after it. Where that one did not join the chain, the
                # slot's wrapper went on to the next one that did: it is handed on now.
                for a, c in itertools.pairwise(live):
                    # (by id: comparing jobs would compare every field of theirs)
                    x = planned.get(a.id)
                    if (a.next_id < 0 and x is not None and x not in live_ids and c.queued
                            and c.state == st.STARTING and c.host == h.spec.name):
                        self._hand_on(h, a, c)
        refused = any(c < len(verdicts) and verdicts[c][0] in ("full", "yield")
                      for c in range(n)) and not error
        again = any((outcome.get(i) or [""])[0] == "exists" for i in range(len(starts)))
        if refused:
            led.verdict = next(v for v, _ in verdicts if v != "ok")
            self._refused(h, led)
        if undo:
            with contextlib.suppress(HostError):
                await conn.run("rm -rf -- " + " ".join(q(x) for x in undo) + "\n", timeout=60)
        if again:
            await self._reattach(h, quiet=True)
        self.reporter.update(self)

    def _record_starting(self, db: Any, h: HostRt, job: JobRt, attempt: int, jdir: str,
                         cpus: int, gpus: tuple[int, ...], now: float,
                         after: str | None) -> None:
        """Record a start on its way (a batch's, or a link's): STARTING, with its attempt;
        one handed to follow ``after`` in its slot is noted "queued on HOST after JOB"."""
        self._set(job, "starting", db=db, state=st.STARTING, attempts=attempt,
                  host=h.spec.name, remote_dir=jdir, cpus=cpus, gpus=gpus, exit_code=None,
                  reason=f"{st.QUEUED_ON}{h.spec.name} after {after}" if after else None)
        db.execute("INSERT OR REPLACE INTO attempts (job_id, attempt, host, remote_dir, "
                   "state, started) VALUES (?,?,?,?,?,?)",
                   (job.id, attempt, h.spec.name, jdir, st.STARTING, now))

    def _start_outcomes(self, h: HostRt, starts: list, chains: list[list[int]],
                        chain_of: dict[int, int], verdicts: list[tuple[str, str]],
                        outcome: dict[int, list[str]], error: str, after: str,
                        claims: list[str], db: Any, undo: list[str]) -> None:
        """What became of each start of a batch, recorded in one transaction."""
        for i, (job, _, _, attempt, jdir) in enumerate(starts):
            c = chain_of[i]
            first = chains[c][0] == i
            verdict = verdicts[c][0] if c < len(verdicts) else ""
            got = (outcome.get(i) or [""])[0]
            if not first and got in ("", "failed", "orphan") and not job.queued:
                continue  # already given back, or followed, by what its host said since
            if not first:
                job.queued = got == "queued" and job.queued
            if verdict in ("full", "yield") and not error:
                # Other heads hold the room: back to the queue, as if never started.
                self._unstart(h, job, attempt, undo=True, db=db)
            elif verdict == "error" and not error:
                if first:
                    self._start_failed(h, job, attempt, f"its ledger: {verdicts[c][1]}",
                                       db=db)
                else:
                    self._unstart(h, job, attempt, undo=True, db=db)
                undo.append(jdir)
            elif got == "started":
                h.registered = h.full_noted = False
                f = outcome[i]
                self._started(h, job, attempt, int(f[2]) if len(f) > 2 and f[2].isdigit()
                              else 0, db=db)
            elif got == "queued":
                pass  # its turn comes when the job before it in the chain has ended
            elif got == "exists":
                self._follow(h, job, attempt, db=db)
            elif got == "orphan" or (not first and not error and got == ""):
                # Its chain's first job did not start: back to the queue, its dir removed.
                self._unstart(h, job, attempt, undo=True, db=db)
                undo.append(jdir)
            else:
                self._start_failed(h, job, attempt,
                                   error or f"the host did not start it: {after.strip()}",
                                   db=db)
                undo.append(jdir)
                if first:
                    undo.append(claims[c])

    def _unstart(self, h: HostRt, job: JobRt, attempt: int, *, undo: bool = False,
                 reason: str | None = None, db: Any = None) -> None:
        """A start that did not happen: the job goes back to the queue."""
        self._release(h, job)
        job.queued, job.next_id, job.linked, job.took = False, -1, False, False
        if undo:
            self.state.undo_start(job.id, attempt, db=db)
            self._move(job, st.PENDING)
            job.attempts = attempt - 1
        else:
            self._set(job, "requeued", db=db, state=st.PENDING, attempts=attempt - 1,
                      reason=reason)
        job.busy = False

    def _start_failed(self, h: HostRt, job: JobRt, attempt: int, e: object,
                      db: Any = None) -> None:
        """The host answered, but the start did not work: another host is tried; after
        START_FAILS such starts the job fails."""
        self._release(h, job)
        job.start_fails += 1
        if job.start_fails >= START_FAILS:  # not a passing problem: stop trying
            self._set(job, "start-failed", db=db, state=st.FAILED, attempts=attempt - 1,
                      reason=f"could not start ({job.start_fails} tries): {e}",
                      finished=time.time())
            self.reporter.event("job", f"{job.planned.name}: FAILED: could not start "
                                       f"({job.start_fails} tries): {e}",
                                job=job.planned.name, status=st.FAILED)
            self._count_failure(job)
        else:
            self._set(job, "start-failed", db=db, state=st.PENDING, attempts=attempt - 1,
                      reason=str(e))
            self.reporter.event("job", f"{job.planned.name}: could not start on "
                                       f"{h.spec.name}: {e}")
        job.avoid |= {h.spec.name}
        job.busy = False

    def _follow(self, h: HostRt, job: JobRt, attempt: int, db: Any = None) -> None:
        """Another head (or an earlier start of ours) got to this attempt's dir first: the
        job is followed as running; the caller then looks at what it is."""
        job.busy = False
        self._set(job, "running", db=db, state=st.RUNNING)
        self.reporter.event("job", f"{job.planned.name}: attempt {attempt} was already "
                                   f"started on {h.spec.name} (by another head?); "
                                   "following it", job=job.planned.name)

    def _started(self, h: HostRt, job: JobRt, attempt: int, pid: int, db: Any = None) -> None:
        self.first_start = self.first_start or time.time()
        self._set(job, "running", db=db, state=st.RUNNING, pid=pid, started=time.time())
        if job.cancel:  # cancelled while it was being started
            self._spawn(self._kill(job))
        self.reporter.event("job", f"{job.planned.name}: started on {h.spec.name}"
                                   f"{f' (attempt {attempt})' if attempt > 1 else ''}",
                            job=job.planned.name, host=h.spec.name)
        if job.ended:  # it ended before its start was recorded: collect it now
            job.ended = False
            self._spawn(self._collect(h, job))  # a task: collections wait for starts
        else:
            job.busy = False

    def _migrate(self, h: HostRt) -> str:
        """The wrapper's migrate_after argument for this host: AFTER:SIGNAL:GRACE."""
        run = self.sweep.run
        afters = [x for x in (run.migrate_after and parse_duration(run.migrate_after),
                              h.spec.migrate_after) if x]
        if not afters:
            return ""
        sig = str(run.migrate_signal or "TERM").upper().removeprefix("SIG")
        grace = parse_duration(run.migrate_grace) if run.migrate_grace else MIGRATE_GRACE
        return f"{int(min(afters))}:{sig}:{int(grace)}"

    def _checkpoint_dir(self, job: JobRt) -> Path:
        return self.results_dir / ".checkpoints" / job.planned.name

    def _checkpoint_items(self, job: JobRt) -> list[Item]:
        """What a job moved off a long pause saved, for its next attempt's
        input/checkpoint/."""
        ck = self._checkpoint_dir(job)
        return expand_inputs([(str(ck), "checkpoint")]) if ck.is_dir() else []

    def _keep_checkpoint(self, job: JobRt, staging: Path, info: dict[str, Any]) -> None:
        """A migrated attempt: its outputs become the checkpoint its next attempt starts
        from; its logs and job.json go to its results like a retried attempt's. In a
        worker thread."""
        ck = self._checkpoint_dir(job)
        new = ck.with_name(f".new-{ck.name}")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        for p in staging.iterdir():  # moved, not copied: a solver's state may be large
            if p.name not in ("stdout.txt", "stderr.txt"):
                os.replace(p, new / p.name)
        place(new, ck)
        self._store_result(job, staging, info)

    def _inputs(self, files: tuple[tuple[str, str], ...]) -> list[Item]:
        """A job's input files as the store lays them out (walked once per run)."""
        items = self._input_items.get(files)
        if items is None:
            items = self._input_items[files] = expand_inputs(files)
        return items

    async def _keep_claim(self, conn: HostConnection, claim: str) -> None:
        """Keep a claim whose start is still uploading its inputs from looking abandoned."""
        while True:
            await asyncio.sleep(ledger.KEEPALIVE)
            with contextlib.suppress(HostError):
                await conn.run(f"[ -f {q(claim)} ] && touch {q(claim)}\n", timeout=30)

    # -- collection -------------------------------------------------------------------------
    async def _collect(self, h: HostRt, job: JobRt) -> None:
        """Collect an ended job with the next batch from its host."""
        self._chain_next(h, job, heard=False)  # (its end was found by looking, not heard)
        h.to_collect.append(job)
        if h.collector is None or h.collector.done():
            h.collector = self._spawn(self._collect_batches(h))

    async def _collect_batches(self, h: HostRt) -> None:
        """Bring ended jobs home, as many as have ended at once in a few round trips: while
        one batch travels, the next gathers."""
        while h.to_collect:
            # Starting the next jobs comes first: collecting can wait a few milliseconds,
            # and gathers more ended jobs meanwhile.
            await self._gather(h, COLLECT_GATHER)
            # The host's processors go to starting jobs first, as does the connection, and
            # so does the head's own processor: while starts are on their way, to this host
            # or to others, a collection (its archive unpacked, its results written) waits
            # a moment. Only a moment: under a steady stream of starts (short jobs on many
            # hosts, a head short of processor) a collection that waited for a lull waited
            # until the sweep's last job had started, and every job that ended meanwhile
            # stayed RUNNING in the state, its results late, the backlog in memory.
            quiet = time.monotonic() + STARTS_FIRST
            while (h.to_start or h.start_inflight or self.starting) \
                    and time.monotonic() < quiet:
                await asyncio.sleep(GATHER_STEP)
            batch, h.to_collect = h.to_collect[:COLLECT_BATCH], h.to_collect[COLLECT_BATCH:]
            slow = batch
            try:
                slow = await self._collect_batch(h, batch)
            except HostUnreachable:
                for job in batch:
                    job.busy = False  # collected after reconnecting
                continue
            except (HostError, OSError):
                pass  # one at a time, then: each with its own errors and notes
            # (two of them download at once: see HostRt.collecting)
            await asyncio.gather(*(self._collect_one(h, job) for job in slow))

    async def _collect_batch(self, h: HostRt, batch: list[JobRt]) -> list[JobRt]:
        """Collect a batch of ended jobs in three round trips (their states and files; one
        tar stream of their logs and outputs; the check that no other head took them
        meanwhile), and empty their dirs in a fourth, in the background. Returns the jobs
        that need the one-at-a-time path: symlinked logs, outputs left on the host,
        names to skip, big outputs, no GNU tar, checksums asked for."""
        conn = h.conn
        root = f"{h.workdir}/jobs/{self.sweep.namespace}/{self.sweep.name}"
        rel: dict[int, str] = {}
        slow: list[JobRt] = []
        for job in batch:
            d = job.remote_dir or ""
            if d.startswith(root + "/") and "/" in d[len(root) + 1:]:
                rel[job.id] = d[len(root) + 1:]
            else:
                slow.append(job)
        jobs = [j for j in batch if j.id in rel]
        if conn is None or not (h.tar and h.find_printf) or self.options.verify or not jobs:
            return batch
        rels = [rel[j.id] for j in jobs]
        paths = []
        for r in rels:  # "./": a job may be named like an option of find (-rf, say)
            paths += [f"./{r}/.dssh/stdout.txt", f"./{r}/.dssh/stderr.txt",
                      f"./{r}/.dssh/started", f"./{r}/.dssh/finished", f"./{r}/outputs"]
        res = await conn.run(
            f"cd {q(root)} || exit 3\nset --\n"
            f"for r in {' '.join(q(r) for r in rels)}; do\n" + r"""  c=$r/.dssh
  if [ -f "$c/collected" ]; then echo "collected $(head -n 1 "$c/collected")"; continue; fi
""" + remote.RUN_STATE + r"""  echo "$rc $t $k ${s:--} ${f:--}"
  [ "$rc" = x ] || set -- "$@" -e "DSSH_RUN=$PWD/$r"
done
""" + remote.END_MARKED + r"""echo DSSH-FILES
""" + f"find {' '.join(q(p) for p in paths)} -printf '%y %s %T@ %p\\0' 2>/dev/null\n"
            "exit 0\n", timeout=120)
        if res.exit_status != 0:
            raise HostError(h.spec.name, f"cannot look at {root}: "
                                         f"{res.stderr.decode(errors='replace').strip()}")
        head, _, listing = res.stdout.partition(b"DSSH-FILES\n")
        lines = head.decode(errors="replace").splitlines()
        if len(lines) != len(jobs):
            raise HostError(h.spec.name, f"{root}: an unexpected answer: {lines[-1:]}")
        found: dict[str, dict[str, tuple[str, int, float]]] = {r: {} for r in rels}
        for rec in listing.split(b"\0"):
            kind, _, rest = rec.partition(b" ")
            size, _, rest = rest.partition(b" ")
            mtime, _, path = rest.partition(b" ")
            name, _, sub = os.fsdecode(path).removeprefix("./").partition("/")
            attempt, _, sub = sub.partition("/")
            r = f"{name}/{attempt}"
            if r in found and sub:
                with contextlib.suppress(ValueError):
                    found[r][sub] = (_FIND_KINDS.get(kind, "other"), int(size), float(mtime))
        want: list[RemoteEntry] = []
        plans = []
        for job, r, line in zip(jobs, rels, lines, strict=True):
            if line.startswith("collected "):
                job.busy = False
                self._taken_elsewhere(h, job, line.partition(" ")[2])
                continue
            f = line.split()
            if len(f) != 5 or not f[0].lstrip("-").isdigit():
                job.busy = False  # not ended after all; the watcher will say when it is
                continue
            if f[1] == "m":  # moved off a long pause: its outputs become a checkpoint
                slow.append(job)
                continue
            mine = found[r]
            logs = [mine.get(f".dssh/{n}", ("file", 0, 0.0)) for n in ("stdout.txt",
                                                                        "stderr.txt")]
            out = mine.get("outputs", ("dir", 0, 0.0))
            entries = [RemoteEntry(p[len("outputs/"):], size, kind)
                       for p, (kind, size, _) in sorted(mine.items())
                       if p.startswith("outputs/")]
            files, left, notes = select(entries, self.sweep.outputs.collect,
                                        self.sweep.outputs.exclude)
            if (out[0] != "dir" or any(k != "file" for k, _, _ in logs) or left or notes
                    or any(e.path.split("/", 1)[0] in RESERVED for e in files)
                    or sum(e.size for e in files) + logs[0][1] + logs[1][1] > BATCH_BYTES):
                slow.append(job)
                continue
            times = []
            for n, text in (("started", f[3]), ("finished", f[4])):
                mt = mine.get(f".dssh/{n}")
                times.append(_epoch(text) if text != "-" else mt[2] if mt else None)
            plans.append((job, r, int(f[0]), f[1], f[2] == "1", times, files, logs))
            for n, (_, size, _) in zip(("stdout.txt", "stderr.txt"), logs, strict=True):
                if f".dssh/{n}" in mine:
                    want.append(RemoteEntry(f"{r}/.dssh/{n}", size, "file"))
            want += [RemoteEntry(f"{r}/outputs/{e.path}", e.size, "file") for e in files]
        if not plans:
            return slow
        # Each job's files land straight in its own staging dir (as the one-at-a-time
        # path lays it out), which then becomes its results dir by one rename: a
        # directory made or removed costs the head's disk more than a file written.
        staging = self.results_dir / ".incoming"
        dirs = {p[1]: staging / f"{p[0].planned.name}.{p[0].attempts}" for p in plans}

        def dest(member: str) -> str:
            name, attempt, sub = member.split("/", 2)
            if sub.startswith("outputs/"):
                sub = sub[len("outputs/"):]
            elif sub.startswith(".dssh/"):
                sub = sub[len(".dssh/"):]
            return f"{name}.{attempt}/{sub}"

        def fresh() -> None:
            staging.mkdir(parents=True, exist_ok=True)
            for d in dirs.values():
                if d.exists():  # left by a collection cut short
                    shutil.rmtree(d)
                d.mkdir()

        try:
            try:
                need = sum(e.size for e in want)
                await asyncio.to_thread(fresh)
                free = shutil.disk_usage(staging).free
                if need + (1 << 20) > free:
                    raise OSError(errno.ENOSPC, f"No space left: the outputs need {need >> 20} "
                                                f"MiB and {free >> 20} MiB are free")
                # Another head driving this sweep may have taken the results meanwhile (see
                # _collect_inner): a mark once the files are copied means our copy may lack
                # files, and is dropped. Looked at in the copy's round trip, after it.
                got = await fetch_small(
                    conn, root, want, staging, meter=h.meter, dest=dest, then=(
                        f"for r in {' '.join(q(p[1]) for p in plans)}; do\n"
                        '  if [ -f "$r/.dssh/collected" ]; then '
                        'echo "$(head -n 1 "$r/.dssh/collected")"\n'
                        "  else echo -; fi\ndone"))
            except OSError:
                return slow + [p[0] for p in plans]  # one at a time: each says what went wrong
            marks = got.then.splitlines()
            if len(marks) != len(plans):
                raise HostError(h.spec.name, f"{root}: an unexpected answer: {marks[-1:]}")
            who_took = {p[1]: who for p, who in zip(plans, marks, strict=True)}
            if got.notes:  # names the head cannot store: those jobs go one at a time
                bad = {"/".join(n.split("/", 2)[:2]) for n in got.notes if n.count("/") >= 2}
                slow += [p[0] for p in plans if p[1] in bad or not bad]
                plans = [p for p in plans if bad and p[1] not in bad]
            done = []
            stores = []
            for p in plans:
                who = who_took[p[1]]
                job, r, exit_code, flag, cancelled, (started, finished), files, _ = p
                if who != "-":
                    job.busy = False
                    self._taken_elsewhere(h, job, who)
                    continue
                timed_out, vanished = flag == "1", flag == "v"
                status = (st.CANCELLED if cancelled else st.TIMEOUT if timed_out
                          else st.COMPLETED if exit_code == 0 else st.FAILED)
                retry = (status in (st.FAILED, st.TIMEOUT)
                         and job.attempts - job.retry_base <= self.sweep.run.retries)
                info = self._job_info(h, job, status, exit_code, timed_out, started, finished,
                                      job.remote_dir or "", files, [], [])
                stores.append((job, dirs[r], info))
                done.append((job, status, exit_code, timed_out, vanished, started, finished,
                             retry))
            try:
                await asyncio.to_thread(self._store_batch, stores)
            except OSError:
                # The head's disk: one at a time, each job then says so and is tried again.
                return slow + [d[0] for d in done]
            with self.state.tx() as db:
                for job, status, exit_code, timed_out, vanished, started, finished, retry in done:
                    self._collected(h, job, db, status, exit_code, timed_out, vanished, started,
                                    finished, [], retry)
            for job, status, exit_code, _, _, started, finished, retry in done:
                self._after_collected(h, job, status, exit_code, retry, started, finished)
            if done:
                cleanup = asyncio.ensure_future(self._retire_batch(h, root, [
                    (d[0].id, d[0].attempts, rel[d[0].id]) for d in done]))

                self.cleanups.add(cleanup)
                cleanup.add_done_callback(self.cleanups.discard)
            return slow
        finally:
            # What this batch staged and did not put in place (handed to the one-at-a-time
            # path, taken by another head, a lost host, a full disk, a run ending) goes:
            # nothing half-written stays in .incoming/.
            for d in dirs.values():
                if d.exists():
                    shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rmdir()  # .incoming/, once nothing else is being collected

    def _store_batch(self, stores: list[tuple[JobRt, Path, dict[str, Any]]]) -> None:
        """Lay out each job of a batch as its results dir (outputs, stdout.txt, stderr.txt,
        job.json) and put it in place. In a worker thread."""
        for job, d, info in stores:
            for name in ("stdout.txt", "stderr.txt"):  # none on the host: an empty one
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            self._store_result(job, d, info)

    async def _retire_batch(self, h: HostRt, root: str, runs: list[tuple[int, int, str]]
                            ) -> None:
        """Empty collected run dirs down to their marks, in one round trip."""
        if h.conn is None:
            return
        with contextlib.suppress(HostError):
            user = h.user or "dssh"
            claims = [f"{h.spec.ledger_dir}/c-{ledger.claim_name(user, f'{root}/{r}')}"
                      for _, _, r in runs]
            res = await h.conn.run(remote.retire_many(root, [r for _, _, r in runs],
                                                      self.head_id, claims), timeout=300)
            if res.exit_status == 0:
                with self.state.tx() as db:
                    db.executemany("UPDATE attempts SET retired=1 WHERE job_id=? AND attempt=?",
                                   [(i, a) for i, a, _ in runs])

    async def _collect_one(self, h: HostRt, job: JobRt) -> None:
        try:
            await self._collect_inner(h, job)
        except HostUnreachable:
            job.busy = False  # collected after reconnecting
        except ResultsDirError as e:
            # The head's disk, not the job, is at fault: the job stays uncollected, its
            # files safe on the host; the safety poll tries again, a later run collects it.
            job.busy = False
            job.collect_fails += 1
            if job.uncollected != str(e):
                self.reporter.event("warning", f"{job.planned.name}: ended on {h.spec.name} "
                                               f"but not collected: {e}; its files stay on "
                                               "the host, trying again")
                self.state.set_job(job.id, "uncollected", reason=f"ended; not collected: {e}")
            job.uncollected = str(e)
            self._spawn(self._collect_later(h, job, COLLECT_RETRY))
            self.wakeup.set()
        except (HostError, OSError) as e:
            job.busy = False
            self.reporter.event("warning", f"{job.planned.name}: could not collect from "
                                           f"{h.spec.name}: {e}; will try again")
            await asyncio.sleep(5)
            self.wakeup.set()

    async def _collect_later(self, h: HostRt, job: JobRt, delay: float) -> None:
        await asyncio.sleep(delay)
        if job.uncollected and not job.busy and h.conn is not None and job.host == h.spec.name:
            job.busy = True
            await self._collect_one(h, job)

    async def _fetch(self, h: HostRt, conn: HostConnection, jdir: str, files: list,
                     staging: Path) -> Fetched:
        """Download a job's outputs, stdout and stderr into ``staging`` (OSError: the
        results dir could not take them)."""
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        need = sum(e.size for e in files)
        free = shutil.disk_usage(staging).free
        if need + (1 << 20) > free:
            raise OSError(errno.ENOSPC, f"No space left: the outputs need {need >> 20} MiB "
                                        f"and {free >> 20} MiB are free")
        async with h.collecting:
            got = await fetch(conn, f"{jdir}/outputs", files, staging, tar=h.tar,
                              verify=self.options.verify, meter=h.meter)
        # A job may have replaced its logs with symlinks (to a file it should not hand
        # over): those are not read.
        links = (await conn.run(f"c={q(jdir + '/.dssh')}\n" + 'for n in stdout.txt stderr.txt; '
                                'do [ -L "$c/$n" ] && echo "$n"; done; true\n',
                                timeout=30)).text.split()
        for name in ("stdout.txt", "stderr.txt"):
            data = b""
            if name in links:
                got.notes.append(f"{name}: a symlink, not read (dssh never follows links)")
            else:
                with contextlib.suppress(FileNotFoundError):
                    data = await conn.read_file(f"{jdir}/.dssh/{name}")
            (staging / name).write_bytes(data)
        return got

    async def _collect_inner(self, h: HostRt, job: JobRt) -> None:
        assert job.remote_dir is not None
        if h.conn is None:  # lost while the collection waited its turn
            raise HostUnreachable(h.spec.name, "connection lost; collected after reconnecting")
        conn = h.conn
        jdir = job.remote_dir
        ctl = f"{jdir}/.dssh"
        res = await conn.run(
            f"c={q(ctl)}\n"
            'if [ -f "$c/collected" ]; then echo "collected $(head -n 1 "$c/collected")"; exit 0; fi\n'
            + remote.RUN_STATE + r"""
if [ -z "$s$f" ]; then set -- $(stat -c %.9Y "$c/started" "$c/finished" 2>/dev/null); s=$1 f=$2; fi
echo "$rc $t ${s:-0} ${f:-0} $k"
set --
[ "$rc" = x ] || set -- -e "DSSH_RUN=${c%/.dssh}"
""" + remote.END_MARKED, timeout=30)
        parts = res.text.split()
        if parts and parts[0] == "collected":
            job.busy = False
            self._taken_elsewhere(h, job, res.text.strip().partition(" ")[2])
            return
        exit_code = int(parts[0]) if parts and parts[0].lstrip("-").isdigit() else None
        timed_out = len(parts) > 1 and parts[1] == "1"
        vanished = len(parts) > 1 and parts[1] == "v"
        started = _epoch(parts[2]) if len(parts) > 2 else None
        finished = _epoch(parts[3]) if len(parts) > 3 else None
        if exit_code is None:
            job.busy = False
            return  # not ended after all; the watcher will say when it is
        cancelled = len(parts) > 4 and parts[4] == "1"
        migrated = len(parts) > 1 and parts[1] == "m" and not cancelled
        status = (st.CANCELLED if cancelled else st.TIMEOUT if timed_out
                  else st.COMPLETED if exit_code == 0 else st.FAILED)
        entries = await conn.walk(f"{jdir}/outputs")
        out = self.sweep.outputs
        # A checkpoint is everything the job saved, whatever the sweep collects.
        files, left, notes = select(entries, ["**"] if migrated else out.collect,
                                    [] if migrated else out.exclude)
        clash = [e for e in files if e.path.split("/", 1)[0] in RESERVED]
        if clash:
            notes += [f"{e.path}: an output with this name would hide dssh's own file; "
                      "not collected (write it into a subdirectory)" for e in clash]
            files = [e for e in files if e not in clash]
        staging = self.results_dir / ".incoming" / f"{job.planned.name}.{job.attempts}"
        try:
            try:
                got = await self._fetch(h, conn, jdir, files, staging)
            except OSError as e:
                shutil.rmtree(staging, ignore_errors=True)  # give back what space it took
                raise ResultsDirError(f"{self.results_dir}: {e.strerror or e}") from e
            if got.notes:  # names the head cannot store: they stay on the host
                notes += got.notes
                left += [e for e in files if e.path not in got.got]
                files = [e for e in files if e.path in got.got]
            # Another head driving this sweep may have taken the results meanwhile: it marks
            # the dir before it empties it, so no mark now means nothing was taken away while
            # we copied; a mark means our copy may lack files, and is dropped. Outputs left
            # for `dssh pull` are marked to stay, with the list of those that went home.
            retry = (status in (st.FAILED, st.TIMEOUT)
                     and job.attempts - job.retry_base <= self.sweep.run.retries)
            keep = ""
            if left and not retry:  # a retried attempt's files are superseded by the next
                keep = (f"printf '%s\\n' {q(self.head_id)} > \"$c/kept\"\n"
                        f"{name_list(e.path for e in files)} > \"$c/taken\"\n")
            mark = await conn.run(f"c={q(ctl)}\n"
                                  '[ -f "$c/collected" ] && { head -n 1 "$c/collected"; exit 0; }\n'
                                  + keep + "exit 0\n", timeout=30)
            if mark.text.strip():
                shutil.rmtree(staging, ignore_errors=True)
                job.busy = False
                self._taken_elsewhere(h, job, mark.text.strip())
                return
            if migrated:
                await self._migrated(h, job, staging, exit_code, started, finished, files, notes)
                return
            info = self._job_info(h, job, status, exit_code, timed_out, started, finished, jdir,
                                  files, notes, [] if retry else left)
            if self.options.verify:
                info["sha256"] = got.digests
            try:
                await asyncio.to_thread(self._store_result, job, staging, info)
            except OSError as e:
                shutil.rmtree(staging, ignore_errors=True)
                raise ResultsDirError(f"{self.results_dir}: {e.strerror or e}") from e
            with contextlib.suppress(OSError):
                staging.parent.rmdir()  # .incoming/, once nothing else is being collected
            with self.state.tx() as db:
                self._collected(h, job, db, status, exit_code, timed_out, vanished, started,
                                finished, notes, retry)
            self._after_collected(h, job, status, exit_code, retry, started, finished)
            # Remove the job's dir from the host; the run waits for this before it returns.
            cleanup = asyncio.ensure_future(self._remove_remote(conn, jdir, job.id, job.attempts))
            self.cleanups.add(cleanup)
            cleanup.add_done_callback(self.cleanups.discard)
        finally:
            # (put in place, it is gone; anything else cut it short: a lost host, a
            # cancelled run. Nothing half-written stays in .incoming/.)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    async def _migrated(self, h: HostRt, job: JobRt, staging: Path, exit_code: int,
                        started: float | None, finished: float | None, files: list,
                        notes: list[str]) -> None:
        """An attempt stopped after a long pause (SPEC §6d): what it saved goes to its next
        attempt, on another host if there is one; the attempt is not a failure."""
        assert job.remote_dir is not None
        info = self._job_info(h, job, MIGRATED, exit_code, False, started, finished,
                              job.remote_dir, files, notes, [])
        try:
            await asyncio.to_thread(self._keep_checkpoint, job, staging, info)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise ResultsDirError(f"{self.results_dir}: {e.strerror or e}") from e
        self.checkpointed.add(job.id)
        self._release(h, job)
        job.retry_base += 1  # the attempt is given back: moving is not failing
        job.avoid |= {h.spec.name}
        saved = f"{len(files)} file{'s' if len(files) != 1 else ''}"
        with self.state.tx() as db:
            db.execute("UPDATE attempts SET state=?, exit_code=?, finished=? "
                       "WHERE job_id=? AND attempt=?",
                       (MIGRATED, exit_code, finished, job.id, job.attempts))
            self._set(job, "migrated", db=db, state=st.PENDING, retry_base=job.retry_base,
                      exit_code=None, reason=f"moved off {h.spec.name} after a long pause "
                                             f"(migrate_after); it saved {saved}, which its "
                                             "next attempt gets in input/checkpoint/")
        self.reporter.event("job", f"{job.planned.name}: moved off {h.spec.name} after a long "
                                   f"pause; {saved} saved go with it to its next attempt",
                            job=job.planned.name, host=h.spec.name)
        job.busy = False
        self.wakeup.set()
        cleanup = asyncio.ensure_future(self._remove_remote(h.conn, job.remote_dir, job.id,
                                                            job.attempts))
        self.cleanups.add(cleanup)
        cleanup.add_done_callback(self.cleanups.discard)

    def _job_info(self, h: HostRt, job: JobRt, status: str, exit_code: int, timed_out: bool,
                  started: float | None, finished: float | None, jdir: str, files: list,
                  notes: list[str], left: list) -> dict[str, Any]:
        """The job's ``job.json``."""
        return {
            "sweep": self.sweep.name, "namespace": self.sweep.namespace,
            "job": job.planned.name, "status": status, "params": job.planned.params,
            "host": h.spec.name, "attempts": job.attempts, "exit_code": exit_code,
            "timed_out": timed_out, "started": _iso(started), "finished": _iso(finished),
            "seconds": round(finished - started, 3) if started and finished else None,
            "cpus": job.cpus, "gpus": list(job.gpus), "remote_dir": jdir,
            "outputs": [e.path for e in files], "skipped": notes,
            "left_on_host": [{"path": e.path, "size": e.size} for e in left],
        }

    def _store_result(self, job: JobRt, staging: Path, info: dict[str, Any]) -> None:
        """Write job.json into the staging dir and put it in the job's results place
        (earlier attempts' logs kept along). In a worker thread."""
        write_json(staging / "job.json", info)
        final = self.results_dir / job.planned.name
        keep_earlier(final, staging, job.attempts)
        place(staging, final)

    def _collected(self, h: HostRt, job: JobRt, db: Any, status: str, exit_code: int,
                   timed_out: bool, vanished: bool, started: float | None,
                   finished: float | None, notes: list[str], retry: bool) -> None:
        """Record a collected attempt (in the open transaction ``db``)."""
        if job.uncollected:
            self.reporter.event("job", f"{job.planned.name}: collected after all")
        job.uncollected, job.collect_fails = "", 0
        for n in notes:
            self.reporter.event("warning", f"{job.planned.name}: {n}")
        self._release(h, job)
        db.execute("UPDATE attempts SET state=?, exit_code=?, finished=? "
                   "WHERE job_id=? AND attempt=?",
                   (status, exit_code, finished, job.id, job.attempts))
        self._set(job, status.lower(), db=db, state=st.PENDING if retry else status,
                  exit_code=exit_code, finished=finished or time.time(),
                  started=started, reason="timed out" if timed_out else
                  "killed from outside: its processes vanished without an exit code"
                  if vanished else None)

    def _after_collected(self, h: HostRt, job: JobRt, status: str, exit_code: int,
                         retry: bool, started: float | None, finished: float | None) -> None:
        """What a collected attempt means for its host, the job and the sweep."""
        if job.id in self.checkpointed and not retry:  # done with what it carried along
            self.checkpointed.discard(job.id)
            shutil.rmtree(self._checkpoint_dir(job), ignore_errors=True)
        if retry:
            job.avoid |= {h.spec.name}
        else:
            job.finished_here = time.time()
        if not job.judged:  # ended unseen by the watcher (found by looking)
            self._judge_host(h, job, status == st.COMPLETED,
                             (finished - started) if started and finished else QUICK_FAIL)
        if h.quarantined and job.id in h.fail_streak and status in (st.FAILED, st.TIMEOUT):
            self._give_attempt_back(h, job)
        if status in (st.FAILED, st.TIMEOUT) and not retry:
            self._failed_for_good(h, job, status, exit_code)
        verb = {st.COMPLETED: "done", st.FAILED: f"FAILED (exit {exit_code})",
                st.TIMEOUT: "TIMEOUT", st.CANCELLED: "CANCELLED"}[status]
        self.reporter.event("job", f"{job.planned.name}: {verb} on {h.spec.name}"
                                   f"{'; will retry' if retry else ''}",
                            job=job.planned.name, host=h.spec.name, status=status)
        job.busy = False
        self.wakeup.set()

    def _judge_host(self, h: HostRt, job: JobRt, ok: bool, seconds: float) -> None:
        """Quarantine a host that fails job after job quickly (a black hole: a broken
        install, a full disk). Judged when the end is heard, before the slot is reused, so
        such a host costs a few attempts, not the sweep."""
        job.judged = True
        now = time.monotonic()
        if ok:
            self.last_success[h.spec.name] = now
            for other in self.hosts.values():  # a success here may convict a host elsewhere
                if other is not h and len(other.fail_streak) >= QUARANTINE_AFTER:
                    self._quarantine_if_guilty(other, job)
        if ok or seconds >= QUICK_FAIL:
            h.fail_streak.clear()
            return
        if not h.fail_streak:
            h.streak_since = now
        h.fail_streak.append(job.id)
        self._quarantine_if_guilty(h, job)

    def _quarantine_if_guilty(self, h: HostRt, job: JobRt) -> None:
        if h.quarantined or len(h.fail_streak) < QUARANTINE_AFTER:
            return
        # Only when jobs succeed elsewhere meanwhile is it the host's fault, not the sweep's:
        # a sweep whose jobs fail everywhere must not quarantine every host.
        if not any(t >= h.streak_since for name, t in self.last_success.items()
                   if name != h.spec.name):
            return
        h.quarantined = True
        h.status = "failed"
        last = self.jobs[h.fail_streak[-1]].planned.name
        h.detail = (f"quarantined: {len(h.fail_streak)} jobs in a row failed here within "
                    f"{QUICK_FAIL:.0f} s each while other hosts ran jobs fine (the last one: "
                    f"{last}, see its stderr.txt); no more jobs go there in this run")
        if h.slots is not None:
            h.slots.available = False
        self.reporter.event("host", f"{h.spec.name}: {h.detail}", host=h.spec.name)
        self._record_host(h)
        # The host, not the jobs, was at fault: those already judged get their attempt back
        # (the others get it when they are collected).
        for jid in h.fail_streak:
            j = self.jobs[jid]
            if j.state in st.FINISHED_STATES or j.state == st.PENDING:
                self._give_attempt_back(h, j)

    def _give_attempt_back(self, h: HostRt, j: JobRt) -> None:
        if j.id in h.given_back:
            return
        h.given_back.add(j.id)
        j.avoid |= {h.spec.name}
        j.retry_base += 1
        if j.state in (st.FAILED, st.TIMEOUT):
            self._set(j, "requeued", state=st.PENDING, retry_base=j.retry_base,
                      reason=f"{h.spec.name} was quarantined")
        else:
            self._set(j, "retry-renewed", retry_base=j.retry_base)
        self.wakeup.set()

    async def _remove_remote(self, conn: HostConnection, jdir: str, job_id: int,
                             attempt: int) -> None:
        """Empty a collected run's dir down to its mark; recorded, so that a head that
        dies first leaves the work to the next one (see _retire_leftovers)."""
        with contextlib.suppress(HostError):
            res = await conn.run(remote.retire(jdir, self.head_id), timeout=120)
            if res.exit_status == 0:
                self.state.set_retired(job_id, attempt)

    async def _retire_leftovers(self, h: HostRt) -> None:
        """Collected runs whose dirs were not emptied yet (a head killed right after
        collecting): empty them now, in one round trip."""
        rows = self.state.unretired(self.sweep_id, h.spec.name)
        if not rows or h.conn is None:
            return
        with contextlib.suppress(HostError):
            res = await h.conn.run("".join(remote.retire(r["remote_dir"], self.head_id)
                                           for r in rows) + "exit 0\n", timeout=300)
            if res.exit_status == 0:
                with self.state.tx() as db:
                    db.executemany("UPDATE attempts SET retired=1 WHERE id=?",
                                   [(r["id"],) for r in rows])

    def _taken_elsewhere(self, h: HostRt, j: JobRt, who: str) -> None:
        """Another head (another machine, another state file) ran this attempt and took
        its results: it is not run a second time here, and says where they are."""
        self._release(h, j)
        if who == self.head_id:
            # Our own mark: this head's state was lost or reset since. Run it again.
            self._spawn(self._remove_quietly(h, j.remote_dir or ""))
            self._set(j, "requeued", state=st.PENDING, reason="its old run's state was lost")
            return
        self._set(j, "collected-elsewhere", state=st.FAILED, exit_code=None,
                  reason=f"ran on {h.spec.name}, but another head took its results: {who}")
        self.reporter.event("warning", f"{j.planned.name}: ran on {h.spec.name}, but another "
                                       f"head driving this sweep took its results ({who}); "
                                       "not run again")

    async def _stop_leftovers(self) -> None:
        """The sweep is done: stop old copies still recorded on hosts lost meanwhile, so
        none runs on unseen; say so if a host is still out of reach."""
        hosts = sorted({r["host"] for r in self.state.abandoned(self.sweep_id)})

        async def one(name: str) -> None:
            h = self.hosts.get(name)
            if h is not None:
                if h.conn is not None:
                    await self._settle_strays_quietly(h)
                return  # unreachable in this run: not tried again now
            spec = self.inventory.hosts.get(name)
            if spec is None:
                return
            h = HostRt(spec)
            try:
                h.conn = make_connection(spec, accept_new_hostkeys=self.options.accept_new_hostkeys)
                await h.conn.connect()
                await self._settle_strays(h)
            except HostError:
                pass
            finally:
                if h.conn is not None:
                    await h.conn.close()

        await asyncio.gather(*(one(n) for n in hosts))
        left = self.state.abandoned(self.sweep_id)
        if left:
            where = ", ".join(sorted({r["host"] for r in left}))
            self.reporter.event("warning", f"{len(left)} old cop(ies) of jobs given up on may "
                                           f"still run on {where}, out of reach now; "
                                           f"`{self.resume_command()}` stops them once it "
                                           "reaches the host")

    async def _remove_quietly(self, h: HostRt, jdir: str) -> None:
        if h.conn is not None and jdir:
            with contextlib.suppress(HostError):
                await h.conn.run(f"rm -rf {q(jdir)}\n", timeout=60)

    async def _tidy(self, h: HostRt) -> bool:
        """Remove week-old marks of collected runs, and input files no sweep has used
        for a month, from the host, in the background. Did it?"""
        if h.conn is not None:
            with contextlib.suppress(HostError):
                await h.conn.run(prune_script(h.workdir) + remote.tidy(f"{h.workdir}/jobs"),
                                 timeout=300)
                return True
        return False

    async def _tidy_last(self, h: HostRt) -> None:
        """At the run's end: the host's tidy, waited for, or done now if it was not."""
        t = h.tidied
        if t is not None:
            await asyncio.wait([t])
        if t is None or t.cancelled() or t.exception() is not None or not t.result():
            await self._tidy(h)

    # -- the loop ---------------------------------------------------------------------------
    def _finished(self) -> bool:
        return not any(n for state, n in self.by_state.items()
                       if state not in st.FINISHED_STATES)

    def _queued(self) -> Any:
        """Queued jobs not being started, in sweep order (from the first one queued)."""
        order = self.in_order
        i = self.cursor
        while i < len(order) and order[i].state != st.PENDING:
            i += 1
        self.cursor = i
        for j in order[i:]:
            if j.state == st.PENDING and not j.busy:
                yield j

    def _schedule(self) -> None:
        ready = [h for h in self.hosts.values() if h.status == "ready" and h.slots is not None]
        self.placed_at = self.ends
        if not ready:
            return
        need = self._need
        for i in list(self.cancelling):
            j = self.jobs[i]
            if j.state == st.PENDING and not j.busy:
                self._set(j, "cancelled", state=st.CANCELLED, reason="cancelled")
            if j.state in st.FINISHED_STATES:
                self.cancelling.discard(i)
        if self.halted:
            return
        slots = [h.slots for h in ready if h.slots]
        queued = self._queued()
        placed = []
        if any(s.available and not s.full for s in slots):
            placed = place_jobs(((j.id, need) for j in queued), slots, _Avoid(self.jobs),
                                one_need=True)
        chain = self._chain_len(slots, need) if placed else 1
        for p in placed:
            job = self.jobs[p.job]
            job.busy = True
            job.held = True
            h = self.hosts[p.host]
            if not self._batchable(h, job):
                # One at a time: its inputs go up between its claim and its start; or its
                # dir's name would not fit on a line of the batch's claim requests.
                self._spawn(self._dispatch(h, job, p.cpus, p.gpus))
                continue
            follow: list[JobRt] = []
            while chain > 1 and len(follow) < chain - 1 and not self._migrate(h):
                nxt = next(queued, None)
                if nxt is None:
                    break
                if self._batchable(h, nxt) and h.spec.name not in nxt.avoid:
                    nxt.busy = nxt.queued = True
                    follow.append(nxt)
            self.starting += 1 + len(follow)
            h.to_start.append((job, p.cpus, p.gpus, follow))
            if h.starter is None or h.starter.done():
                h.starter = self._spawn(self._start_batches(h))
        self._look_ahead(ready, queued)
        if not self.starting and not self.by_state.get(st.PENDING):
            # Nothing left to start: the hosts' old marks go now, in the background, while
            # the last jobs run, and not at the end, where the run would wait for them.
            for h in ready:
                if h.tidied is None and h.conn is not None:
                    h.tidied = self._spawn(self._tidy(h))
        # What is left in the queue: enough of it to tell whether it wants room here.
        left = [j.id for j in itertools.islice(queued, LOOK_AHEAD)]
        # Hosts where jobs left in the queue wait for room other heads hold: stand in
        # their ledgers' queues. With nothing left to start, leave them.
        for h in ready:
            s = h.slots
            assert s is not None
            wants = bool(left) and s.available and s.can_ever_run(need) and (
                s.blocked or s.foreign_jobs > 0) and not s.fits_now(need) and any(
                h.spec.name not in self.jobs[j].avoid for j in left)
            if wants:
                self._want_room(h)
                continue
            h.waiting = False
            if h.registered and not self.starting and not self.by_state.get(st.PENDING):
                self._spawn(self._unwait(h))

    def _batchable(self, h: HostRt, job: JobRt) -> bool:
        """Can the job start in a batch (with no inputs to send first, its dir's name fit
        for a line of the batch's claim requests)?"""
        return not (job.planned.files or job.id in self.checkpointed or any(
            c in h.workdir + job.planned.name for c in "\t\n"))

    @functools.cached_property
    def _need(self) -> JobNeed:
        """What each job of the sweep needs of a host."""
        return JobNeed(self.sweep.run.cpus, self.sweep.run.gpus, frozenset(self.sweep.needs))

    def _chain_len(self, slots: list[HostSlots], need: JobNeed) -> int:
        """How many jobs a slot is handed at once (SPEC §5, "Chains"): about
        CHAIN_SECONDS of work, as long as the jobs ended so far took; one until enough
        have ended to tell, and while the queue would not give every slot that many."""
        if self.ended_n < CHAIN_AFTER:
            return 1
        mean = self.ended_secs / self.ended_n
        k = min(CHAIN_MAX, int(CHAIN_SECONDS / max(mean, 0.001)))
        room = sum(s.room_for(need) for s in slots) or 1
        return max(1, min(k, self.by_state.get(st.PENDING, 0) // room))

    def _look_ahead(self, ready: list[HostRt], queued: Any) -> None:
        """Link the next queued jobs to running ones about to end (SPEC §5, "Chains"): the
        slot's wrapper starts the linked job as soon as the one before it ends, with no
        round trip in between. Only while the jobs ended so far took about the same time
        (so one expected to end soon does), each too long for a chain of two, and on hosts
        that take new work now; a timer wakes the scheduler when the next link is due.
        Before any job has ended, links go on trial (TRIAL_AFTER)."""
        if self.halted:
            return
        now = time.monotonic()
        trial = self.ended_n == 0
        if trial:
            # Only while the queue holds a next job for every slot: with fewer, which
            # slots get them matters, and nothing tells yet.
            room = sum(h.slots.room_for(self._need) for h in ready if h.slots) or 1
            if self.by_state.get(st.PENDING, 0) < room:
                return
            mean = 0.0
        else:
            if self.ended_n < CHAIN_AFTER:
                return
            mean = self.ended_secs / self.ended_n
            if not CHAIN_SECONDS / 2 < mean <= LINK_MAX_MEAN:
                return
            if self.ended_sq / self.ended_n - mean * mean > (LINK_CV * mean) ** 2:
                return
            # The jobs that end first are the short ones: a job still running well past
            # the mean says the durations vary more than the ended ones show.
            oldest = now - mean * (1 + 3 * LINK_CV)
            if any(j.dispatched < oldest for h in ready
                   for i in self.on_host.get(h.spec.name, ())
                   if (j := self.jobs[i]).state == st.RUNNING and not j.busy):
                return
        due_next = math.inf
        skipped: list[JobRt] = []  # queued jobs that did not suit a host looked at before
        for h in ready:
            s = h.slots
            if (s is None or not s.available or h.closed or h.waiting or s.blocked
                    or self._migrate(h) or h.conn is None):
                continue
            if trial and h.trip > TRIAL_TRIP:
                continue  # (see TRIAL_TRIP)
            for i in self.on_host.get(h.spec.name, ()):
                j = self.jobs[i]
                if (j.state != st.RUNNING or j.busy or j.cancel or j.next_id >= 0
                        or not j.held or not j.remote_dir or (trial and not j.fresh)):
                    continue
                if not self._slot_goes_on(s, j):
                    continue  # (over what its owners' policy or the ledger now allow)
                due = j.dispatched + (TRIAL_AFTER if trial else mean - LINK_LEAD)
                if due > now:
                    due_next = min(due_next, due)
                    continue
                if not trial and j.dispatched + mean - now < h.trip:
                    # Expected to end before a link could be in place (the jobs of a first
                    # wave, found alike only as they end together): a link then would be
                    # refused, and its round trip would delay the start that follows.
                    continue
                b = next((x for x in skipped if self._links_to(h, x)), None)
                if b is not None:
                    skipped.remove(b)
                while b is None:
                    x = next(queued, None)
                    if x is None:
                        return  # nothing left to link
                    if self._links_to(h, x):
                        b = x
                    else:
                        skipped.append(x)
                b.busy = b.queued = b.linked = True
                b.took = False
                b.trial, j.fresh = trial, False
                j.next_id = b.id
                h.to_link.append((j, b))
                if h.linker is None or h.linker.done():
                    h.linker = self._spawn(self._link_batches(h))
                if trial:
                    self._recall_at(h, j.dispatched + TRIAL_SECONDS)
        if due_next < math.inf:
            self._link_timer = self._timer(self._link_timer, due_next, self.wakeup.set)

    @staticmethod
    def _timer(t: asyncio.TimerHandle | None, when: float,
               callback: Any) -> asyncio.TimerHandle:
        """A timer calling ``callback`` at ``when`` (monotonic), or sooner: ``t`` where it
        is still to go off by then, else a new one in its place."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, when - time.monotonic())
        if t is not None and not t.cancelled() and loop.time() < t.when() <= at + 0.001:
            return t
        if t is not None:
            t.cancel()
        return loop.call_at(at, callback)

    def _recall_at(self, h: HostRt, when: float) -> None:
        """Look at the host's trial links at ``when`` (monotonic), or sooner."""
        h.recall = self._timer(h.recall, when, lambda: self._spawn(self._recall_trials(h)))

    async def _recall_trials(self, h: HostRt) -> None:
        """Take back the trial links whose job has run TRIAL_SECONDS and not ended (a sweep
        of long jobs): queued again, attempts untouched, in one round trip. One a wrapper
        took meanwhile goes on: its ~took and its job's end say so, as for any link."""
        h.recall = None
        now = time.monotonic()
        due: list[tuple[JobRt, JobRt, int, str]] = []
        later = math.inf
        for i in self.on_host.get(h.spec.name, ()):
            j = self.jobs[i]
            b = self.jobs.get(j.next_id) if j.next_id >= 0 else None
            if (b is None or not b.trial or not b.queued or not b.linked or b.took
                    or b.state != st.STARTING or b.host != h.spec.name or not b.remote_dir):
                continue
            at = j.dispatched + TRIAL_SECONDS
            if at > now:
                later = min(later, at)
            else:
                due.append((j, b, b.attempts, b.remote_dir))
        if later < math.inf:
            self._recall_at(h, later)
        if not due:
            return
        gone = await self._take_back(h, [d[3] for d in due])
        with self.state.tx() as db:
            for (j, b, attempt, bdir), taken in zip(due, gone, strict=True):
                if (not taken or b.state != st.STARTING or b.attempts != attempt
                        or b.host != h.spec.name or b.remote_dir != bdir or not b.queued):
                    continue  # its wrapper took it, or it was settled meanwhile
                if j.next_id == b.id:
                    j.next_id = -1
                self._unstart(h, b, attempt, undo=True, db=db)
                self.state.event(db, self.sweep_id, b.id, "taken-back", h.spec.name,
                                 {"attempt": attempt, "why": f"linked on trial to "
                                  f"{j.planned.name}, which ran past {TRIAL_SECONDS:g}s"})
        self.wakeup.set()

    @staticmethod
    def _slot_goes_on(s: HostSlots, j: JobRt) -> bool:
        """May the job's slot go on to another job as it is (its cpus and GPUs), or is the
        host now over its limits (a policy changed, a smaller capacity in the ledger)?"""
        slots = s.limit_slots
        return (s.free_cpus >= 0 and (slots is None or s.running + s.foreign_jobs <= slots)
                and all(g in s.gpus and (s.ledger_gpus is None or g in s.ledger_gpus)
                        for g in j.gpus))

    def _links_to(self, h: HostRt, job: JobRt) -> bool:
        return (job.state == st.PENDING and not job.busy and self._batchable(h, job)
                and h.spec.name not in job.avoid)

    async def _link_batches(self, h: HostRt) -> None:
        """Send the host's look-ahead links, those due at once in one round trip."""
        while h.to_link:
            await asyncio.sleep(GATHER_STEP)
            batch, h.to_link = h.to_link, []
            await self._link_batch(h, batch)

    @staticmethod
    def _timed(h: HostRt, sent: float) -> None:
        """Count a start's or a link's round trip, sent at ``sent``, into the host's."""
        took = time.monotonic() - sent
        h.trip = took if not h.trip else 0.7 * h.trip + 0.3 * took

    def _unlink(self, j: JobRt, b: JobRt) -> None:
        """A link that was not sent: the job goes back to the queue as it was."""
        if j.next_id == b.id:
            j.next_id = -1
        if b.queued and b.linked and b.state == st.PENDING:
            b.busy = b.queued = b.linked = b.took = False
        self.wakeup.set()

    async def _link_batch(self, h: HostRt, batch: list[tuple[JobRt, JobRt]]) -> None:
        """One round trip: each job's dir and command, and a link to it as the next run of
        the running job before it (``.dssh/next``, made with ln: it fails if the wrapper
        has closed the slot already, having ended). Recorded as queued on the host first,
        so a head that dies meanwhile leaves it for the next head to take back or
        follow, as any chain's."""
        conn = h.conn
        live: list[tuple[JobRt, JobRt, int, str]] = []
        for j, b in batch:
            if (conn is None or j.next_id != b.id or j.state != st.RUNNING or j.busy
                    or j.host != h.spec.name or not b.queued or b.state != st.PENDING):
                self._unlink(j, b)
                continue
            attempt = b.attempts + 1
            live.append((j, b, attempt, self._job_dir(h, b, attempt)))
        if not live or conn is None:
            return
        now = time.time()
        with self.state.tx() as db:
            for j, b, attempt, bdir in live:
                self._record_starting(db, h, b, attempt, bdir, j.cpus, j.gpus, now,
                                      j.planned.name)
        own = f"{h.spec.ledger_dir}/w-{ledger.waiter_name(h.user or 'dssh', self.head_id)}"
        parts = [
            # Other heads wait for room here: the slot is theirs to have when it frees.
            f"for w in {q(h.spec.ledger_dir)}/w-*; do\n"
            f"  [ -e \"$w\" ] && [ \"$w\" != {q(own)} ] && {{ echo yield; exit 0; }}\n"
            "done\nset -C\n"]
        for k, (j, b, attempt, bdir) in enumerate(live):
            r = f"{j.remote_dir}/.dssh"
            c = f"{bdir}/.dssh"
            script = self._command_script(h, b, j.cpus, j.gpus, attempt, bdir)
            parts.append(
                f"r={q(r)}; c={q(c)}\n"
                # the job before it ended, or its wrapper is gone: too late
                'if [ -e "$r/next" ] || [ -s "$r/exit_code" ] || '
                '! { read -r p < "$r/pid" && kill -0 "$p"; } 2>/dev/null; then '
                f"echo 'late {k}'\n"
                f'elif ! mkdir -p "$c" || ! printf \'%s\\n\' {q(self.head_id)} '
                f'2>/dev/null > "$c/claim"; then echo \'exists {k}\'\n'
                f'elif mkdir -p {q(bdir + "/input")} {q(bdir + "/outputs")} && '
                f'printf \'%s\' {q(script)} >| "$c/command.sh" && '
                f"printf '%s\\n' {q(bdir + chr(10) + b.planned.name + '.' + str(attempt))} "
                '> "$c/as-next" && ln "$c/as-next" "$r/next" 2>/dev/null; then '
                f"echo 'linked {k}'\n"
                f"else rm -rf -- {q(bdir)}; echo 'late {k}'; fi\n")
        try:
            sent = time.monotonic()
            res = await conn.run("".join(parts), timeout=60)
            self._timed(h, sent)
            text = res.text
        except HostUnreachable:
            # Whether they were linked is unknown: they stay queued there, checked on
            # reconnect, as a chain's are.
            for j, b, _, _ in live:
                b.busy = b.queued = b.linked = False
                if j.next_id == b.id:
                    j.next_id = -1
            return
        except HostError:
            text = ""
        got: dict[int, str] = {}
        for line in text.splitlines():
            f = line.split()
            if len(f) == 2 and f[1].isdigit():
                got[int(f[1])] = f[0]
        again = False
        undo: list[str] = []
        with self.state.tx() as db:
            for k, (j, b, attempt, bdir) in enumerate(live):
                what = got.get(k, "")
                if (b.state != st.STARTING or b.attempts != attempt or b.host != h.spec.name
                        or not b.queued):
                    continue  # taken, given back or requeued since, by what the host said
                if what == "linked":
                    continue  # its turn comes when the job before it has ended
                if j.next_id == b.id:
                    j.next_id = -1
                if what == "exists":
                    self._follow(h, b, attempt, db=db)
                    b.queued = b.linked = False
                    again = True
                    continue
                self._unstart(h, b, attempt, undo=True, db=db)
                if what != "late":  # (a late one's dir is gone already)
                    undo.append(bdir)
        if undo:
            with contextlib.suppress(HostError):
                await conn.run("rm -rf -- " + " ".join(q(x) for x in undo) + "\n", timeout=60)
        if again:
            await self._reattach(h, quiet=True)
        self.wakeup.set()

    def _take_requests(self) -> None:
        """Requests other commands left for this head: `dssh cancel` while it runs."""
        for r in self.state.open_requests(self.sweep_id):
            stopped = dropped = 0
            if r["kind"] == "cancel":
                targets = ([self.by_name[r["job"]]] if r["job"] in self.by_name
                           else [] if r["job"] else list(self.jobs.values()))
                for j in targets:
                    if j.state == st.PENDING and not j.busy:
                        self._set(j, "cancelled", state=st.CANCELLED,
                                  reason="cancelled while queued")
                        dropped += 1
                    elif j.state in st.ACTIVE_STATES or j.busy:
                        j.cancel = True
                        self.cancelling.add(j.id)
                        if j.state in (st.RUNNING, st.SUSPENDED) and not j.busy:
                            self._spawn(self._kill(j))
                        stopped += 1
                if targets:
                    self.reporter.event("job", f"cancel: stopping {stopped} running job(s), "
                                               f"dropping {dropped} queued")
            self.state.finish_request(r["id"], json.dumps({"stopped": stopped,
                                                            "dropped": dropped}))

    async def _kill(self, j: JobRt) -> None:
        """Stop a job's tree on its host; it then ends, and is collected, as CANCELLED."""
        from .cancel import kill_script

        h = self.hosts.get(j.host or "")
        if h is None or h.conn is None or not j.remote_dir:
            return
        with contextlib.suppress(HostError):
            await h.conn.run(kill_script([j.remote_dir], remove=False), timeout=120)

    def _uncollectable(self) -> DsshError | None:
        """When every job left has ended but the results dir refused it twice, the run
        stops: waiting longer would only hold the hosts' results back from a later run."""
        # (a queued job has not ended: no need to look at each of a large sweep's jobs, a
        # few times a second, while any is queued)
        if self.starting or self._finished() or self.by_state.get(st.PENDING):
            return None
        left = [j for j in self.jobs.values() if j.state not in st.FINISHED_STATES]
        if not all(
                j.uncollected and j.collect_fails >= 2 and not j.busy for j in left):
            return None
        return ResultsDirError(
            f"{len(left)} job(s) ended but could not be collected: {left[0].uncollected}\n"
            f"  their files are safe on the hosts; free some space or fix the permissions, "
            f"then run `{self.resume_command()}` to collect them (they will not run again)")

    def _stuck(self) -> DsshError | None:
        """Why pending jobs can never run in this run, or None while there is hope."""
        if not self.by_state.get(st.PENDING):
            return None
        if any(h.status in ("connecting", "building", "lost", "paused")
               for h in self.hosts.values()):
            return None
        ready = [h for h in self.hosts.values() if h.status == "ready" and h.slots]
        need = self._need
        if ready and not unrunnable(need, [h.slots for h in ready if h.slots]):
            return None
        if any(self.by_state.get(a) for a in st.ACTIVE_STATES):
            return None
        failed_builds = [h for h in self.hosts.values() if h.status == "failed"
                         and h.detail.startswith("build failed")]
        if failed_builds and not ready:
            logs = "\n".join(f"  {h.spec.name}: {h.detail}" for h in failed_builds)
            return BuildFailed(f"the build failed on every capable host:\n{logs}")
        why = "\n".join(f"  {h.spec.name}: {h.status}{': ' + h.detail if h.detail else ''}"
                        for h in self.hosts.values())
        if ready:
            sizes = ", ".join(f"{h.spec.name}: {h.slots.cpus} cpus, {len(h.slots.gpus)} gpus"
                              for h in ready if h.slots)
            why = (f"  every job needs {self.sweep.run.cpus or 'all'} cpus and "
                   f"{self.sweep.run.gpus} gpus; the reachable hosts offer {sizes}")
        return NoCapableHost(f"no reachable host can run this sweep's jobs:\n{why}")

    async def run(self) -> RunResult:
        """Drive the sweep to its end: the frame (lock, notifications, closing) is the same
        for workstations and for a cluster (slurm_run.SlurmHead); ``_drive`` differs."""
        capable = self.check_hosts()
        self.prepare()
        if self._gc_held:
            asyncio.get_running_loop().call_later(GC_HOLD, self._gc_back)
        try:
            if self._finished():
                await self._stop_leftovers()
                return self.finish(resumed=True)
            result = await self._drive(capable)
            await self._notify_end(result)
            return result
        except DsshError as e:
            await self._notify_end(None, error=e)
            raise
        finally:
            for h in self.hosts.values():
                if h.recall is not None:
                    h.recall.cancel()
            for t in list(self.tasks):
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.gather(*(h.conn.close() for h in self.hosts.values() if h.conn),
                                 return_exceptions=True)
            self.lock.release()

    async def _drive(self, capable: list[Host]) -> RunResult:
        """Workstations: one task per host connects, builds and takes jobs; this loop
        schedules until every job has ended."""
        nt = self.sweep.notify
        if nt is not None and nt.matrix and notify.command_for(nt) is None:
            self.reporter.event("warning", f"meta.matrix asks to notify {nt.matrix}: dssh "
                                           "sends it with the command in "
                                           "$DSSH_NOTIFY_MATRIX (docs/notify.md), which is "
                                           "not set; no message will be sent")
        for host in capable:
            self.hosts[host.name] = HostRt(host)
        for h in self.hosts.values():
            self._spawn(self.host_main(h))
        self.reporter.update(self)
        while not self._finished() and not self._halted_and_idle():
            if self.fatal is not None:
                raise self.fatal
            now = time.monotonic()
            if now - self._last_checks >= CHECK_EVERY:
                # Requests and stalls are looked at a few times a second, not at every
                # event: with thousands of jobs ending, each look would cost the head.
                self._last_checks = now
                self._take_requests()
                blocked = self._uncollectable()
                if blocked is not None:
                    self.write_summary()
                    raise blocked
            stuck = self._stuck()
            if stuck is not None:
                self.write_summary()
                raise stuck
            self._schedule()
            self.wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when
            # the event was set in the moment the task was cancelled, and a head woken many
            # times a second by ending jobs would then miss the user's Ctrl-C.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.wakeup.wait()
            self.reporter.update(self)
        if self.cleanups:
            await asyncio.wait(list(self.cleanups), timeout=60)
        await self._stop_leftovers()
        await asyncio.gather(*(self._unwait(h) for h in self.hosts.values()
                               if h.registered))
        # Old marks go once nothing is left to start (see _schedule), off the path of the
        # starts; where that did not happen (a host that came late, or was lost meanwhile),
        # now.
        await asyncio.gather(*(self._tidy_last(h) for h in self.hosts.values()))
        self._report_inputs()
        return self.finish()

    # -- failing fast and telling people ------------------------------------------------------
    def _count_failure(self, job: JobRt) -> None:
        if job.failure_counted == job.attempts:
            return
        job.failure_counted = job.attempts
        self.failures += 1
        if self.failures == 1:
            self.first_failure = job.id
        if self.max_failures and self.failures >= self.max_failures and not self.halted:
            self.halted = True
            running = sum(1 for j in self.jobs.values()
                          if j.state in st.ACTIVE_STATES and j is not job)
            queued = sum(1 for j in self.jobs.values() if j.state == st.PENDING)
            self.reporter.event(
                "warning", f"{self.failures} job(s) failed (max_failures {self.max_failures}): "
                           f"no new job starts; {running} running finish, {queued} queued "
                           f"stay queued (`{self.resume_command()}` starts them)")

    def _failed_for_good(self, h: HostRt, job: JobRt, status: str, exit_code: int | None) -> None:
        self._count_failure(job)
        first = self.first_failure == job.id
        if notify.wants(self.sweep.notify, "failure", first):
            stderr = self.results_dir / job.planned.name / "stderr.txt"
            sending = asyncio.ensure_future(self._notify({
                "event": "failure", "sweep": self.sweep.key, "job": job.planned.name,
                "status": status, "exit_code": exit_code, "host": h.spec.name,
                "attempts": job.attempts, "results": str(self.results_dir / job.planned.name),
                "summary": f"{self.sweep.key}: {job.planned.name} {status} on {h.spec.name}"
                           + (f" (exit {exit_code})" if exit_code is not None else ""),
                "stderr_tail": notify.tail(stderr)}))
            self.cleanups.add(sending)  # the run waits for it before it ends
            sending.add_done_callback(self.cleanups.discard)

    def _halted_and_idle(self) -> bool:
        return self.halted and not self.starting and not any(
            j.state in st.ACTIVE_STATES or j.busy for j in self.jobs.values())

    async def _notify(self, payload: dict[str, Any]) -> None:
        assert self.sweep.notify is not None

        def report(kind: str, message: str) -> None:
            self.reporter.event(kind, message)
            with contextlib.suppress(Exception), self.state.tx() as db:
                self.state.event(db, self.sweep_id, None, "notify", None,
                                 {"event": payload["event"], "result": message})

        await notify.send(self.sweep.notify, payload, report)

    async def _notify_end(self, result: RunResult | None, error: DsshError | None = None
                          ) -> None:
        if not notify.wants(self.sweep.notify, "end", False):
            return
        rows = self.state.jobs(self.sweep_id) if self.sweep_id else []
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        failed = [r for r in rows if r["state"] in (st.FAILED, st.TIMEOUT)]
        status = "error" if error is not None else "ok" if result and result.exit_code == 0 \
            else "failed"
        text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        summary = (f"{self.sweep.key}: {len(rows)} jobs: {text}"
                   + (f"; stopped: {str(error).splitlines()[0]}" if error else "")
                   + (f"; stopped after {self.failures} failures" if self.halted else ""))
        now = time.time()
        await self._notify({
            "event": "end", "sweep": self.sweep.key, "status": status,
            "exit_code": error.exit_code if error else result.exit_code if result else 1,
            "jobs": len(rows), "counts": counts, "summary": summary,
            "results": str(self.results_dir), "started": _iso(self.started),
            "finished": _iso(now), "seconds": round(now - self.started, 1),
            "error": str(error) if error else None, "halted": self.halted,
            "failed_jobs": [{"job": r["name"], "status": r["state"], "exit_code": r["exit_code"],
                             "host": r["host"],
                             "stderr_tail": notify.tail(self.results_dir / r["name"]
                                                        / "stderr.txt")}
                            for r in failed[:20]]})

    def _report_inputs(self) -> None:
        """Per host: how much input crossed the network, and how much the store had."""
        for h in self.hosts.values():
            s = h.store
            if s is None or not (s.sent or s.reused):
                continue
            self.reporter.event(
                "inputs", f"{h.spec.name}: sent {s.sent} input file(s), "
                          f"{s.uploaded / (1 << 20):.1f} MiB; {s.reused} already in its "
                          "store", host=h.spec.name, sent=s.sent, sent_bytes=s.uploaded,
                reused=s.reused)

    def finish(self, resumed: bool = False) -> RunResult:
        if not self.write_summary():
            raise ResultsDirError(
                f"every job is collected, but {self.results_dir / 'summary.csv'} could not be "
                "written (see above); run the sweep again once the results dir is writable")
        results = [self._result(r) for r in self.state.each_job(
            self.sweep_id, "name, state, host, attempts, exit_code, params")]
        ok = all(r.status == st.COMPLETED for r in results)
        return RunResult(self.sweep.key, self.results_dir, results, 0 if ok else 1,
                         "already complete" if resumed else "")

    def _result(self, r: Any) -> JobResult:
        """A job's result from its state row, sharing what the head holds already (its
        name, its parameters, the words for its state and host) rather than a copy each."""
        j = self.by_name.get(r["name"])
        if j is not None:
            name, keys, values = j.planned.name, j.planned.keys, j.planned.values
        else:  # (no longer in the sweep file, but it ran)
            p = json.loads(r["params"])
            name, keys, values = r["name"], tuple(p), tuple(p.values())
        words = self._words
        status = words.setdefault(r["state"], r["state"])
        host = r["host"] and words.setdefault(r["host"], r["host"])
        return JobResult(name, status, host, r["attempts"], r["exit_code"], keys, values,
                         self.results_dir)

    def write_summary(self) -> bool:
        """Write summary.csv; False (and a warning) when the results dir refuses it."""
        pnames = list(self.sweep.params)
        for j in self.sweep.jobs:
            pnames += [k for k in j.params if k not in pnames]
        rows = self.state.each_job(self.sweep_id, "name AS job, state AS status, host, "
                                                  "attempts, exit_code, started, finished, params")
        path = self.results_dir / "summary.csv"
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            write_summary(path, rows, pnames)
        except OSError as e:
            self.reporter.event("warning", f"cannot write {path}: {e.strerror or e}")
            return False
        return True


async def run_sweep(sweep: Sweep, inventory: Inventory, options: RunOptions | None = None,
                    reporter: Reporter | None = None, sweep_file: str | None = None) -> RunResult:
    head = Head(sweep, inventory, options, reporter, sweep_file)
    try:
        return await head.run()
    finally:
        head.close()

"""The head's memory: one SQLite file with sweeps, jobs, attempts, builds and events.

Every job transition is written in a transaction before the head acts on it, and is
also appended to ``events``, so a run can be replayed and a killed head resumed
(SPEC §7). WAL mode: readers (``dssh status``) never block the running head.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DsshError
from .redact import redact, redact_data

SCHEMA_VERSION = 3
# 1 -> 2: jobs.retry_base (attempts made before --rerun-failed gave a job new retries)
# 2 -> 3: attempts.retired (a collected attempt's dir on its host was emptied to its mark)

# Slurm's words for job states; users already know them.
PENDING = "PENDING"
STARTING = "STARTING"  # an attempt is recorded and being launched
RUNNING = "RUNNING"
SUSPENDED = "SUSPENDED"  # its host's owner paused the host: its processes are stopped
COMPLETED = "COMPLETED"
FAILED = "FAILED"
TIMEOUT = "TIMEOUT"
CANCELLED = "CANCELLED"
FINISHED_STATES = (COMPLETED, FAILED, TIMEOUT, CANCELLED)
# Attempt states beyond the job states: the head gave up on an attempt whose host was
# lost (a copy may still be there), and later stopped and removed that copy.
ABANDONED = "ABANDONED"
STOPPED = "STOPPED"
ACTIVE_STATES = (STARTING, RUNNING, SUSPENDED)


# The note (jobs.reason) of a job handed to a host's slot in a chain (SPEC §5), STARTING
# until the job before it in its slot ends: "queued on HOST after JOB".
QUEUED_ON = "queued on "


def summary_counts(counts: dict[str, int], on_hosts: int = 0) -> str:
    """``done N  running N  queued N  failed N`` (and suspended, cancelled when there are
    some). ``on_hosts``: of the STARTING jobs, those queued on a host behind another job
    of their slot's chain: shown as queued there, not as running."""
    done = counts.get("COMPLETED", 0)
    running = counts.get("RUNNING", 0) + counts.get("STARTING", 0) - on_hosts
    suspended = counts.get("SUSPENDED", 0)
    queued = counts.get("PENDING", 0)
    failed = counts.get("FAILED", 0) + counts.get("TIMEOUT", 0)
    parts = [f"done {done}", f"running {running}", f"queued {queued}", f"failed {failed}"]
    if on_hosts:
        parts.insert(2, f"queued on hosts {on_hosts}")
    if suspended:
        parts.insert(2, f"suspended {suspended}")
    if counts.get("CANCELLED"):
        parts.append(f"cancelled {counts['CANCELLED']}")
    return "  ".join(parts)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    sweep_file TEXT,
    results_dir TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (namespace, name)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    params TEXT NOT NULL,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    remote_dir TEXT,
    pid INTEGER,
    cpus INTEGER,
    gpus TEXT,
    exit_code INTEGER,
    started REAL,
    finished REAL,
    reason TEXT,
    retry_base INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sweep_id, name)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (sweep_id, state);
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (sweep_id, seq);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    host TEXT NOT NULL,
    remote_dir TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    started REAL,
    finished REAL,
    reason TEXT,
    retired INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS builds (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    build_id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (sweep_id, host)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    sweep_id INTEGER NOT NULL,
    job_id INTEGER,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_sweep ON events (sweep_id, id);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    sweep_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    job TEXT,
    time REAL NOT NULL,
    done REAL,
    result TEXT
);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    paused_by TEXT,
    paused_until REAL,
    detail TEXT,
    updated REAL NOT NULL
);
"""
# What a head looks for as it connects to a host (collected runs whose dirs were not emptied
# yet, copies given up on) is a few rows among every attempt a sweep made: found through
# indexes of those rows alone, not by a look at each of the sweep's jobs (a sweep of 100,000
# jobs on 100 hosts spent over a second of the head's connection set-up on that). Made once
# the columns they use exist (older files gain attempts.retired in _migrate).
_INDEXES = """
CREATE INDEX IF NOT EXISTS attempts_unretired ON attempts (host) WHERE retired=0;
CREATE INDEX IF NOT EXISTS attempts_abandoned ON attempts (state, host)
    WHERE state='ABANDONED';
"""
# (sweep_id, host, *FINISHED_STATES) and (sweep_id, host or None, host or None)
UNRETIRED = ("SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE j.sweep_id=? "
             "AND a.host=? AND a.retired=0 AND a.state IN (?,?,?,?) ORDER BY a.id")
ABANDONED_ON = ("SELECT a.*, j.name AS job FROM attempts a JOIN jobs j ON j.id = a.job_id "
                f"WHERE j.sweep_id=? AND a.state='{ABANDONED}' AND (? IS NULL OR a.host=?) "
                "ORDER BY a.id")


def default_state_path() -> Path:
    env = os.environ.get("DSSH_STATE")
    if env:
        return Path(env)
    from platformdirs import user_state_path

    return user_state_path("dssh") / "state.sqlite"


class State:
    """A connection to the state file. Cheap to open; use one per head or command."""

    def __init__(self, path: str | os.PathLike | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path) if path is not None else default_state_path()
        if readonly:
            if not self.path.exists():
                self.db = sqlite3.connect(":memory:")
                self.db.executescript(_SCHEMA)
            else:
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():  # the state is the user's alone (SQLite's -wal and
                # -shm files take the same permissions)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                os.close(fd)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        self.db.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        with self.tx():
            self._execute_all(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            version = int(row[0]) if row else SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise DsshError(f"{self.path} was written by a newer dssh (state schema "
                                f"{version}, this one knows {SCHEMA_VERSION}): upgrade dssh, or "
                                "use another state file (--state)")
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
            if "retry_base" not in cols:
                self.db.execute("ALTER TABLE jobs ADD COLUMN retry_base INTEGER NOT NULL "
                                "DEFAULT 0")
            cols = {r[1] for r in self.db.execute("PRAGMA table_info(attempts)")}
            if "retired" not in cols:
                # Heads before this version removed collected dirs whole: nothing to do.
                self.db.execute("ALTER TABLE attempts ADD COLUMN retired INTEGER NOT NULL "
                                "DEFAULT 0")
                self.db.execute("UPDATE attempts SET retired=1")
            self._execute_all(_INDEXES)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)",
                            (str(SCHEMA_VERSION),))

    def _execute_all(self, script: str) -> None:
        """Each statement of ``script`` in the open transaction (executescript would
        commit it)."""
        for stmt in script.split(";"):
            if stmt.strip():
                self.db.execute(stmt)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- sweeps -----------------------------------------------------------------------------
    def find_sweep(self, namespace: str | None, name: str) -> sqlite3.Row | None:
        if namespace is None:
            rows = self.db.execute("SELECT * FROM sweeps WHERE name=?", (name,)).fetchall()
            return rows[0] if len(rows) == 1 else None
        return self.db.execute("SELECT * FROM sweeps WHERE namespace=? AND name=?",
                               (namespace, name)).fetchone()

    def sweeps(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM sweeps ORDER BY updated DESC").fetchall()

    def upsert_sweep(self, namespace: str, name: str, sweep_file: str, results_dir: str) -> int:
        now = time.time()
        with self.tx() as db:
            row = db.execute("SELECT id FROM sweeps WHERE namespace=? AND name=?",
                             (namespace, name)).fetchone()
            if row:
                db.execute("UPDATE sweeps SET sweep_file=?, results_dir=?, updated=? WHERE id=?",
                           (sweep_file, results_dir, now, row[0]))
                return int(row[0])
            cur = db.execute("INSERT INTO sweeps (namespace, name, sweep_file, results_dir, "
                             "created, updated) VALUES (?,?,?,?,?,?)",
                             (namespace, name, sweep_file, results_dir, now, now))
            return int(cur.lastrowid or 0)

    def touch_sweep(self, sweep_id: int) -> None:
        self.db.execute("UPDATE sweeps SET updated=? WHERE id=?", (time.time(), sweep_id))

    # -- jobs -------------------------------------------------------------------------------
    def jobs(self, sweep_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM jobs WHERE sweep_id=? ORDER BY seq",
                               (sweep_id,)).fetchall()

    def each_job(self, sweep_id: int, columns: str = "*", *,
                 rows: bool = True) -> Iterator[Any]:
        """The sweep's jobs in order, one row at a time (not all in memory at once); plain
        tuples when not ``rows`` (faster to make, for a loop over 100,000 jobs)."""
        cur = self.db.cursor()
        if not rows:
            cur.row_factory = None
        yield from cur.execute(f"SELECT {columns} FROM jobs WHERE sweep_id=? ORDER BY seq",
                               (sweep_id,))

    def job(self, job_id: int) -> sqlite3.Row:
        return self.db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()

    def counts(self, sweep_id: int) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE sweep_id=? GROUP BY state", (sweep_id,))}

    def queued_on_hosts(self, sweep_id: int) -> int:
        """STARTING jobs queued on a host behind another of their slot's chain."""
        return self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE sweep_id=? AND state=? AND reason LIKE ?",
            (sweep_id, STARTING, QUEUED_ON + "%")).fetchone()[0]

    def event(self, db: sqlite3.Connection, sweep_id: int, job_id: int | None, kind: str,
              host: str | None = None, detail: Any = None) -> None:
        db.execute("INSERT INTO events (sweep_id, job_id, time, kind, host, detail) "
                   "VALUES (?,?,?,?,?,?)",
                   (sweep_id, job_id, time.time(), kind, host,
                    None if detail is None else json.dumps(redact_data(detail))))

    def set_job(self, job_id: int, kind: str, *, db: sqlite3.Connection | None = None,
                sweep_id: int = 0, **fields: Any) -> None:
        """Update a job and log the transition as one event, atomically (within ``db``,
        a transaction the caller holds open, when given)."""
        if db is None:
            with self.tx() as db:
                self.set_job(job_id, kind, db=db, sweep_id=sweep_id, **fields)
            return
        fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        host = fields.get("host")
        if not sweep_id or host is None:
            row = db.execute("SELECT sweep_id, host FROM jobs WHERE id=?", (job_id,)).fetchone()
            sweep_id, host = row[0], fields.get("host", row[1])
        if fields:
            cols = ", ".join(f"{k}=?" for k in fields)
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))
        self.event(db, sweep_id, job_id, kind, host,
                   {k: v for k, v in fields.items() if k not in ("params",)} or None)

    def undo_start(self, job_id: int, attempt: int, db: sqlite3.Connection | None = None
                   ) -> None:
        """A start that never reached its host (the host's ledger had no room): the job is
        queued again as it was, and neither the attempt nor its start event remain."""
        if db is None:
            with self.tx() as db:
                self.undo_start(job_id, attempt, db)
            return
        db.execute("DELETE FROM attempts WHERE job_id=? AND attempt=?", (job_id, attempt))
        db.execute("DELETE FROM events WHERE id=(SELECT MAX(id) FROM events WHERE "
                   "job_id=? AND kind='starting')", (job_id,))
        db.execute("UPDATE jobs SET state='PENDING', attempts=?, reason=NULL WHERE id=?",
                   (attempt - 1, job_id))

    def set_attempt(self, job_id: int, attempt: int, state: str, reason: str | None = None
                    ) -> None:
        self.db.execute("UPDATE attempts SET state=?, reason=COALESCE(?, reason) "
                        "WHERE job_id=? AND attempt=?", (state, reason, job_id, attempt))

    def unretired(self, sweep_id: int, host: str) -> list[sqlite3.Row]:
        """Collected attempts on ``host`` whose dir was not yet emptied to its mark (the
        head that collected them died first, or the host did not answer)."""
        return self.db.execute(UNRETIRED, (sweep_id, host, *FINISHED_STATES)).fetchall()

    def set_retired(self, job_id: int, attempt: int) -> None:
        self.db.execute("UPDATE attempts SET retired=1 WHERE job_id=? AND attempt=?",
                        (job_id, attempt))

    def attempts(self, sweep_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT a.*, j.name AS job FROM attempts a JOIN jobs j ON j.id = a.job_id "
            "WHERE j.sweep_id=? ORDER BY a.id", (sweep_id,)).fetchall()

    def builds(self, sweep_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM builds WHERE sweep_id=? ORDER BY host",
                               (sweep_id,)).fetchall()

    def build_used_elsewhere(self, sweep_id: int, host: str, build_id: str) -> bool:
        """Does another sweep in this state file use the same build on ``host``?"""
        return self.db.execute(
            "SELECT 1 FROM builds WHERE sweep_id<>? AND host=? AND build_id=? LIMIT 1",
            (sweep_id, host, build_id)).fetchone() is not None

    def abandoned(self, sweep_id: int, host: str | None = None) -> list[sqlite3.Row]:
        """Attempts given up on with their host unreachable: copies that may still be there."""
        return self.db.execute(ABANDONED_ON, (sweep_id, host, host)).fetchall()

    def set_host(self, name: str, status: str, paused_by: str | None,
                 paused_until: float | None, detail: str | None) -> None:
        """What the last head saw of a host (paused or not), for ``dssh status``."""
        self.db.execute("INSERT OR REPLACE INTO hosts VALUES (?,?,?,?,?,?)",
                        (name, status, paused_by, paused_until, detail, time.time()))

    def hosts(self) -> list[sqlite3.Row]:
        try:
            return self.db.execute("SELECT * FROM hosts ORDER BY name").fetchall()
        except sqlite3.OperationalError:  # a state file from before hosts were recorded
            return []

    # -- requests to a running head (dssh cancel while a head drives the sweep) ------------
    def request(self, sweep_id: int, kind: str, jobs: list[str] | None) -> list[int]:
        with self.tx() as db:
            return [int(db.execute("INSERT INTO requests (sweep_id, kind, job, time) "
                                   "VALUES (?,?,?,?)", (sweep_id, kind, j, time.time())
                                   ).lastrowid or 0) for j in (jobs or [None])]

    def open_requests(self, sweep_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM requests WHERE sweep_id=? AND done IS NULL "
                               "ORDER BY id", (sweep_id,)).fetchall()

    def finish_request(self, rid: int, result: str) -> None:
        self.db.execute("UPDATE requests SET done=?, result=? WHERE id=?",
                        (time.time(), result, rid))

    def request_results(self, ids: list[int]) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"SELECT * FROM requests WHERE id IN ({marks})", ids).fetchall()

    def events(self, sweep_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT e.*, j.name AS job FROM events e LEFT JOIN jobs j "
                               "ON j.id = e.job_id WHERE e.sweep_id=? ORDER BY e.id",
                               (sweep_id,)).fetchall()

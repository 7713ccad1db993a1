"""The state file's schema is versioned: older files are migrated, newer ones refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from distribute_ssh import state as st
from distribute_ssh.errors import DsshError


def _v2_file(path: Path) -> None:
    """A state file as dssh with schema 2 wrote it: no attempts.retired, one attempt."""
    s = st.State(path)
    sid = s.upsert_sweep("default", "old", "", "/r")
    with s.tx() as db:
        db.execute("INSERT INTO jobs (sweep_id, seq, name, params, definition, state) "
                   "VALUES (?,?,?,?,?,?)", (sid, 0, "j", "{}", "d", st.COMPLETED))
        db.execute("INSERT INTO attempts (job_id, attempt, host, remote_dir, state) "
                   "VALUES (1, 1, 'h', '/w/j/1', 'COMPLETED')")
        db.execute("DROP INDEX attempts_unretired")  # (schema 2 had neither)
        db.execute("ALTER TABLE attempts DROP COLUMN retired")
        db.execute("UPDATE meta SET value='2' WHERE key='schema'")
    s.close()


def test_an_older_state_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _v2_file(path)
    s = st.State(path)
    assert s.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"
    # attempts collected by an older head had their dirs removed whole: nothing left to do
    assert s.unretired(1, "h") == []
    assert s.db.execute("SELECT retired FROM attempts").fetchone()[0] == 1
    s.close()


def test_what_a_head_looks_for_on_connecting_needs_no_scan_of_the_jobs(
        tmp_path: Path) -> None:
    """A head connecting to each of 100 hosts looks for that host's unretired and abandoned
    attempts: with a sweep of 100,000 jobs, a plan that visits each job cost seconds. The
    plans must go through the partial indexes of those few attempts."""
    s = st.State(tmp_path / "state.db")
    sid = s.upsert_sweep("default", "big", "", "/r")
    with s.tx() as db:
        db.executemany("INSERT INTO jobs (sweep_id, seq, name, params, definition, state) "
                       "VALUES (?,?,?,?,?,?)",
                       [(sid, i, f"j{i}", "{}", "d", st.COMPLETED) for i in range(2000)])
        db.executemany("INSERT INTO attempts (job_id, attempt, host, remote_dir, state, "
                       "retired) VALUES (?,1,?,?,?,?)",
                       [(i + 1, f"h{i % 7}", f"/w/j{i}/1",
                         st.ABANDONED if i % 500 == 3 else st.COMPLETED, int(i % 300 != 5))
                        for i in range(2000)])

    assert [r["remote_dir"] for r in s.unretired(sid, "h5")] == ["/w/j5/1"]
    assert [r["job"] for r in s.abandoned(sid, "h3")] == ["j3"]
    assert [r["job"] for r in s.abandoned(sid)] == ["j3", "j503", "j1003", "j1503"]
    for sql, args, index in [
            (st.UNRETIRED, (sid, "h5", *st.FINISHED_STATES), "attempts_unretired"),
            (st.ABANDONED_ON, (sid, "h3", "h3"), "attempts_abandoned"),
            (st.ABANDONED_ON, (sid, None, None), "attempts_abandoned")]:
        plan = " | ".join(r[3] for r in s.db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert f"INDEX {index}" in plan, plan
        assert "jobs_seq" not in plan and "autoindex_jobs" not in plan, plan
    s.close()


def test_a_newer_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    st.State(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(DsshError, match="written by a newer dssh"):
        st.State(path)

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


def test_a_newer_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    st.State(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    with pytest.raises(DsshError, match="written by a newer dssh"):
        st.State(path)

"""migrate_after (SPEC §6d): a job suspended too long on a paused workstation is asked to
save its state, stopped, and run on another workstation from what it saved. On real sshd
workstations, with the example solver of examples/checkpoint."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from helpers import dssh, start_head, summary, user_commands, wait_for, write_yaml

SOLVER = Path(__file__).resolve().parent.parent / "examples" / "checkpoint" / "solver.sh"


def pause_ws1_for_long(d: Path, ws, sweep: Path, name: str, settle: float = 0.0) -> str:
    """Run the sweep's one job on ws1 (ws2 paused meanwhile), then pause ws1 and free ws2
    until the run ends; the head's output."""
    w1, w2 = ws.hosts[0], ws.hosts[1]
    flag1, flag2 = w1.home / ".distribute-pause", w2.home / ".distribute-pause"
    flag2.touch()  # ws2 is taken for now: the job starts on ws1
    head = start_head(d, "run", sweep, "-i", d / "inventory.yaml", "--hosts",
                      f"{w1.name},{w2.name}")
    try:
        def on_ws1() -> bool:
            st = json.loads(dssh("status", name, "--json", cwd=d).stdout or "{}")
            return any(j["state"] == "RUNNING" and j["host"] == w1.name
                       for j in st.get("jobs", []))

        assert wait_for(on_ws1, 60), "the job did not start on ws1"
        time.sleep(settle)  # a few steps done
        flag2.unlink()
        flag1.touch()  # ws1's owner needs the machine, for long
        out, err = head.communicate(timeout=120)
    finally:
        flag1.unlink(missing_ok=True)
        flag2.unlink(missing_ok=True)
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, (out, err)
    return out


def test_a_long_pause_moves_the_job_with_its_checkpoint(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1, w2 = ws.hosts[0], ws.hosts[1]
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w1.name: {"cpus": 1}, w2.name: {"cpus": 1}})
    shutil.copy(SOLVER, tmp_path / "solver.sh")
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "moving", "run": {
        "command": "sh input/solver.sh 12", "files": ["solver.sh"], "cpus": 1,
        "migrate_after": "3s", "migrate_signal": "USR1", "migrate_grace": "10s"}})
    out = pause_ws1_for_long(tmp_path, ws, sweep, "moving", settle=2.5)
    assert f"moving: moved off {w1.name} after a long pause; 2 files saved go with it" in out, out
    assert "FAILED" not in out and "quarantined" not in out, out
    results = tmp_path / "results/default/moving"
    (row,) = summary(results)
    assert row["status"] == "COMPLETED" and row["host"] == w2.name, row
    job = results / row["job"]
    assert (job / "result.txt").read_text() == "12\n"
    history = (job / "history").read_text().splitlines()
    # attempt 1 on ws1 saved at some step k > 0; attempt 2 on ws2 went on from k
    assert history[0] == f"attempt 1 on {history[0].split()[3]} as {w1.user}: from step 0"
    saved = int(history[1].rsplit(" ", 1)[1])
    assert 0 < saved < 12 and history[1].startswith("attempt 1 saved at step")
    assert history[2].endswith(f"as {w2.user}: from step {saved}"), history
    info = json.loads((job / "job.json").read_text())
    assert info["attempts"] == 2 and info["status"] == "COMPLETED"
    # the moved attempt's logs are kept like a retried one's; its checkpoint is gone
    assert (job / ".attempts" / "1" / "job.json").is_file()
    assert json.loads((job / ".attempts/1/job.json").read_text())["status"] == "MIGRATED"
    assert not (results / ".checkpoints").exists() or not any(
        (results / ".checkpoints").iterdir())
    # Nothing of it is left running on ws1
    assert not user_commands(w1.user, b"solver.sh")


def test_a_job_that_cannot_save_starts_over_elsewhere_and_is_not_a_failure(
        tmp_path: Path, fresh_workdirs) -> None:
    """No trap: the default SIGTERM ends it (exit 143). That is not a failure: no retry is
    used (retries: 0), no host is blamed; the next attempt starts from nothing."""
    ws = fresh_workdirs
    w1, w2 = ws.hosts[0], ws.hosts[1]
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        w1.name: {"cpus": 1, "migrate_after": "2s"}, w2.name: {"cpus": 1}})
    sweep = write_yaml(tmp_path / "sweep.yaml", {"name": "restart", "run": {
        "command": "ls input > {output}/seen.txt; sleep 5", "cpus": 1}})
    out = pause_ws1_for_long(tmp_path, ws, sweep, "restart")
    assert f"restart: moved off {w1.name} after a long pause; 1 file saved" in out, out
    assert "FAILED" not in out
    (row,) = summary(tmp_path / "results/default/restart")
    assert (row["status"], row["host"], row["attempts"]) == ("COMPLETED", w2.name, "2"), row
    # its first attempt's outputs came along as the checkpoint of the second
    job = tmp_path / "results/default/restart" / row["job"]
    assert (job / "seen.txt").read_text() == "checkpoint\n"
    first = json.loads((job / ".attempts/1/job.json").read_text())
    assert first["status"] == "MIGRATED" and first["exit_code"] == 143, first

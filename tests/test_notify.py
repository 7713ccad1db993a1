"""Notifications (`notify:`, and the original tool's `matrix`) and failing fast
(`max_failures:` / `--max-failures`). Jobs run on this machine as its own host: what is
tested here happens on the head."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import dssh, explain, summary, write, write_yaml

NOTIFIER = """#!/bin/sh
# A notifier as a user writes one: keeps what it was given, one file per call.
n=$(ls "$OUT" 2>/dev/null | wc -l)
cat > "$OUT/$n.json"
env | grep '^DSSH_NOTIFY_\\|^DSSH_MATRIX_' | sort > "$OUT/$n.env"
"""


def _calls(out: Path) -> list[tuple[dict, dict]]:
    calls = []
    for f in sorted(out.glob("*.json"), key=lambda p: int(p.stem)):
        env = dict(line.split("=", 1) for line in
                   f.with_suffix(".env").read_text().splitlines() if "=" in line)
        calls.append((json.loads(f.read_text()), env))
    return calls


def test_notify_at_the_end_and_on_each_failure(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    out.mkdir()
    write(tmp_path / "notifier.sh", NOTIFIER, 0o755)
    sweep = write_yaml(tmp_path / "n.yaml", {
        "name": "nt", "run": {"command": "echo working; echo \"trouble in {x}\" >&2; "
                                         "[ {x} != bad ]", "cpus": 1},
        "params": {"x": ["a", "bad", "c"]},
        "notify": {"command": f"OUT={out} sh {tmp_path / 'notifier.sh'}",
                   "when": ["end", "failure"]}})
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    calls = _calls(out)
    assert [c[0]["event"] for c in calls] == ["failure", "end"]
    fail, fenv = calls[0]
    assert fail["job"] == "x-bad" and fail["status"] == "FAILED" and fail["exit_code"] == 1
    assert fail["stderr_tail"] == "trouble in bad"
    assert fenv["DSSH_NOTIFY_EVENT"] == "failure" and fenv["DSSH_NOTIFY_JOB"] == "x-bad"
    end, eenv = calls[1]
    assert end["sweep"] == "default/nt" and end["status"] == "failed" and end["exit_code"] == 1
    assert end["counts"] == {"COMPLETED": 2, "FAILED": 1} and end["jobs"] == 3
    assert [f["job"] for f in end["failed_jobs"]] == ["x-bad"]
    assert end["failed_jobs"][0]["stderr_tail"] == "trouble in bad"
    assert end["results"] == str(tmp_path / "results/default/nt")
    assert eenv["DSSH_NOTIFY_STATUS"] == "failed"
    assert eenv["DSSH_NOTIFY_SUMMARY"] == "default/nt: 3 jobs: 2 COMPLETED, 1 FAILED"
    assert "notify (end): sent" in proc.stdout


def test_a_failing_notifier_is_reported_and_changes_nothing(tmp_path: Path) -> None:
    sweep = write_yaml(tmp_path / "n.yaml", {
        "name": "nf", "run": {"command": "true", "cpus": 1},
        "notify": {"command": "echo 'smtp: connection refused' >&2; exit 3"}})
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "notify (end): the command failed (exit 3): smtp: connection refused" in proc.stdout
    missing = write_yaml(tmp_path / "m.yaml", {
        "name": "nm", "run": {"command": "true", "cpus": 1},
        "notify": {"command": "no-such-mailer --to me"}})
    proc = dssh("run", missing, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "notify (end): the command failed (exit 127)" in proc.stdout


def test_bad_notify_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    sweep = write(tmp_path / "n.yaml", "name: nb\nrun: {command: 'true'}\n"
                                       "notify:\n  command: mail me\n  when: [ending]\n")
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 2
    assert "n.yaml:5: notify.when: 'ending' is not an event: use end" in proc.stderr
    sweep = write(tmp_path / "o.yaml", "name: nb\nrun: {command: 'true'}\n"
                                       "notify:\n  command: mail me\n  on: [end]\n")
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 2
    assert "o.yaml:5: unknown key notify.True: YAML reads on, off, yes and no as true or " \
           "false, also as keys (keys allowed in notify: command, when, matrix); write when:" \
           in proc.stderr
    sweep = write(tmp_path / "m.yaml", "name: nb\nrun: {command: 'true'}\nmax_failures: 0\n")
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 2 and "max_failures: must be at least 1, got 0" in proc.stderr
    ok = write(tmp_path / "ok.yaml", "name: nb\nrun: {command: 'true'}\n")
    proc = dssh("run", ok, "--max-failures", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--max-failures 0: give 1 or more" in proc.stderr


def test_max_failures_stops_new_starts_and_a_later_run_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    out.mkdir()
    write(tmp_path / "notifier.sh", NOTIFIER, 0o755)
    # one job at a time (cpus: all of this machine's): the order of events is fixed
    sweep = write_yaml(tmp_path / "ff.yaml", {
        "name": "ff", "run": {"command": "[ {i} -gt 4 ] || exit 2"},
        "params": {"i": list(range(1, 11))}, "max_failures": 2,
        "notify": {"command": f"OUT={out} sh {tmp_path / 'notifier.sh'}",
                   "when": ["end", "first-failure"]}})
    proc = dssh("run", sweep, cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    rows = {r["job"]: r["status"] for r in summary(tmp_path / "results/default/ff")}
    assert [rows[f"i-{i}"] for i in (1, 2)] == ["FAILED", "FAILED"]
    assert all(rows[f"i-{i}"] == "PENDING" for i in range(3, 11))
    assert "2 job(s) failed (max_failures 2): no new job starts" in proc.stdout
    table = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(table) if line.split()[:5] == [
        "job", "status", "exit", "host", "see"])
    assert table[head + 1].split()[:4] == ["i-1", "FAILED", "2", "localhost"]
    assert table[head + 1].endswith("results/default/ff/i-1/stderr.txt")
    assert table[head + 3].split()[:2] == ["i-3", "PENDING"]
    assert table[head + 3].endswith("not started (too many failures; run again to start it)")
    calls = _calls(out)
    assert [c[0]["event"] for c in calls] == ["failure", "end"]  # the first failure only
    assert calls[0][0]["job"] == "i-1" and calls[1][0]["halted"] is True
    # the next run starts the rest (its own count of failures starts at 0)
    proc = dssh("run", sweep, "--max-failures", "5", cwd=tmp_path)
    assert proc.returncode == 1, explain(proc)
    rows = {r["job"]: r["status"] for r in summary(tmp_path / "results/default/ff")}
    assert [rows[f"i-{i}"] for i in range(1, 11)] == ["FAILED"] * 4 + ["COMPLETED"] * 6


def test_the_original_matrix_field_goes_through_the_users_matrix_command(
        tmp_path: Path) -> None:
    out = tmp_path / "calls"
    out.mkdir()
    write(tmp_path / "notifier.sh", NOTIFIER, 0o755)
    write(tmp_path / "build.py", "print('built')\n")
    write(tmp_path / "job.py", "import sys\nprint('ran with', sys.argv[1])\n")
    job = write_yaml(tmp_path / "distribute-jobs.yaml", {
        "meta": {"batch_name": "mx", "namespace": "orig", "matrix": "@alice:lab.org",
                 "capabilities": []},
        "python": {"initialize": {"build_file": "build.py", "required_files": []},
                   "jobs": [{"name": "one", "file": "job.py"}]}})
    proc = dssh("run", job, cwd=tmp_path)
    assert proc.returncode == 0, explain(proc)
    assert "meta.matrix asks to notify @alice:lab.org" in proc.stdout
    assert "$DSSH_NOTIFY_MATRIX" in proc.stdout and not list(out.iterdir())
    proc = dssh("run", job, "--name", "mx2", cwd=tmp_path,
                env={"DSSH_NOTIFY_MATRIX": f"OUT={out} sh {tmp_path / 'notifier.sh'}"})
    assert proc.returncode == 0, explain(proc)
    (payload, env), = _calls(out)
    assert payload["sweep"] == "orig/mx2" and payload["status"] == "ok"
    assert env["DSSH_MATRIX_USER"] == "@alice:lab.org"

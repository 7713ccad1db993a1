"""The single-node Slurm cluster the suite starts (tests/slurmcluster.py, ``slurm_cluster``).

These check the test bed itself, the way later tests use it: job arrays with ``--output`` per
task, failed tasks and their exit codes, dependencies on a failed job, submission by a non-root
user who only has /etc/slurm/slurm.conf (as over SSH), and a clean stop and restart.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from slurmcluster import (
    CONF_MARKER,
    SYSTEM_CONF,
    SYSTEM_CONF_BACKUP,
    SlurmCluster,
    SlurmError,
    slurm_processes,
)
from workstations import Workstations, _ensure_user

TEST_USER = "dssh-slurmtest"


@pytest.fixture
def workdir(slurm_cluster: SlurmCluster) -> Path:
    """A fresh dir every user can write to (jobs of other users write there too)."""
    d = Path(tempfile.mkdtemp(prefix="w-", dir=slurm_cluster.dir))
    d.chmod(0o1777)
    return d


def test_array_runs_every_task_on_its_own_cpu(slurm_cluster: SlurmCluster, workdir: Path) -> None:
    job = slurm_cluster.sbatch(
        ["--array=0-3", "--cpus-per-task=1", f"--output={workdir}/out-%A_%a.txt",
         "--wrap", 'echo "$SLURM_ARRAY_TASK_ID $(nproc)" > "task-$SLURM_ARRAY_TASK_ID"'],
        cwd=workdir)
    states = slurm_cluster.wait_for(job, timeout=30)
    assert states == {t: ("COMPLETED", 0) for t in range(4)}
    for t in range(4):
        # --cpus-per-task=1 binds the task to one CPU (TaskPlugin=task/affinity)
        assert (workdir / f"task-{t}").read_text() == f"{t} 1\n"
        assert (workdir / f"out-{job}_{t}.txt").read_text() == ""
    assert slurm_cluster.queue(job) == []


def test_failed_task_shows_its_exit_code(slurm_cluster: SlurmCluster, workdir: Path) -> None:
    job = slurm_cluster.sbatch(
        ["--array=0-1", f"--output={workdir}/out-%a.txt",
         "--wrap", 'echo "task $SLURM_ARRAY_TASK_ID"; [ "$SLURM_ARRAY_TASK_ID" = 0 ] || exit 3'],
        cwd=workdir)
    assert slurm_cluster.wait_for(job, timeout=30) == {0: ("COMPLETED", 0), 1: ("FAILED", 3)}
    records = slurm_cluster.job_records(job)
    assert records[1]["ExitCode"] == "3:0" and records[1]["Reason"] == "NonZeroExitCode"
    assert (workdir / "out-1.txt").read_text() == "task 1\n"


def test_job_after_a_failed_one_never_runs(slurm_cluster: SlurmCluster, workdir: Path) -> None:
    """Slurm's default: the dependent job stays PENDING (DependencyNeverSatisfied) until
    cancelled; wait_for says so at once instead of waiting for its timeout."""
    failing = slurm_cluster.sbatch([f"--output={workdir}/f.txt", "--wrap", "exit 3"],
                                   cwd=workdir)
    after = slurm_cluster.sbatch(
        [f"--output={workdir}/a.txt", f"--dependency=afterok:{failing}", "--wrap", "touch ran"],
        cwd=workdir)
    assert slurm_cluster.wait_for(failing, timeout=30) == {None: ("FAILED", 3)}
    with pytest.raises(SlurmError, match="DependencyNeverSatisfied"):
        slurm_cluster.wait_for(after, timeout=15)
    record = slurm_cluster.job_records(after)[None]
    assert (record["JobState"], record["Reason"]) == ("PENDING", "DependencyNeverSatisfied")
    assert record["Dependency"] == f"afterok:{failing}(failed)"
    slurm_cluster.cancel_all()
    assert slurm_cluster.job_states(after) == {None: ("CANCELLED", 0)}
    assert not (workdir / "ran").exists() and not (workdir / "a.txt").exists()


def test_too_many_cpus_are_refused_at_submit(slurm_cluster: SlurmCluster, workdir: Path) -> None:
    """EnforcePartLimits=ALL: not a job that would pend forever (Reason=PartitionConfig)."""
    cpus = int(slurm_cluster.run(["sinfo", "-h", "-o", "%c"]).stdout)
    with pytest.raises(SlurmError, match="More processors requested than permitted"):
        slurm_cluster.sbatch([f"--cpus-per-task={cpus + 1}", f"--output={workdir}/o.txt",
                              "--wrap", "true"], cwd=workdir)


def test_non_root_user_submits_with_the_system_config(slurm_cluster: SlurmCluster,
                                                      workdir: Path) -> None:
    """As from a workstation user's SSH session: no SLURM_CONF, plain sbatch finds the
    cluster through /etc/slurm/slurm.conf, and the job runs as that user."""
    home = slurm_cluster.dir / "home" / TEST_USER
    home.mkdir(parents=True, exist_ok=True)
    pw = _ensure_user(TEST_USER, home, "/bin/bash")
    os.chown(home, pw.pw_uid, pw.pw_gid)
    assert SYSTEM_CONF.read_text() == slurm_cluster.conf.read_text()
    job = slurm_cluster.sbatch(
        ["--array=0-1", f"--output={home}/out-%a.txt",
         "--wrap", 'id -un > "$HOME/who-$SLURM_ARRAY_TASK_ID"'], cwd=home, user=TEST_USER)
    assert slurm_cluster.wait_for(job, timeout=30) == {0: ("COMPLETED", 0), 1: ("COMPLETED", 0)}
    assert slurm_cluster.job_records(job)[0]["UserId"] == f"{TEST_USER}({pw.pw_uid})"
    for t in (0, 1):
        out = home / f"who-{t}"
        assert out.read_text() == f"{TEST_USER}\n"
        assert out.stat().st_uid == pw.pw_uid
        assert pwd.getpwuid((home / f"out-{t}.txt").stat().st_uid).pw_name == TEST_USER


def test_workstation_user_submits_over_ssh(slurm_cluster: SlurmCluster,
                                          workstations: Workstations) -> None:
    """What the dssh slurm tests do: sbatch in a workstation user's SSH session."""
    ws = workstations[0]
    if not (workstations.real_sshd and ws.has_own_user):
        pytest.skip("needs the OpenSSH workstations with their own users")
    r = subprocess.run(ws.ssh_argv('cd && sbatch --parsable --output=slurm-test-%j.txt '
                                   '--wrap "id -un; echo \\$SLURM_JOB_ID"'),
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    job = int(r.stdout.strip().split(";")[0])
    assert slurm_cluster.wait_for(job, timeout=30) == {None: ("COMPLETED", 0)}
    out = ws.home / f"slurm-test-{job}.txt"
    assert out.read_text() == f"{ws.user}\n{job}\n"
    out.unlink()


def test_cancel_all_ends_running_and_pending_jobs(slurm_cluster: SlurmCluster,
                                                 workdir: Path) -> None:
    job = slurm_cluster.sbatch(
        ["--array=0-5", f"--output={workdir}/out-%a.txt", "--wrap", "sleep 60"], cwd=workdir)
    states = {}
    for _ in range(200):  # until some tasks run (the others wait for CPUs)
        states = slurm_cluster.job_states(job)
        if any(s.state == "RUNNING" for s in states.values()):
            break
        time.sleep(0.05)
    assert {s.state for s in states.values()} >= {"RUNNING", "PENDING"}
    slurm_cluster.cancel_all()
    assert slurm_cluster.queue() == []
    assert {s.state for s in slurm_cluster.job_states(job).values()} == {"CANCELLED"}
    assert not [p for p in slurm_processes() if p[1] == "slurmstepd"]


def test_stop_leaves_nothing_and_restart_is_fresh(slurm_cluster: SlurmCluster) -> None:
    """stop(): no Slurm process of the cluster left, SLURM_CONF and /etc/slurm/slurm.conf as
    before (a site's own file is kept aside and put back); start(): no old jobs."""
    cluster = slurm_cluster
    planted = False
    try:
        cluster.stop()
        assert [p for p in slurm_processes() if str(cluster.dir) in p[2]
                or p[1] in ("slurmctld", "slurmscriptd", "slurmd", "slurmstepd")] == []
        assert os.environ.get("SLURM_CONF") != str(cluster.conf)
        assert not SYSTEM_CONF_BACKUP.exists()
        if not SYSTEM_CONF.exists():
            SYSTEM_CONF.write_text("# a site's own slurm.conf\n")
            planted = True
        site = SYSTEM_CONF.read_bytes()
        assert not site.startswith(CONF_MARKER.encode())

        cluster.start()
        assert cluster.start_seconds < 15
        assert os.environ["SLURM_CONF"] == str(cluster.conf)
        assert SYSTEM_CONF.read_text().startswith(CONF_MARKER)
        assert SYSTEM_CONF_BACKUP.read_bytes() == site
        assert cluster.queue() == []
        assert cluster.sbatch(["--output=/dev/null", "--wrap", "true"], cwd="/") == 1

        cluster.stop()
        assert SYSTEM_CONF.read_bytes() == site and not SYSTEM_CONF_BACKUP.exists()
    finally:
        if planted:
            SYSTEM_CONF.unlink(missing_ok=True)
        if not cluster.running:
            cluster.start()  # for the rest of the session

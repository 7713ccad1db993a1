"""What dssh leaves on a shared workstation is its SSH user's alone (issue "hostile input",
item 3): the workdir, builds, job dirs, logs and wrappers are 0700/0600, so another local
user cannot read a sweep's inputs, outputs or logs, nor swap its wrapper. Checked on real
OpenSSH workstations, with another workstation's user as the other local user; and the
head's state file is 0600."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import dssh, explain, start_head, summary, wait_until_running, write


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_hosts_dssh_files_are_closed_to_its_other_users(tmp_path: Path,
                                                         fresh_workdirs) -> None:
    ws = fresh_workdirs
    w, other = ws.hosts[0], ws.hosts[1]
    if os.geteuid() != 0 or not (w.has_own_user and other.has_own_user):
        pytest.skip("needs the workstations' own users (as root)")
    ws.write_inventory(tmp_path / "inventory.yaml", overrides={w.name: {"cpus": 1}})
    write(tmp_path / "secret.txt", "input only alice may read\n")
    write(tmp_path / "build.sh", "echo built > tool.txt\n")
    write(tmp_path / "sweep.yaml", """
        name: private
        build: {files: [build.sh], command: sh build.sh}
        run:
          command: "cat input/secret.txt; echo out > {output}/o.txt; sleep 30"
          files: [secret.txt]
          cpus: 1
        """)
    head = start_head(tmp_path, "run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", w.name)
    try:
        wait_until_running(tmp_path, "private", timeout=60)
        wd = w.workdir
        assert mode(wd) == 0o700
        job_dirs = [p.parent for p in wd.rglob("command.sh") if "jobs" in p.parts]
        builds = [p for p in (wd / "builds").iterdir()]
        assert job_dirs and builds
        for p in [*job_dirs, *builds, wd / "bin"]:
            assert mode(p) & 0o077 == 0, (p, oct(mode(p)))
        for p in [*wd.joinpath("bin").iterdir(), *(d / "command.sh" for d in job_dirs)]:
            assert mode(p) & 0o077 == 0, (p, oct(mode(p)))
        logs = [d / "stdout.txt" for d in job_dirs]
        assert all(mode(p) & 0o077 == 0 for p in logs)
        # the other local user, trying: every read and every write is refused
        for target in [logs[0], job_dirs[0].parent / "input" / "secret.txt",
                       wd / "bin", wd]:
            r = subprocess.run(["runuser", "-u", other.user, "--", "ls", "-la", str(target)],
                               capture_output=True, text=True)
            assert r.returncode != 0 and "Permission denied" in r.stderr, (target, r.stdout)
        r = subprocess.run(["runuser", "-u", other.user, "--", "cat", str(logs[0])],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "input only alice" not in r.stdout
    finally:
        head.kill()
        head.wait()
    c = dssh("cancel", "private", cwd=tmp_path)
    assert c.returncode == 0, explain(c)
    state = tmp_path / "state.db"
    assert mode(state) == 0o600


def test_a_host_whose_scripts_cannot_be_written_is_left_out_and_says_why(
        tmp_path: Path, fresh_workdirs) -> None:
    """dssh's scripts go into the workdir's bin/ in the set-up's round trip, whole or not
    at all: where bin/ refuses them, the host is left out with the shell's reason, no
    half-written script stays, and the sweep runs on the other host."""
    ws = fresh_workdirs
    w, ok = ws.hosts[0], ws.hosts[1]
    if os.geteuid() != 0 or not w.has_own_user:
        pytest.skip("needs the workstations' own users (as root), for whom a mode counts")
    bin_dir = w.workdir / "bin"
    bin_dir.mkdir(parents=True)
    for p in (w.workdir, bin_dir):
        shutil.chown(p, w.user, w.user)
    bin_dir.chmod(0o500)
    ws.write_inventory(tmp_path / "inventory.yaml",
                       overrides={w.name: {"cpus": 1}, ok.name: {"cpus": 1}})
    write(tmp_path / "sweep.yaml", """
        name: install
        run: {command: "echo {i} > {output}/i.txt", cpus: 1}
        params: {i: [1, 2, 3]}
        """)
    try:
        r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", f"{w.name},{ok.name}",
                 cwd=tmp_path)
    finally:
        bin_dir.chmod(0o700)
    assert r.returncode == 0, explain(r)
    said = r.stdout + r.stderr
    assert f"cannot write dssh's scripts into {bin_dir}: " in said, said
    assert "Permission denied" in said, said
    assert list(bin_dir.iterdir()) == []
    rows = summary(tmp_path / "results/default/install")
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    assert {row["host"] for row in rows} == {ok.name}

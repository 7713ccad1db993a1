"""What dssh leaves on a shared workstation is its SSH user's alone (issue "hostile input",
item 3): the workdir, builds, job dirs, logs and wrappers are 0700/0600, so another local
user cannot read a sweep's inputs, outputs or logs, nor swap its wrapper. Checked on real
OpenSSH workstations, with another workstation's user as the other local user; and the
head's state file is 0600."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import dssh, explain, start_head, wait_until_running, write


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

"""activity.sh (SPEC §6c) run directly, as a host's wrappers run it, for the signals the
sshd tests cannot make here. This machine has no GPU: the GPU signal is checked against a
stand-in ``nvidia-smi`` on PATH that answers as the real one does for one GPU process
(labelled: a stand-in, not a GPU). The process it names is a real one of another user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import local_user

from distribute_ssh import remote

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root: the signals are other users' processes")

USER = "dssh-actcheck"  # dssh's SSH user on this "host"
OTHER = "dssh-actother"  # someone else, with a process on a GPU


def run_activity(tmp: Path, conf: str, path: str) -> list[str]:
    local_user(USER)
    tmp.chmod(0o755)
    script = tmp / "activity.sh"
    script.write_bytes(remote.script("activity")[1])
    (tmp / "conf").write_text(conf)
    state = tmp / "state"
    state.unlink(missing_ok=True)
    for p in (script, tmp / "conf"):
        p.chmod(0o644)
    shutil.chown(tmp, USER)
    r = subprocess.run(["runuser", "-u", USER, "--", "env", f"PATH={path}", "sh", str(script),
                        "--report", str(tmp / "conf"), str(state)],
                       capture_output=True, text=True, timeout=60, check=True)
    return r.stdout.splitlines()


def stand_in_nvidia_smi(bin_dir: Path, pid: int) -> None:
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"""#!/bin/sh
# stand-in: the answers of nvidia-smi for GPU 0 and 1, with one compute process on GPU 1
case "$*" in
  *query-gpu=index,uuid*) printf '0, GPU-aaaa\\n1, GPU-bbbb\\n' ;;
  *query-compute-apps=gpu_uuid,pid*) printf 'GPU-bbbb, {pid}\\n' ;;
  *) exit 1 ;;
esac
""")
    smi.chmod(0o755)
    bin_dir.chmod(0o755)


def test_another_users_process_on_a_gpu_dssh_hands_out_holds_the_host(tmp_path: Path) -> None:
    local_user(OTHER)
    other = subprocess.Popen(["runuser", "-u", OTHER, "--", "sleep", "60"])
    try:
        pid = 0
        for _ in range(100):
            found = subprocess.run(["pgrep", "-P", str(other.pid)], capture_output=True,
                                   text=True).stdout.split()
            if found:
                pid = int(found[0])
                break
            time.sleep(0.05)
        assert pid
        stand_in_nvidia_smi(tmp_path / "bin", pid)
        path = f"{tmp_path / 'bin'}:/usr/bin:/bin"
        base = "when_gpu 1\nwhen_clear 30\nledger /nonexistent\n"
        out = run_activity(tmp_path / "a", base + "gpus 0 1\n", path)
        assert "signal gpu ok 1" in out and out[-1].startswith("held 30 GPU 1 busy"), out
        # GPU 1 is not one dssh hands out here: no hold
        out = run_activity(tmp_path / "b", base + "gpus 0\n", path)
        assert "signal gpu ok none" in out and out[-1] == "held 0 clear", out
    finally:
        other.kill()
        subprocess.run(["pkill", "-u", OTHER], capture_output=True)


def test_a_signal_that_cannot_be_read_is_said_so_and_holds_nothing(tmp_path: Path) -> None:
    out = run_activity(tmp_path / "a", "when_gpu 1\nwhen_owner 60\nwhen_clear 30\ngpus 0\n"
                       "ledger /nonexistent\n", "/usr/bin:/bin")
    assert "signal gpu unreadable nvidia-smi is missing or fails" in out, out
    assert out[-1] == "held 0 clear", out


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A scratch dir dssh's user on this "host" can reach (pytest's own is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="dssh-activity-"))
    base.chmod(0o755)
    for sub in ("a", "b"):
        (base / sub).mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)

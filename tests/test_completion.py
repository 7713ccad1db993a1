"""`dssh completion bash|zsh`: the script, loaded by a real bash (and zsh where it is
installed), completing commands, options, sweeps, jobs and hosts from the state file and
the inventory, as a user's TAB would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_yaml

from distribute_ssh.state import State


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dssh = bin_dir / "dssh"  # the dssh command as pip installs it, on PATH
    dssh.write_text(f"#!/bin/sh\nexec {sys.executable} -m distribute_ssh \"$@\"\n")
    dssh.chmod(0o755)
    st = State(tmp_path / "state.db")
    sid = st.upsert_sweep("cfd", "cavity", str(tmp_path / "s.yaml"), str(tmp_path / "r"))
    with st.tx() as db:
        db.executemany("INSERT INTO jobs (sweep_id, seq, name, params, definition, state) "
                       "VALUES (?,?,?,?,?,?)",
                       [(sid, i, n, json.dumps({}), "d", "PENDING")
                        for i, n in enumerate(["re-100_fine", "re-400_fine", "special"])])
    st.close()
    write_yaml(tmp_path / "inventory.yaml", {"hosts": {"lab1": {"address": "127.0.0.1"},
                                                       "lab2": {"address": "127.0.0.1"}}})
    (tmp_path / "sweep.yaml").write_text("name: x\nrun: {command: 'true'}\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "DSSH_STATE": str(tmp_path / "state.db")}
    if "PYTHONPATH" in os.environ:  # the dssh under test, wherever the test run takes it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _complete(tmp: Path, env: dict[str, str], line: str) -> list[str]:
    """What bash offers for TAB at the end of ``line``."""
    words = line.split(" ")
    script = (f'cd {tmp}\neval "$(dssh completion bash)"\n'
              f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
              f"COMP_CWORD={len(words) - 1}\n_dssh\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    proc = subprocess.run(["bash", "--norc", "-c", script], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completes_commands_options_sweeps_jobs_and_hosts(tmp_path: Path,
                                                              shell_env: dict) -> None:
    assert _complete(tmp_path, shell_env, "dssh st") == ["status"]
    assert "pull" in _complete(tmp_path, shell_env, "dssh ")
    assert "_complete" not in _complete(tmp_path, shell_env, "dssh ")
    assert _complete(tmp_path, shell_env, "dssh run --max") == ["--max-failures"]
    assert set(_complete(tmp_path, shell_env, "dssh status ")) >= {"cavity", "cfd/cavity"}
    assert _complete(tmp_path, shell_env, "dssh logs cavity re-") == ["re-100_fine",
                                                                     "re-400_fine"]
    assert _complete(tmp_path, shell_env, "dssh pull cfd/cavity --include x sp") == [
        "special"]
    assert _complete(tmp_path, shell_env, "dssh pause -i inventory.yaml lab") == [
        "lab1", "lab2"]
    # without -i: the inventory dssh itself would use (./inventory.yaml here)
    assert _complete(tmp_path, shell_env, "dssh status cavity --host ") == ["lab1", "lab2"]
    assert _complete(tmp_path, shell_env, "dssh run sw") == ["sweep.yaml"]
    assert _complete(tmp_path, shell_env, "dssh template p") == ["python"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed here")
def test_zsh_loads_the_script_and_registers_dssh(tmp_path: Path, shell_env: dict) -> None:
    proc = subprocess.run(["zsh", "-f", "-c", 'eval "$(dssh completion zsh)"; '
                           'print -r -- ${_comps[dssh]}'], env=shell_env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_dssh" in proc.stdout or "_bash_complete" in proc.stdout, proc.stdout


def test_the_helper_never_prints_errors_into_a_command_line(tmp_path: Path,
                                                            shell_env: dict) -> None:
    env = dict(shell_env, DSSH_STATE=str(tmp_path / "missing" / "state.db"))
    proc = subprocess.run(["dssh", "_complete", "jobs", "nosuch"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    assert os.path.exists(tmp_path / "bin" / "dssh")

"""Running the real ``dssh`` command in tests, and reading what it left behind."""

from __future__ import annotations

import csv
import json
import os
import pty
import pwd
import select
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml


def dssh(*args: str | os.PathLike, cwd: Path, home: Path | None = None, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m distribute_ssh ARGS`` as a user would, with its own HOME and state."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("DSSH_")
         or k.startswith("DSSH_TEST_")}
    home = home or cwd / "home"
    home.mkdir(parents=True, exist_ok=True)
    e.update(HOME=str(home), XDG_STATE_HOME=str(home / ".local/state"),
             XDG_CONFIG_HOME=str(home / ".config"), DSSH_STATE=str(cwd / "state.db"))
    e.pop("SSH_AUTH_SOCK", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "distribute_ssh", *map(str, args)], cwd=cwd,
                          env=e, capture_output=True, text=True, timeout=timeout)


def start_head(cwd: Path, *args: str | os.PathLike, home: Path | None = None
               ) -> subprocess.Popen[str]:
    """Start ``dssh ARGS`` in the background (to interrupt or kill it), as ``dssh()`` runs
    it: its own HOME, the state file in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSSH_")
           or k.startswith("DSSH_TEST_")}
    home = home or cwd / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), DSSH_STATE=str(cwd / "state.db"))
    return subprocess.Popen([sys.executable, "-m", "distribute_ssh", *map(str, args)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    if mode is not None:
        path.chmod(mode)
    return path


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def summary(results: Path) -> list[dict[str, str]]:
    with open(results / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_json(results: Path, job: str) -> dict[str, Any]:
    return json.loads((results / job / "job.json").read_text())


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def stand_in_inventory(ws: Any, path: Path, script: str, name: str = "apptainer") -> Path:
    """An inventory of the workstations ``ws`` on which ``name`` is a *stand-in*: ``script``
    put first on the jobs' PATH (for tools these machines lack, such as apptainer); each
    host offers 2 cpus and the capability ``name``. Earlier calls' logs are removed."""
    inv = {}
    for w in ws:
        write(w.home / "stand-in" / name, script, mode=0o755)
        (w.home / f"{name}-calls.log").unlink(missing_ok=True)
        inv[w.name] = {"cpus": 2, "capabilities": [name],
                       "env": {"PATH": f"{w.home}/stand-in:/usr/local/bin:/usr/bin:/bin"}}
    return ws.write_inventory(path, overrides=inv)


def on_terminal(cwd: Path, args: list[str], answer: bytes | None = None,
                timeout: float = 120) -> tuple[int, str]:
    """Run ``dssh ARGS`` on a pseudo-terminal of 100x30 as ``dssh()`` runs it (its own
    HOME, the state file in ``cwd``); type ``answer`` once it asks a question. Returns
    the exit code and all it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSSH_")
           or k.startswith("DSSH_TEST_")}
    env.update(HOME=str(cwd / "home"), DSSH_STATE=str(cwd / "state.db"), COLUMNS="100",
               LINES="30")
    (cwd / "home").mkdir(exist_ok=True)
    pid, fd = pty.fork()
    if pid == 0:  # the child: dssh, on a terminal
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "distribute_ssh", *args], env)
    out, asked = b"", False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if answer is not None and not asked and b"[y/N]" in out:
                os.write(fd, answer)
                asked = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def wait_until_running(cwd: Path, sweep: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Ask ``dssh status SWEEP --json`` until one of its jobs runs; its jobs then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = dssh("status", sweep, "--json", cwd=cwd)
        if st.returncode == 0:
            jobs = json.loads(st.stdout)["jobs"]
            if any(j["state"] == "RUNNING" for j in jobs):
                return jobs
        time.sleep(0.2)
    raise AssertionError(f"no job of {sweep} ran within {timeout:.0f} s")


def wait_for(pred: Any, timeout: float = 10.0, step: float = 0.1) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def local_user(name: str, home: str | os.PathLike = "/nonexistent") -> pwd.struct_passwd:
    """A local unix user (created, as root, when missing): a workstation's owner, say."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        from workstations import user_admin

        user_admin(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name]).check_returncode()
        return pwd.getpwnam(name)


def owner_home(base: Path, name: str, mode: int) -> Path:
    """``base/name``: a home of the local user ``name``, theirs, with ``mode``."""
    home = base / name
    local_user(name, home)
    home.mkdir()
    shutil.chown(home, name, name)
    home.chmod(mode)
    return home


def user_argvs(uid: int) -> dict[int, list[bytes]]:
    """{pid: argv} of the live processes of ``uid``.

    Processes of other tests come and go while /proc is read; one that exits
    between the listing and the read is simply not there any more."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry.path).st_uid != uid:
                continue
            with open(f"{entry.path}/cmdline", "rb") as f:
                found[int(entry.name)] = f.read().split(b"\0")
        except OSError:
            continue
    return found


def user_commands(user: str, needle: bytes) -> list[int]:
    """Pids of the user's live processes whose command line contains ``needle``."""
    return [pid for pid, argv in user_argvs(pwd.getpwnam(user).pw_uid).items()
            if needle in b"\0".join(argv)]


def proc_states(user: str, word: str) -> list[str]:
    """States (R, S, T, ...) of the user's processes whose command line ends with ``word``."""
    uid = pwd.getpwnam(user).pw_uid
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if p.stat().st_uid != uid:
                continue
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            last = cmd.split()[-1] if cmd.split() else ""
            if not last.startswith(word):  # the busy children end with their marker
                continue
            stat = (p / "stat").read_text()
            out.append(stat[stat.rindex(")") + 2])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out

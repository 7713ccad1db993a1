"""OpenSSH conventions: ~/.ssh/config aliases, ssh-agent, known_hosts in the usual place."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import dssh, explain, summary, write, write_yaml


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True, mode=0o700)
    return h


@contextlib.contextmanager
def agent_with(key: Path, sock: Path) -> Iterator[dict[str, str]]:
    """A running ssh-agent on ``sock`` holding ``key``; yields the environment to reach it."""
    if not shutil.which("ssh-agent"):
        pytest.skip("ssh-agent is not installed")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        # The socket's name appears when the agent binds it, a moment before it listens:
        # ssh-add may be refused until then.
        for _ in range(50):
            added = subprocess.run(["ssh-add", "-q", str(key)], env=env, capture_output=True)
            if added.returncode == 0:
                break
            subprocess.run(["sleep", "0.05"])
        assert added.returncode == 0, added.stderr.decode(errors="replace")
        yield env
    finally:
        agent.terminate()
        agent.wait()


def _sweep(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "s.yaml", {"name": "conv", "run": {
        "command": "whoami > {output}/who.txt", "cpus": 1}})


def test_ssh_config_alias(tmp_path: Path, home: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs.hosts[0]
    shutil.copy(ws.known_hosts, home / ".ssh/known_hosts")
    write(home / ".ssh/config", f"""
        Host lab-alias
            HostName 127.0.0.1
            Port {ws.port}
            User {ws.user}
            IdentityFile {ws.identity_file}
    """)
    inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"lab-alias": {}}})
    proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home)
    assert proc.returncode == 0, explain(proc)
    row = summary(tmp_path / "results/default/conv")[0]
    assert row["host"] == "lab-alias"
    who = (tmp_path / "results/default/conv/conv/who.txt").read_text().strip()
    assert who == ws.user
    # the default workdir is ~/.dssh of the SSH user
    assert (ws.home / ".dssh/bin").is_dir()


def test_ssh_agent_only(tmp_path: Path, home: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs.hosts[1]
    sock = tmp_path / "agent.sock"
    with agent_with(ws.identity_file, sock):
        entry = ws.inventory_entry(identity_file=None)
        inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"agent-host": entry}})
        proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home,
                    env={"SSH_AUTH_SOCK": str(sock)})
        assert proc.returncode == 0, explain(proc)
        # and without the agent, no key is offered: login refused, clearly
        proc = dssh("run", _sweep(tmp_path), "-i", inv, "--name", "noagent", cwd=tmp_path,
                    home=home)
        assert proc.returncode == 4, explain(proc)
        assert "refused" in proc.stderr and "identity_file" in proc.stderr


def test_known_hosts_none_in_ssh_config_is_refused(tmp_path: Path, home: Path,
                                                    fresh_workdirs) -> None:
    ws = fresh_workdirs.hosts[0]
    write(home / ".ssh/config", "Host *\n    UserKnownHostsFile none\n")
    entry = ws.inventory_entry(without=("known_hosts",))
    inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"lab": entry}})
    proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home)
    assert proc.returncode == 4, explain(proc)
    assert "UserKnownHostsFile none" in proc.stderr and "verifies host keys" in proc.stderr


def test_default_known_hosts_file_is_used(tmp_path: Path, home: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs.hosts[2]
    entry = ws.inventory_entry(without=("known_hosts",))
    inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"lab": entry}})
    proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home)
    assert proc.returncode == 4, explain(proc)
    assert f"not in {home}/.ssh/known_hosts" in proc.stderr
    shutil.copy(ws.known_hosts, home / ".ssh/known_hosts")
    proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home)
    assert proc.returncode == 0, explain(proc)


def test_proxyjump_through_another_workstation(tmp_path: Path, home: Path,
                                               fresh_workdirs) -> None:
    jump, target = fresh_workdirs.hosts[0], fresh_workdirs.hosts[1]
    shutil.copy(jump.known_hosts, home / ".ssh/known_hosts")
    write(home / ".ssh/config", f"""
        Host jumpbox
            HostName 127.0.0.1
            Port {jump.port}
            User {jump.user}
            IdentityFile {jump.identity_file}
        Host behind
            HostName 127.0.0.1
            Port {target.port}
            User {target.user}
            IdentityFile {target.identity_file}
            ProxyJump jumpbox
    """)
    inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"behind": {}}})
    proc = dssh("run", _sweep(tmp_path), "-i", inv, cwd=tmp_path, home=home)
    assert proc.returncode == 0, explain(proc)
    who = (tmp_path / "results/default/conv/conv/who.txt").read_text().strip()
    assert who == target.user
    log = jump.log_file.read_text()
    assert "direct-tcpip" in log or "Accepted publickey" in log


def test_the_agent_is_never_forwarded_even_when_ssh_config_asks(tmp_path: Path, home: Path,
                                                                fresh_workdirs) -> None:
    """A workstation's other users (or root) could use a forwarded agent to log in as the
    dssh user elsewhere: dssh never forwards it. The control: OpenSSH's own client, with the
    same ~/.ssh/config, does get a forwarded agent from this sshd."""
    ws = fresh_workdirs.hosts[2]
    shutil.copy(ws.known_hosts, home / ".ssh/known_hosts")
    write(home / ".ssh/config", f"""
        Host fwd
            HostName 127.0.0.1
            Port {ws.port}
            User {ws.user}
            IdentityFile {ws.identity_file}
            ForwardAgent yes
    """)
    sock = tmp_path / "agent.sock"
    with agent_with(ws.identity_file, sock) as env:
        env["HOME"] = str(home)
        control = subprocess.run(["ssh", "-F", str(home / ".ssh/config"), "-o",
                                  f"UserKnownHostsFile={home / '.ssh/known_hosts'}", "fwd",
                                  'echo "sock=${SSH_AUTH_SOCK:-none}"'], env=env,
                                 capture_output=True, text=True, timeout=60)
        assert control.returncode == 0, control.stderr
        assert control.stdout.strip() != "sock=none"  # OpenSSH forwards it here
        inv = write_yaml(tmp_path / "inv.yaml", {"hosts": {"fwd": {}}})
        sweep = write_yaml(tmp_path / "a.yaml", {"name": "agent", "run": {
            "command": 'echo "sock=${{SSH_AUTH_SOCK:-none}}" > {output}/a.txt', "cpus": 1}})
        proc = dssh("run", sweep, "-i", inv, cwd=tmp_path, home=home,
                    env={"SSH_AUTH_SOCK": str(sock)})
        assert proc.returncode == 0, explain(proc)
        got = (tmp_path / "results/default/agent/agent/a.txt").read_text()
        assert got == "sock=none\n"

"""Tests of the simulated workstations themselves (tests/workstations.py, fallback_sshd.py)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
import yaml
from workstations import Workstation, WorkstationError, Workstations, start_workstations

IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.sshd


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A world-searchable temp dir for extra workstation sets (tmp_path is under 0700 dirs)."""
    d = Path(tempfile.mkdtemp(prefix="dssh-wt-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def fallback_workstations() -> Iterator[Workstations]:
    """2 workstations served by the asyncssh stand-in (the path taken when sshd is missing)."""
    if os.environ.get("DSSH_TEST_REQUIRE_SSHD", "") not in ("", "0"):
        pytest.skip("DSSH_TEST_REQUIRE_SSHD=1: the asyncssh fallback is not allowed")
    base = Path(tempfile.mkdtemp(prefix="dssh-fb-"))
    try:
        with start_workstations(2, base, backend="asyncssh") as ws:
            yield ws
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["default", "fallback"])
def any_workstations(request: pytest.FixtureRequest) -> Workstations:
    """The session's workstations (real sshd here) and the asyncssh fallback."""
    name = "workstations" if request.param == "default" else "fallback_workstations"
    return request.getfixturevalue(name)


def _expected_user(ws: Workstation, ws_set: Workstations) -> str:
    if IS_ROOT and ws_set.real_sshd:
        return f"{ws_set.prefix}{ws.name[2:]}"
    return pwd.getpwuid(os.getuid()).pw_name


def _run_ssh_parallel(argvs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in argvs]
    out = []
    for a, p in zip(argvs, procs, strict=True):
        stdout, stderr = p.communicate(timeout=30)
        out.append(subprocess.CompletedProcess(a, p.returncode, stdout, stderr))
    return out


# --------------------------------------------------------------------------- layout


def test_layout(workstations: Workstations) -> None:
    hosts = workstations.hosts
    assert [ws.name for ws in hosts] == ["ws1", "ws2", "ws3"]
    assert len({ws.port for ws in hosts}) == 3
    assert all(ws.address == "127.0.0.1" and ws.port > 1024 for ws in hosts)
    assert len({ws.home for ws in hosts}) == 3
    assert len({ws.host_pub_key_line for ws in hosts}) == 3
    assert all(ws.running for ws in hosts)
    if workstations.real_sshd:
        assert all(ws.pid and Path(f"/proc/{ws.pid}").exists() for ws in hosts)
    if IS_ROOT and workstations.real_sshd:
        assert len({ws.user for ws in hosts}) == 3
        for ws in hosts:
            pw = pwd.getpwnam(ws.user)
            assert Path(pw.pw_dir) == ws.home
            st = ws.home.stat()
            assert st.st_uid == pw.pw_uid and stat.S_IMODE(st.st_mode) == 0o755
            assert ws.home.parent == workstations.base_dir / "home"
    assert stat.S_IMODE(workstations.identity_file.stat().st_mode) == 0o600
    kh = workstations.known_hosts.read_text().splitlines()
    assert kh == [ws.host_pub_key_line for ws in hosts]
    for ws in hosts:
        assert ws.host_pub_key_line.startswith(f"[127.0.0.1]:{ws.port} ssh-ed25519 ")
        assert ws.known_hosts == workstations.known_hosts
        assert ws.identity_file == workstations.identity_file


def test_start_is_quick(workstations: Workstations) -> None:
    assert workstations.start_seconds < 2.0


def test_inventory(workstations: Workstations, tmp_path: Path) -> None:
    ws1 = workstations["ws1"]
    assert ws1.inventory_entry() == {
        "address": "127.0.0.1", "port": ws1.port, "user": ws1.user,
        "identity_file": str(ws1.identity_file), "known_hosts": str(ws1.known_hosts),
        "workdir": str(ws1.home / ".dssh"),
        "ledger_dir": str(workstations.base_dir / "ledgers" / "ws1"),
    }
    # Each workstation counts its own claims, as real ones with their own /tmp do.
    assert len({w.ledger_dir for w in workstations}) == len(workstations)
    assert ws1.inventory_entry(slots=4, without=("known_hosts",))["slots"] == 4
    assert "known_hosts" not in ws1.inventory_entry(without=("known_hosts",))

    path = workstations.write_inventory(tmp_path / "inv" / "hosts.yaml",
                                        overrides={"ws2": {"slots": 2}},
                                        defaults={"slots": 1})
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["defaults", "hosts"]
    assert doc["defaults"] == {"slots": 1}
    assert list(doc["hosts"]) == ["ws1", "ws2", "ws3"]
    assert doc["hosts"]["ws2"] == workstations["ws2"].inventory_entry(slots=2)
    assert "defaults" not in yaml.safe_load(workstations.write_inventory(tmp_path / "b.yaml")
                                            .read_text())
    with pytest.raises(KeyError):
        workstations.write_inventory(tmp_path / "c.yaml", overrides={"ws9": {}})


def test_ssh_argv(workstations: Workstations) -> None:
    ws = workstations.hosts[0]
    argv = ws.ssh_argv("echo hi")
    assert argv[0] == "ssh" and argv[-2:] == [f"{ws.user}@127.0.0.1", "echo hi"]
    for opt in ("StrictHostKeyChecking=yes", "BatchMode=yes",
                f"UserKnownHostsFile={ws.known_hosts}"):
        assert opt in argv
    assert argv[argv.index("-i") + 1] == str(ws.identity_file)
    assert argv[argv.index("-p") + 1] == str(ws.port)
    assert ws.ssh_argv(["echo", "a b"])[-1] == "echo 'a b'"
    assert ws.ssh_argv()[-1] == f"{ws.user}@127.0.0.1"


# --------------------------------------------------------------------------- logins


async def test_asyncssh_login(any_workstations: Workstations) -> None:
    for ws in any_workstations:
        async with await ws.connect() as conn:
            r = await conn.run('whoami; echo "$HOME"; pwd', check=True, timeout=10)
            assert r.stdout.split("\n")[:3] == [_expected_user(ws, any_workstations),
                                                str(ws.home), str(ws.home)]
            async with conn.start_sftp_client() as sftp:
                # SFTP: real filesystem (not chrooted), starting in the home
                assert await sftp.realpath(".") == str(ws.home)
                await sftp.makedirs(str(ws.workdir / "t"), exist_ok=True)
                async with sftp.open(str(ws.workdir / "t" / "f.txt"), "w") as f:
                    await f.write(ws.name)
            r = await conn.run("cat .dssh/t/f.txt", check=True, timeout=10)
            assert r.stdout == ws.name
        assert (ws.workdir / "t" / "f.txt").read_text() == ws.name
        if IS_ROOT and any_workstations.real_sshd:
            assert (ws.workdir / "t" / "f.txt").stat().st_uid == pwd.getpwnam(ws.user).pw_uid


def test_system_ssh_login(any_workstations: Workstations) -> None:
    hosts = any_workstations.hosts
    results = _run_ssh_parallel([ws.ssh_argv('whoami; echo "$HOME"') for ws in hosts])
    for ws, r in zip(hosts, results, strict=True):
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == [_expected_user(ws, any_workstations), str(ws.home)]


async def test_other_user_refused(any_workstations: Workstations) -> None:
    ws = any_workstations.hosts[0]
    other = "root" if ws.user != "root" else "nobody"
    with pytest.raises(asyncssh.PermissionDenied):
        async with await ws.connect(username=other):
            pass


async def test_wrong_known_hosts_refused(any_workstations: Workstations,
                                         tmp_path: Path) -> None:
    ws1, ws2 = any_workstations.hosts[:2]
    # ws2's host key listed for ws1's address and port
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{ws1.port} {ws2.host_pub_key_line.split(' ', 1)[1]}\n")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with await ws1.connect(known_hosts=str(wrong)):
            pass
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with await ws1.connect(known_hosts=str(empty)):
            pass
    # the system client refuses too (StrictHostKeyChecking=yes)
    argv = [a.replace(str(ws1.known_hosts), str(wrong)) for a in ws1.ssh_argv("true")]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 255
    assert "host key" in r.stderr.lower(), r.stderr


# --------------------------------------------------------------------------- stop / start


@pytest.fixture(params=["default", "fallback"])
def own_workstations(request: pytest.FixtureRequest, scratch: Path) -> Iterator[Workstations]:
    """A private 1-host set, so stopping it cannot disturb the session's workstations."""
    if request.param == "fallback":
        request.getfixturevalue("fallback_workstations")  # same skip rules
    backend = "asyncssh" if request.param == "fallback" else None
    with start_workstations(1, scratch, prefix="dssh-wt", backend=backend) as ws:
        yield ws


async def test_stop_then_start_same_port(own_workstations: Workstations) -> None:
    any_workstations = own_workstations
    ws = any_workstations.hosts[0]
    port, key_line, old_pid = ws.port, ws.host_pub_key_line, ws.pid
    conn = await ws.connect()
    try:
        ws.stop()
        assert not ws.running and ws.pid is None
        # open connections drop, like a workstation that went away
        await asyncio.wait_for(conn.wait_closed(), 5)
        with pytest.raises(OSError):
            async with await ws.connect(connect_timeout=5):
                pass
        r = subprocess.run(ws.ssh_argv("true"), capture_output=True, text=True, timeout=30)
        assert r.returncode == 255
    finally:
        conn.close()
        if not ws.running:
            ws.start()
    assert ws.running and ws.port == port and ws.host_pub_key_line == key_line
    if any_workstations.real_sshd:
        assert ws.pid is not None and ws.pid != old_pid
    async with await ws.connect() as conn2:  # same host key: known_hosts still valid
        assert (await conn2.run("echo ok", check=True, timeout=10)).stdout == "ok\n"
    r = subprocess.run(ws.ssh_argv("echo ok"), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr


# --------------------------------------------------------------------------- OpenSSH defaults


async def test_max_sessions_default_kept(workstations: Workstations) -> None:
    if not workstations.real_sshd:
        pytest.skip("MaxSessions exists only in real sshd")
    ws = workstations.hosts[0]
    async with await ws.connect() as conn:
        results = await asyncio.gather(*(conn.run("sleep 1", timeout=20) for _ in range(12)),
                                       return_exceptions=True)
    ok = [r for r in results if isinstance(r, asyncssh.SSHCompletedProcess)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) + len(failed) == 12
    assert len(ok) <= 10
    assert len(failed) >= 2
    assert all(isinstance(e, asyncssh.ChannelOpenError) for e in failed), failed
    assert all(r.exit_status == 0 for r in ok)


def test_effective_sshd_config_has_defaults(workstations: Workstations) -> None:
    if not (workstations.real_sshd and IS_ROOT):
        pytest.skip("sshd -T needs real sshd run as root")
    ws = workstations.hosts[0]
    r = subprocess.run([str(ws.sshd_path), "-T", "-f", str(ws.config_file)],
                       capture_output=True, text=True, check=True)
    eff = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    assert eff["maxsessions"] == "10"
    assert eff["maxstartups"] == "10:30:100"
    assert eff["listenaddress"] == f"127.0.0.1:{ws.port}"
    assert eff["usepam"] == "no" and eff["passwordauthentication"] == "no"
    assert eff["authorizedkeysfile"] == str(ws.authorized_keys)


# --------------------------------------------------------------------------- helpers


async def test_fresh_workdirs_and_job_cleanup(fresh_workdirs: Workstations) -> None:
    ws = fresh_workdirs.hosts[1]
    assert not ws.workdir.exists() or not any(ws.workdir.iterdir())
    async with await ws.connect() as conn:
        # ";" not "&&": "a && b &" backgrounds the whole list, which holds the channel open
        await conn.run("mkdir -p .dssh/run; echo x > .dssh/run/f; "
                       "nohup setsid sleep 300 >/dev/null 2>&1 </dev/null &", check=True,
                       timeout=10)
        assert (ws.workdir / "run" / "f").exists()
        if IS_ROOT and fresh_workdirs.real_sshd:
            assert ws.kill_user_processes() >= 1  # the detached sleep
            # gone (or a zombie until init reaps it), while this connection is still alive
            r = await conn.run('ps -u "$(id -u)" -o stat=,comm= | grep sleep | grep -v "^Z"',
                               timeout=10)
            assert r.stdout == ""
        fresh_workdirs.clean_workdirs()
        assert ws.workdir.is_dir() and not any(ws.workdir.iterdir())
        if not (IS_ROOT and fresh_workdirs.real_sshd):
            await conn.run("pkill -f 'sleep 300'", timeout=10)


def test_isolated_home(isolated_home: Path) -> None:
    assert os.environ["HOME"] == str(isolated_home)
    assert Path("~/.ssh/config").expanduser() == isolated_home / ".ssh" / "config"
    assert not (isolated_home / ".ssh").exists()
    assert "SSH_AUTH_SOCK" not in os.environ
    assert os.environ["XDG_CONFIG_HOME"].startswith(str(isolated_home))


# --------------------------------------------------------------------------- start-up paths


def test_require_sshd_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSSH_TEST_REQUIRE_SSHD", "1")
    monkeypatch.delenv("DSSH_TEST_SSHD_BACKEND", raising=False)
    with pytest.raises(WorkstationError, match="not found"):
        start_workstations(1, tmp_path, sshd_path="/nonexistent/sshd")
    monkeypatch.delenv("DSSH_TEST_REQUIRE_SSHD")
    with start_workstations(1, tmp_path, sshd_path="/nonexistent/sshd") as ws:
        assert ws.backend == "asyncssh" and not ws.real_sshd
        r = subprocess.run(ws.hosts[0].ssh_argv("echo fallback"), capture_output=True,
                           text=True, timeout=30)
        assert (r.returncode, r.stdout) == (0, "fallback\n"), r.stderr


def _skip_unless_root_sshd() -> None:
    if not (IS_ROOT and os.path.exists("/usr/sbin/sshd")):
        pytest.skip("needs root and /usr/sbin/sshd")
    if os.environ.get("DSSH_TEST_SSHD_BACKEND") == "asyncssh":
        pytest.skip("asyncssh backend forced")


def test_bad_config_fails_clearly(scratch: Path) -> None:
    _skip_unless_root_sshd()
    with pytest.raises(WorkstationError, match="sshd -t"):
        start_workstations(1, scratch, prefix="dssh-wt", sshd_options={"NoSuchOption": "yes"})


def test_concurrent_sets_get_distinct_users(scratch: Path) -> None:
    """Two sets with the same prefix at once (e.g. a benchmark during a test run) must not
    share unix users; stop() kills every process of its users."""
    _skip_unless_root_sshd()
    with start_workstations(1, scratch / "a", prefix="dssh-wt") as a, \
            start_workstations(1, scratch / "b", prefix="dssh-wt") as b:
        ua, ub = a.hosts[0].user, b.hosts[0].user
        assert ua != ub and {ua, ub} == {"dssh-wt1", "dssh-wtb1"}
        r = subprocess.run(a.hosts[0].ssh_argv(
            "nohup setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!"),
            capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        job = int(r.stdout)
        assert Path(f"/proc/{job}").exists()
    uid = pwd.getpwnam(ua).pw_uid
    try:
        alive = Path(f"/proc/{job}/status").read_text()
        assert f"Uid:\t{uid}" not in alive or "State:\tZ" in alive
    except FileNotFoundError:
        pass


def test_workstations4(workstations4: Workstations, fresh_workdirs: Workstations) -> None:
    assert [ws.name for ws in workstations4] == ["ws1", "ws2", "ws3", "ws4"]
    assert not {ws.port for ws in workstations4} & {ws.port for ws in fresh_workdirs}
    if IS_ROOT and workstations4.real_sshd:
        assert all(ws.user.startswith("dssh-wx") for ws in workstations4)
        assert not {ws.user for ws in workstations4} & {ws.user for ws in fresh_workdirs}
    # fresh_workdirs also cleaned this set (the test asked for both)
    assert all(not ws.workdir.exists() or not any(ws.workdir.iterdir()) for ws in workstations4)
    hosts = workstations4.hosts
    results = _run_ssh_parallel([ws.ssh_argv("mkdir -p .dssh && touch .dssh/x && whoami")
                                 for ws in hosts])
    for ws, r in zip(hosts, results, strict=True):
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == _expected_user(ws, workstations4)
    workstations4.clean_workdirs()
    assert all(not any(ws.workdir.iterdir()) for ws in hosts)

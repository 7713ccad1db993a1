"""Shared fixtures: simulated workstations (tests/workstations.py) and an isolated HOME.

- ``workstations``: 3 started workstations for the whole session (users dssh-ws1..3 as root).
- ``workstations4``: 4 more, started on first use (users dssh-wx1..4 as root).
- ``fresh_workdirs``: empties every ``home/.dssh`` (and kills leftover jobs) before the test.
- ``isolated_home``: HOME / XDG_* in a tmp dir, no ssh-agent, no DSSH_* settings.
- ``slurm_cluster``: a real single-node Slurm cluster (tests/slurmcluster.py) for the whole
  session, as root; SLURM_CONF is set and /etc/slurm/slurm.conf installed while it runs.

Tests using the workstation fixtures are marked ``sshd`` automatically (``-m "not sshd"``),
tests using ``slurm_cluster`` ``slurm``.

The suite runs on pytest-xdist workers (``-n auto`` in pyproject.toml; ``-n 0`` runs it in
one process). Each test file is one xdist group, so a file's module fixtures start once, on
one worker; the files that use the one Slurm cluster of the machine share a group. Every
worker starts its own workstations: their unix users differ (``dssh-ws``, ``dssh-wsb``, ...,
see tests/workstations.py). ``DSSH_TEST_WORKERS=N`` sets how many workers ``auto`` means
(default: 2, or 1 on a one-core machine).

Env: ``DSSH_TEST_REQUIRE_SSHD=1`` (never fall back to the asyncssh server),
``DSSH_TEST_SSHD_BACKEND=openssh|asyncssh``, ``DSSH_TEST_KEEP_WORKSTATIONS=1`` (keep the
files, e.g. sshd logs, under /tmp/dssh-ws-*), ``DSSH_TEST_REQUIRE_SLURM=1`` (fail, never skip,
when the Slurm cluster cannot run), ``DSSH_TEST_KEEP_SLURM=1`` (keep /tmp/dssh-slurm-*).
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.path.dirname(__file__) not in sys.path:  # pytest's rootdir-less import mode does it too
    sys.path.insert(0, os.path.dirname(__file__))

from slurmcluster import SlurmCluster, slurm_missing_reason, slurm_session  # noqa: E402
from workstations import Workstations, workstation_set  # noqa: E402

_WORKSTATION_FIXTURES = {"workstations", "workstations4", "fresh_workdirs"}
_SLURM_FIXTURES = {"slurm_cluster"}
_SLURM_FILES = {"test_slurm.py", "test_slurm_cluster.py"}

# The fault-injection suite's seed, chosen once here so that every xdist worker (they inherit
# the environment) uses and reports the same one (tests/faults/conftest.py).
os.environ.setdefault("DSSH_FAULT_SEED", str(random.SystemRandom().randrange(10**9)))
_FAULT_STATS: Counter[str] = Counter()  # the workers' counts, summed on the controller


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _WORKSTATION_FIXTURES & fixtures:
            item.add_marker(pytest.mark.sshd)
        if _SLURM_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slurm)
        file = item.path.name
        item.add_marker(pytest.mark.xdist_group("slurm" if file in _SLURM_FILES
                                                else str(item.path.relative_to(item.config.rootpath))))


def pytest_report_header() -> str:
    return f"fault injection seed: DSSH_FAULT_SEED={os.environ['DSSH_FAULT_SEED']}"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    if os.environ.get("DSSH_TEST_WORKERS"):
        return int(os.environ["DSSH_TEST_WORKERS"])
    return min(2, os.cpu_count() or 1)


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = getattr(session.config, "workeroutput", None)  # set on an xdist worker only
    faultkit = sys.modules.get("faultkit")
    if out is not None and faultkit is not None:
        out["fault_stats"] = dict(faultkit.STATS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001 - xdist's hook, on the controller
    _FAULT_STATS.update(getattr(node, "workeroutput", {}).get("fault_stats", {}))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    faultkit = sys.modules.get("faultkit")
    stats = Counter(_FAULT_STATS)  # (update, not +: a count of 0, "jobs lost", is kept)
    stats.update(faultkit.STATS if faultkit is not None else {})
    if stats:
        seed = os.environ["DSSH_FAULT_SEED"]
        terminalreporter.write_sep("-", f"fault injection (DSSH_FAULT_SEED={seed})")
        faults = sum(n for key, n in stats.items() if key.startswith("faults: "))
        terminalreporter.write_line(f"faults injected: {faults}")
        for key in sorted(stats):
            terminalreporter.write_line(f"  {key}: {stats[key]}")


@pytest.fixture(scope="session")
def workstations() -> Iterator[Workstations]:
    """3 started workstations (ws1..ws3), stopped at the end of the session."""
    yield from workstation_set(3, "dssh-ws")


@pytest.fixture(scope="session")
def workstations4() -> Iterator[Workstations]:
    """4 started workstations (ws1..ws4, users dssh-wx1..4 as root), created on first use."""
    yield from workstation_set(4, "dssh-wx")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A started single-node Slurm cluster, stopped at the end of the session (no jobs left,
    /etc/slurm/slurm.conf restored). Not reset between tests: ``cancel_all()`` if needed.
    Skipped where it cannot run (not root, Slurm not installed), failed instead with
    ``DSSH_TEST_REQUIRE_SLURM=1``."""
    reason = slurm_missing_reason()
    if reason is not None:
        if os.environ.get("DSSH_TEST_REQUIRE_SLURM", "") not in ("", "0"):
            pytest.fail(f"DSSH_TEST_REQUIRE_SLURM=1, but {reason}", pytrace=False)
        pytest.skip(reason)
    yield from slurm_session()


@pytest.fixture
def fresh_workdirs(request: pytest.FixtureRequest, workstations: Workstations) -> Workstations:
    """Before the test: kill leftover jobs of the workstation users (root mode; their sshd
    session processes are spared so open connections survive) and empty each ``home/.dssh``.
    Also cleans ``workstations4`` when the test uses it. Returns ``workstations``."""
    sets = [workstations]
    if "workstations4" in request.fixturenames:
        sets.append(request.getfixturevalue("workstations4"))
    for ws_set in sets:
        ws_set.kill_user_processes()
        ws_set.clean_workdirs()
    return workstations


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and XDG_* dirs under tmp_path, so nothing reads the developer's ~/.ssh/config,
    known_hosts, agent or dssh settings. Returns the new HOME (empty, with no ``.ssh``)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_CACHE_HOME", ".cache"), ("XDG_STATE_HOME", ".local/state")):
        d = home / sub
        d.mkdir(parents=True)
        monkeypatch.setenv(var, str(d))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var in ("XDG_CONFIG_DIRS", "XDG_DATA_DIRS", "SSH_AUTH_SOCK", "SSH_AGENT_PID"):
        monkeypatch.delenv(var, raising=False)
    for var in list(os.environ):
        if var.startswith("DSSH_") and not var.startswith("DSSH_TEST_"):
            monkeypatch.delenv(var)
    return home

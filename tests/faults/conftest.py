"""Fixtures of the fault-injection suite: its own workstations and a reproducible seed.

- ``fx_workstations``: 3 real sshd workstations for the session, unix users ``dssh-fx1..3``
  (another prefix if a parallel session holds that one), so these runs never touch the
  users of ``tests/conftest.py``'s fixtures.
- ``fx``: before each test, every workstation is running again (a test may have stopped
  one), leftover processes of the workstation users are killed, their dssh workdirs,
  start logs and build logs are emptied. Returns the workstations.
- ``rng``: a ``random.Random`` seeded from the session seed and the test's name. The
  session seed is random, or ``DSSH_FAULT_SEED`` to reproduce a run (tests/conftest.py
  chooses it once for all xdist workers); it is printed in the header, in the report of
  every failing test and with the counts of faults at the end (tests/conftest.py sums the
  workers' ``faultkit.STATS``).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator

import pytest
from workstations import Workstations, workstation_set

_SEED = os.environ.get("DSSH_FAULT_SEED") or str(random.SystemRandom().randrange(10**9))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "fx" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sshd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    report = yield
    if report.failed:
        report.sections.append(("fault seed", f"reproduce with DSSH_FAULT_SEED={_SEED} "
                                              f"(test {item.name})"))
    return report


@pytest.fixture(scope="session")
def fault_seed() -> str:
    return _SEED


@pytest.fixture
def rng(request: pytest.FixtureRequest, fault_seed: str) -> random.Random:
    return random.Random(f"{fault_seed}:{request.node.name}")


@pytest.fixture(scope="session")
def fx_workstations() -> Iterator[Workstations]:
    yield from workstation_set(3, "dssh-fx")


def reset_workstations(ws: Workstations) -> None:
    for w in ws:
        if not w.running:
            w.start()
    ws.kill_user_processes()
    ws.clean_workdirs()
    for w in ws:
        shutil.rmtree(w.home / "starts", ignore_errors=True)
        (w.home / "builds.log").unlink(missing_ok=True)


@pytest.fixture
def fx(fx_workstations: Workstations) -> Iterator[Workstations]:
    reset_workstations(fx_workstations)
    yield fx_workstations
    for w in fx_workstations:  # a test that stopped a workstation must not break the next
        if not w.running:
            w.start()

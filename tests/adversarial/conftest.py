"""Fixtures of the adversarial corpus (issue 10): an isolated arena per test.

Only ``connection: local`` hosts are used here, never the sshd fixtures of tests/conftest.py:
this corpus runs next to other suites that share those servers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from advkit import Arena


@pytest.fixture
def arena(tmp_path: Path) -> Iterator[Arena]:
    """A fresh arena (see advkit); its canaries are removed afterwards, fired or not."""
    a = Arena(tmp_path)
    yield a
    a.clean_canaries()


@pytest.fixture(scope="module")
def module_arenas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Arena]]:
    """Arenas shared by the tests of a module (a batch run once, asserted case by case)."""
    made: list[Arena] = []

    def make(name: str) -> Arena:
        a = Arena(tmp_path_factory.mktemp(name))
        made.append(a)
        return a

    yield make
    for a in made:
        a.clean_canaries()

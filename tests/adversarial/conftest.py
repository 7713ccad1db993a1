"""Fixtures of the adversarial corpus (issue 10): an isolated arena per test.

The corpus runs on ``connection: local`` hosts, except test_over_ssh.py, which takes its
biggest batches to the suite's OpenSSH workstations (tests/conftest.py's fixtures).
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

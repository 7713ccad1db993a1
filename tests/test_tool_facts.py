"""The set-up's look at a host's tar and find (``remote.tool_facts``), run with the real
``sh`` as a head's set-up runs it: the answer is kept under the host's boot id, so a head
connecting again looks at nothing until the host reboots. ``tar`` and ``find`` on PATH
here log each call and hand it to the real tool, or play a host without GNU tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from distribute_ssh import remote

BOOT = Path("/proc/sys/kernel/random/boot_id")
pytestmark = pytest.mark.skipif(not BOOT.is_file() or shutil.which("tar") is None
                                or shutil.which("find") is None,
                                reason="needs a boot id, tar and find")


def _tools(d: Path, gnu: bool) -> Path:
    """``tar`` and ``find`` that write their name to ``calls`` first; GNU ones run the real
    tools, the others answer as a BusyBox host's would."""
    fake = d / "fakebin"
    fake.mkdir(exist_ok=True)
    calls = d / "calls"
    for name in ("tar", "find"):
        real = shutil.which(name)
        body = f'exec {real} "$@"' if gnu else (
            'echo "tar (busybox) 1.36"' if name == "tar" else 'echo "find: unrecognized: -printf" >&2; exit 1')
        (fake / name).write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}\n")
        (fake / name).chmod(0o755)
    return fake


def _look(d: Path, gnu: bool = True) -> tuple[list[str], list[str]]:
    """Run the look as the set-up does (its bin dir is ``d/w/bin``): what it printed, and
    which tools it ran."""
    calls = d / "calls"
    calls.unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{_tools(d, gnu)}:{os.environ['PATH']}")
    script = f"umask 077\nw={d / 'w'}\n" + remote.tool_facts('"$w"/bin') + "echo done\n"
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                       timeout=30)
    assert r.returncode == 0 and r.stderr == "", r
    out = r.stdout.splitlines()
    assert out[-1] == "done"
    ran = calls.read_text().split() if calls.exists() else []
    return out[:-1], ran


def test_the_answer_is_kept_for_the_boot_and_not_looked_for_again(tmp_path: Path) -> None:
    (tmp_path / "w/bin").mkdir(parents=True)
    facts = tmp_path / "w/bin/facts"
    boot = BOOT.read_text().strip()
    said, ran = _look(tmp_path)
    assert said == ["gnutar", "findprintf"]
    assert sorted(ran) == ["find", "tar"]
    assert facts.read_text() == f"boot {boot} {remote.FACTS_VERSION}\ngnutar\nfindprintf\n"
    assert facts.stat().st_mode & 0o077 == 0  # (the set-up's umask)
    # connecting again: the same answer, and no tool run for it
    assert _look(tmp_path) == (["gnutar", "findprintf"], [])


def test_after_a_reboot_or_another_dssh_the_tools_are_looked_at_again(tmp_path: Path) -> None:
    (tmp_path / "w/bin").mkdir(parents=True)
    facts = tmp_path / "w/bin/facts"
    boot = BOOT.read_text().strip()
    # what this host said before its last boot (a home shared with another host, say)
    facts.write_text(f"boot 00000000-another-boot {remote.FACTS_VERSION}\ngnutar\n")
    said, ran = _look(tmp_path, gnu=False)
    assert said == [] and sorted(ran) == ["find", "tar"]
    assert facts.read_text() == f"boot {boot} {remote.FACTS_VERSION}\n"
    # ...and what an older dssh, asking other questions, wrote this boot
    facts.write_text(f"boot {boot} 0\ngnutar\nfindprintf\n")
    assert _look(tmp_path, gnu=False) == ([], ["tar", "find"])
    # a host without GNU tools: that answer is kept too
    assert _look(tmp_path, gnu=False) == ([], [])


def test_where_the_answer_cannot_be_kept_it_is_still_given(tmp_path: Path) -> None:
    """(A directory in the file's place refuses the write, even to root.)"""
    (tmp_path / "w/bin/facts").mkdir(parents=True)
    for _ in range(2):
        assert _look(tmp_path) == (["gnutar", "findprintf"], ["tar", "find"])
    assert list((tmp_path / "w/bin/facts").iterdir()) == []


def test_an_empty_or_cut_facts_file_is_not_taken_for_an_answer(tmp_path: Path) -> None:
    (tmp_path / "w/bin").mkdir(parents=True)
    facts = tmp_path / "w/bin/facts"
    for text in ("", "boot", "gnutar\nfindprintf\n"):
        facts.write_text(text)
        assert _look(tmp_path) == (["gnutar", "findprintf"], ["tar", "find"])

"""A run's set-up script names the workdir and the owners' policy files by the host's own
``$HOME`` (the head learns the home dir from that script's answer, not in a round trip
before it). What the host's shell makes of those words must be exactly what the head makes
of the same paths once it knows the home dir (``HostConnection.expand``, and
``policy.read_script`` with the home given): the head later names the same files by the
paths it computes itself."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from distribute_ssh import policy
from distribute_ssh.hosts.base import HostConnection, expand_sh

HOMES = ["/home/ana", "/home/ana/", "/", "", "/srv/lab users/o'brien"]
PATHS = ["~/.dssh", "~/.dssh/", "~", "~/", "work dir/x", ".dssh", "/scratch/dssh",
         "/scratch/dssh/", "~/it's here"]


def _expand(home: str, path: str) -> str:
    """``HostConnection.expand`` once the head knows the home dir (an empty ``$HOME`` is
    "/" to the head, as it always was)."""
    return HostConnection.expand(SimpleNamespace(home=home or "/"), path)  # type: ignore[arg-type]


def _sh(word_script: str, home: str) -> str:
    return subprocess.run(["sh", "-c", word_script], env={"HOME": home, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("home", HOMES)
@pytest.mark.parametrize("path", PATHS)
def test_the_workdir_word_is_the_path_the_head_computes(home: str, path: str) -> None:
    said = _sh(f"printf '%s' {expand_sh(path)}", home)
    expected = _expand(home, path).rstrip("/")
    # the same dir: equal, or one of them the other with the root's slash doubled or dropped
    assert said == expected or (said, expected) in (("/", ""),), (path, home, said, expected)


def test_policy_files_under_home_are_found_by_the_shell_as_by_the_head(tmp_path: Path) -> None:
    home_dir = tmp_path / "h me"  # a space: quoting matters
    (home_dir / ".config").mkdir(parents=True)
    for name in (".distribute-policy", ".config/a.policy", ".config/b.policy"):
        (home_dir / name).write_text("cpus: 1\n")
    pats = ["~/.distribute-policy", "~/.config/*.policy", "~/missing-policy"]
    by_shell = _sh(policy.read_script(pats, None), str(home_dir))
    by_head = _sh(policy.read_script(pats, str(home_dir)), "/nonexistent")
    assert by_shell == by_head
    assert by_shell.count("@@policy ") == 3 and f"{home_dir}/.config/a.policy" in by_shell

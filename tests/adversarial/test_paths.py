"""Paths on the head: inputs from outside the sweep's dir, and where results go (issue 10,
theme 3; the ``as:`` names that leave input/ are refused in test_rejected.py).

Cases:

- ``test_input_outside_sweep_dir_as_written``: ``files: [../outside/precious.txt,
  /ABS/outside/precious.txt as abs.txt]``: a path written in the sweep file that leaves its
  dir is allowed (the issue: "allowed only when written as such"); the job gets the bytes,
  the source is untouched, nothing else changes.
- ``test_dry_run_touches_nothing``: ``--dry-run`` of that sweep creates nothing anywhere.
- ``test_dry_run_names_outside_sources``: the issue wants such inputs *shown* in
  ``--dry-run``: the plan lists the file they are read from (resolved, once) under "sent
  from outside the sweep's directory".
- ``test_parameter_chosen_path_leaves_sweep_dir`` (found by this corpus, fixed; was UNSAFE):
  ``files: [{path: "meshes/{mesh}.msh"}]`` with ``mesh: "../../outside/secret"`` must not
  read a file outside the sweep's dir that the sweep file never wrote down: exit 2.
- ``test_symlink_out_of_sweep_dir_refused[written|templated]``: a path written as inside the
  sweep's dir (``data/precious.txt``, or ``{name}/precious.txt`` with ``name: data``) that a
  symlink ``data -> ../outside`` leads out of it: exit 2, nothing started.
- ``test_results_option[absolute|dotted]``: ``--results DIR`` (absolute, and relative with a
  ``..`` inside): results land in ``DIR/<ns>/<sweep>/`` and nowhere else (no results/ next
  to the sweep file).
"""

from __future__ import annotations

import pytest
from advkit import Arena, escaped, explain, run_allowed, snapshot


def _outside_sweep(arena: Arena) -> tuple:
    path = arena.write_sweep({"name": "outside", "run": {
        "command": "cat input/precious.txt input/abs.txt > {output}/got", "cpus": 1,
        "files": ["../outside/precious.txt",
                  {"path": str(arena.outside / "precious.txt"), "as": "abs.txt"}]},
        "jobs": [{"name": "j"}]})
    arena.write_inventory()
    return path


def test_input_outside_sweep_dir_as_written(arena: Arena) -> None:
    path = _outside_sweep(arena)
    before = snapshot(arena.root)
    proc = arena.run(path)
    after = snapshot(arena.root)
    assert proc.returncode == 0, explain(proc)
    got = (arena.sweep_dir / "results/default/outside/j/got").read_text()
    assert got == "precious\n" * 2
    assert escaped(before, after, run_allowed("sweep/results/default/outside")) == []


def test_dry_run_touches_nothing(arena: Arena) -> None:
    path = _outside_sweep(arena)
    before = snapshot(arena.root)
    proc = arena.run(path, "--dry-run")
    assert proc.returncode == 0, explain(proc)
    assert "dry run: nothing was started." in proc.stdout
    assert "precious.txt, abs.txt" in proc.stdout
    assert snapshot(arena.root) == before


def test_dry_run_names_outside_sources(arena: Arena) -> None:
    path = _outside_sweep(arena)
    proc = arena.run(path, "--dry-run")
    assert proc.returncode == 0, explain(proc)
    head = "sent from outside the sweep's directory (as written in it):\n"
    assert head + f"  {arena.outside / 'precious.txt'}\n" in proc.stdout


def test_parameter_chosen_path_leaves_sweep_dir(arena: Arena) -> None:
    (arena.sweep_dir / "meshes").mkdir()
    (arena.sweep_dir / "meshes/a.msh").write_text("mesh a\n")
    (arena.outside / "secret.msh").write_text("secret\n")
    path = arena.write_sweep({"name": "mesh", "run": {
        "command": "cat input/m.msh > {output}/got", "cpus": 1,
        "files": [{"path": "meshes/{mesh}.msh", "as": "m.msh"}]},
        "params": {"mesh": ["a", "../../outside/secret"]}})
    arena.write_inventory()
    before = snapshot(arena.root)
    proc = arena.run(path)
    assert proc.returncode == 2, explain(proc)
    assert "sweep.yaml:6: run.files[0]" in proc.stderr
    assert snapshot(arena.root) == before


@pytest.mark.parametrize("where", ["absolute", "dotted"])
def test_results_option(arena: Arena, where: str) -> None:
    path = arena.write_sweep({"name": "res", "run": {"command": "printf x > {output}/x",
                                                     "cpus": 1}, "jobs": [{"name": "j"}]})
    arena.write_inventory()
    target = str(arena.root / "elsewhere") if where == "absolute" else "out/../elsewhere"
    (arena.root / "out").mkdir()
    before = snapshot(arena.root)
    proc = arena.run(path, "--results", target)
    after = snapshot(arena.root)
    assert proc.returncode == 0, explain(proc)
    assert (arena.root / "elsewhere/default/res/j/x").read_text() == "x"
    assert not (arena.sweep_dir / "results").exists()
    assert escaped(before, after, run_allowed("elsewhere/default/res")) == []


@pytest.mark.parametrize("written", ["data/precious.txt", "{name}/precious.txt"])
def test_symlink_out_of_sweep_dir_refused(arena: Arena, written: str) -> None:
    (arena.sweep_dir / "data").symlink_to(arena.outside)
    path = arena.write_sweep({"name": "link", "run": {
        "command": "true", "cpus": 1, "files": [written]}, "params": {"name": ["data"]}})
    arena.write_inventory()
    before = snapshot(arena.root)
    proc = arena.run(path)
    assert proc.returncode == 2, explain(proc)
    assert "sweep.yaml:6: run.files[0]: file 'data/precious.txt' leads outside the sweep's " \
        "directory through a symlink" in proc.stderr
    assert snapshot(arena.root) == before

"""The Python API: build a sweep in code, run it, read per-job results."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import distribute_ssh
from distribute_ssh import File, Job, Run, Sweep, load_inventory, parse_inventory, run


def test_programmatic_sweep_runs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed.txt").write_text("7\n")
    sweep = Sweep(
        name="api",
        run=Run(command="echo $(( {x} * $(cat input/seed.txt) )) > {output}/y.txt", cpus=1,
                files=[File("seed.txt")]),
        params={"x": list(range(5))},
        jobs=[Job(name="extra", params={"x": 10})],
    )
    inv = parse_inventory("hosts: {here: {connection: local, cpus: 2}}\n", "inline.yaml")
    result = run(sweep, inv, state=tmp_path / "state.db", results=tmp_path / "out")
    assert result.exit_code == 0
    assert [j.name for j in result.jobs] == ["x-0", "x-1", "x-2", "x-3", "x-4", "extra"]
    assert all(j.status == "COMPLETED" and j.host == "here" for j in result.jobs)
    ys = {j.name: int((j.results_dir / "y.txt").read_text()) for j in result.jobs}
    assert ys == {"x-0": 0, "x-1": 7, "x-2": 14, "x-3": 21, "x-4": 28, "extra": 70}
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("select count(*) from jobs where state='COMPLETED'").fetchone()[0] == 6


def test_public_names_and_lazy_import() -> None:
    for name in distribute_ssh.__all__:
        assert getattr(distribute_ssh, name) is not None
    assert load_inventory is distribute_ssh.load_inventory


def test_inventory_host_grace_and_pause_settings() -> None:
    inv = parse_inventory("defaults: {host_grace: 2m}\nhosts:\n  a: {}\n"
                          "  b: {host_grace: 30s, max_pause: 1h, on_pause: drain,\n"
                          "      pause_files: [/tmp/x]}\n", "inv.yaml")
    a, b = inv.hosts["a"], inv.hosts["b"]
    assert a.host_grace == 120 and b.host_grace == 30
    assert a.max_pause == 24 * 3600 and a.on_pause == "suspend"
    assert b.max_pause == 3600 and b.on_pause == "drain" and b.pause_files == ("/tmp/x",)

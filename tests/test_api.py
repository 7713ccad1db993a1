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
    assert [j.params for j in result.jobs] == [{"x": i} for i in (0, 1, 2, 3, 4, 10)]
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


def test_to_yaml_and_back_is_the_same_sweep(tmp_path: Path) -> None:
    from distribute_ssh import Build, Outputs

    (tmp_path / "mesh.msh").write_text("m")
    (tmp_path / "build.sh").write_text("true")
    sweeps = [
        Sweep(name="s", run=Run(command="echo {x}"), params={"x": [1, 2.5, "3", True]}),
        Sweep(name="full", namespace="lab", requires=["python3", "gpu"],
              build=Build(command="sh build.sh && echo ${{HOME}}", files=[File("build.sh")]),
              run=Run(command="solve --re {re} \\\n  --mesh input/m.msh > {output}/o.txt",
                      files=[File("mesh.msh", as_="m.msh")], cpus=2, gpus=1, timeout="2h",
                      retries=3, env={"OMP_PROC_BIND": "close", "N": 4}),
              params={"re": [100, 1000]}, job_name="re-{re}",
              jobs=[Job(name="special", params={"re": 5}, files=[File("mesh.msh")])],
              outputs=Outputs(collect=["*.txt", "plots/"]), slurm={"partition": "short"}),
    ]
    for s in sweeps:
        text = s.to_yaml()
        back = Sweep.from_yaml(text, base_dir=tmp_path)
        assert back == s, text
        assert Sweep.from_yaml(back.to_yaml(), base_dir=tmp_path).to_yaml() == text


def test_a_few_hundred_jobs_built_in_code(tmp_path: Path) -> None:
    """The docs' example (docs/python-api.md): three parameters, 300 jobs, written to a file
    and read back as the same sweep."""
    sweep = Sweep(
        name="scan3",
        run=Run(command="echo {re} {aoa} {mesh} > {output}/case.txt", cpus=1),
        params={"re": [100 * 2 ** k for k in range(10)],
                "aoa": [round(-5 + 1.0 * i, 1) for i in range(10)],
                "mesh": ["coarse", "medium", "fine"]},
    )
    from distribute_ssh.plan import expand

    assert len(expand(sweep)) == 300
    path = tmp_path / "scan3.yaml"
    path.write_text(sweep.to_yaml())
    assert distribute_ssh.load_sweep(path) == sweep


def test_priority_orders_the_queue(tmp_path: Path, monkeypatch) -> None:
    """run.priority (a template of parameters) and a job's own priority decide which jobs
    start first: higher first, ties in the sweep's order (one slot: starts are the order)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sweep = Sweep(name="prio", run=Run(command="true", cpus=1, priority="{d}"),
                  params={"d": [1, 5, 2, 0, 4, 3]},
                  jobs=[Job(name="urgent", params={"d": 0}, priority=100),
                        Job(name="last", params={"d": 0})])
    inv = parse_inventory("hosts: {here: {connection: local, cpus: 1}}\n", "inline.yaml")
    result = run(sweep, inv, state=tmp_path / "state.db", results=tmp_path / "out")
    assert result.exit_code == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        order = [r[0] for r in db.execute(
            "SELECT j.name FROM events e JOIN jobs j ON j.id = e.job_id "
            "WHERE e.kind = 'starting' ORDER BY e.id")]
    # urgent (its own 100), then by d, highest first; d-0 and last tie at 0: sweep order
    assert order == ["urgent", "d-5", "d-4", "d-3", "d-2", "d-1", "d-0", "last"], order

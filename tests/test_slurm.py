"""``dssh slurm``: the same sweep as Slurm job arrays (SPEC §10), submitted to the real
single-node Slurm cluster the suite starts (tests/slurmcluster.py), and collected into
the usual results layout. The first test runs one sweep both on the loopback workstations
and on Slurm and compares what came back.

There is no apptainer binary here: the original tool's apptainer mode runs against the
same *stand-in* ``apptainer`` as in test_original.py (a shell script first on PATH).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import dssh, explain, job_json, summary, write
from test_original import APPTAINER_JOBS, STAND_IN

SOLVER = r"""#!/bin/sh
# a solver: reads its mesh, writes a result and a table, and fails for x=13
x=$1
mesh=$(cat input/mesh.txt)
mkdir -p outputs/fields
echo "x=$x sq=$((x * x)) mesh=$mesh cpus=$DSSH_CPUS omp=$OMP_NUM_THREADS" > outputs/result.txt
printf 'i,v\n1,%s\n' "$x" > outputs/fields/table.csv
echo "scratch" > outputs/big.tmp
echo "solved $x"
[ "$x" = 13 ] && { echo "diverged" >&2; exit 3; }
exit 0
"""

SWEEP = """
name: squares
namespace: lab
build:
  files: [solver.src]
  command: cp solver.src solver && chmod +x solver && echo built
run:
  command: "{build}/solver {x}"
  files: [mesh.txt]
  cpus: 1
  env: {FLAVOUR: "a b; $(touch /tmp/never)"}
params:
  x: [1, 2, 3, 4, 5, 6, 7, 8]
outputs:
  collect: ["**"]
  exclude: ["*.tmp"]
"""


def project(d: Path, sweep: str = SWEEP) -> Path:
    write(d / "solver.src", SOLVER, mode=0o755)
    write(d / "mesh.txt", "coarse\n")
    return write(d / "sweep.yaml", sweep)


def submit(cluster, out: Path, env: dict[str, str] | None = None, timeout: float = 120
           ) -> dict[str, str]:
    """``sh submit.sh`` as a user would, then wait until every job it submitted has left
    the queue; returns {what: Slurm job id} from the ids file submit.sh wrote."""
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(["sh", str(out / "submit.sh")], capture_output=True, text=True, env=e,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = dict(line.split() for line in (out / "dssh" / "jobids").read_text().splitlines())
    for jid in ids.values():
        cluster.wait_for(jid, timeout=timeout)
    return ids


def results_of(out: Path, root: Path) -> dict[str, dict[str, bytes]]:
    """Every collected file of every job, by job and relative path (job.json aside)."""
    got: dict[str, dict[str, bytes]] = {}
    for jd in sorted(p for p in root.iterdir() if p.is_dir()):
        got[jd.name] = {str(f.relative_to(jd)): f.read_bytes() for f in sorted(jd.rglob("*"))
                        if f.is_file() and f.name != "job.json" and ".attempts" not in f.parts}
    return got


def test_a_sweep_runs_on_slurm_as_on_the_lab(tmp_path: Path, slurm_cluster,
                                             fresh_workdirs) -> None:
    sweep = project(tmp_path)
    fresh_workdirs.write_inventory(tmp_path / "inventory.yaml",
                                   overrides={w.name: {"cpus": 2} for w in fresh_workdirs})
    lab = dssh("run", sweep, "-i", "inventory.yaml", "--results", "lab", cwd=tmp_path)
    assert lab.returncode == 0, explain(lab)

    r = dssh("slurm", sweep, "-o", "export", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    out = tmp_path / "export"
    assert "8 job(s) in array-0.sbatch (8 tasks), after setup.sbatch" in r.stdout
    script = (out / "array-0.sbatch").read_text()
    assert "#SBATCH --array=0-7\n" in script and "#SBATCH --cpus-per-task=1\n" in script
    assert "#SBATCH --job-name=squares\n" in script
    # input files are laid out per job, each stored once and read-only
    mesh = [out / "jobs" / f"x-{i}" / "input" / "mesh.txt" for i in range(1, 9)]
    assert len({m.stat().st_ino for m in mesh}) == 1 and mesh[0].stat().st_nlink == 9
    assert mesh[0].stat().st_mode & 0o222 == 0

    ids = submit(slurm_cluster, out)
    assert set(ids) == {"setup", "array-0"}
    states = slurm_cluster.job_states(ids["array-0"])
    assert sorted(states) == list(range(8)) and {s for s, _ in states.values()} == {"COMPLETED"}

    r = dssh("slurm", "collect", out, "--results", "cluster", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    assert "8 completed" in r.stdout
    lab_res = tmp_path / "lab" / "lab" / "squares"
    hpc_res = tmp_path / "cluster" / "lab" / "squares"
    assert results_of(out, hpc_res) == results_of(out, lab_res)
    assert (hpc_res / "x-3" / "result.txt").read_text() == \
        "x=3 sq=9 mesh=coarse cpus=1 omp=1\n"
    assert not (hpc_res / "x-3" / "big.tmp").exists()  # outputs.exclude, as on the lab
    lab_rows, hpc_rows = summary(lab_res), summary(hpc_res)
    assert [(r["job"], r["status"], r["exit_code"], r["x"]) for r in hpc_rows] == \
        [(r["job"], r["status"], r["exit_code"], r["x"]) for r in lab_rows]
    assert {r["host"] for r in hpc_rows} == {os.uname().nodename.split(".")[0]}
    info = job_json(hpc_res, "x-5")
    assert info["status"] == "COMPLETED" and info["exit_code"] == 0 and info["attempts"] == 1
    assert info["slurm_job"] == f"{ids['array-0']}_4"
    assert info["left_on_host"] == [{"path": "big.tmp", "size": 8}]
    assert (hpc_res / "build-slurm.log").read_text() == "built\n"
    assert not Path("/tmp/never").exists()


FAILING = """
name: mixed
run:
  command: "sh -c 'echo try $DSSH_ATTEMPT; exit {code}' && echo out > {output}/o.txt"
  cpus: 1
  retries: 1
params:
  code: [0, 5]
"""


def test_a_failing_task_is_failed_with_its_exit_code_after_its_retries(
        tmp_path: Path, slurm_cluster) -> None:
    write(tmp_path / "sweep.yaml", FAILING)
    r = dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    assert not (tmp_path / "out" / "setup.sbatch").exists()  # no build, no image
    ids = submit(slurm_cluster, tmp_path / "out")
    assert "setup" not in ids
    states = slurm_cluster.job_states(ids["array-0"])
    assert states[0][0] == "COMPLETED" and states[1] == ("FAILED", 5)
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    assert r.returncode == 1, explain(r)
    res = tmp_path / "results" / "default" / "mixed"
    rows = {row["job"]: row for row in summary(res)}
    assert rows["code-5"]["status"] == "FAILED" and rows["code-5"]["exit_code"] == "5"
    assert rows["code-5"]["attempts"] == "2"
    assert rows["code-0"]["status"] == "COMPLETED" and rows["code-0"]["attempts"] == "1"
    assert (res / "code-5" / "stdout.txt").read_text() == "try 2\n"
    assert (res / "code-5" / ".attempts" / "1" / "stdout.txt").read_text() == "try 1\n"
    assert "code-5: FAILED (exit 5)" in r.stdout

    # Submitting again reruns only what failed.
    (tmp_path / "sweep.yaml").write_text(FAILING)
    done_before = (tmp_path / "out" / "jobs" / "code-0" / ".dssh" / "started").read_text()
    ids2 = submit(slurm_cluster, tmp_path / "out")
    assert ids2["array-0"] != ids["array-0"]
    assert (tmp_path / "out" / "jobs" / "code-0" / ".dssh" / "started").read_text() == \
        done_before
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    info = job_json(res, "code-5")
    assert info["attempts"] == 4 and info["exit_code"] == 5


def test_a_failed_build_cancels_the_arrays_and_is_reported(tmp_path: Path,
                                                          slurm_cluster) -> None:
    project(tmp_path, SWEEP.replace("echo built", "echo no compiler >&2; exit 9"))
    r = dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    ids = submit(slurm_cluster, tmp_path / "out")
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    assert r.returncode == 1, explain(r)
    res = tmp_path / "results" / "lab" / "squares"
    assert {row["status"] for row in summary(res)} == {"CANCELLED"}, ids
    assert "no compiler" in (res / "build-slurm.log").read_text()
    assert not (tmp_path / "out" / "jobs" / "x-1" / ".dssh" / "stdout.txt").exists()


ORIGINAL = """
meta:
  batch_name: obatch
  namespace: orig-ns
  capabilities: []
python:
  initialize:
    build_file:
      path: build.py
    required_files:
      - path: table.csv
  jobs:
    - name: small
      file:
        path: run.py
    - name: wide
      file:
        path: run.py
      slurm:
        cpus_per_task: 2
        job_name: wide-one
    - name: long
      file:
        path: run.py
      slurm:
        time: "00:10:00"
slurm:
  nodes: 1
  ntasks: 1
  cpus_per_task: 1
  mem_per_cpu: 50M
  time: "00:05:00"
  mail_type: NONE
"""

BUILD_PY = """
import pathlib
pathlib.Path("compiled.txt").write_text("compiled\\n")
"""

RUN_PY = """
import os, pathlib, sys
cpus = sys.argv[1]
pathlib.Path("distribute_save/out.txt").write_text(
    f"cpus={cpus} built={pathlib.Path('compiled.txt').read_text().strip()} "
    f"inputs={sorted(os.listdir('input'))}\\n")
"""


def test_an_original_job_file_with_per_job_slurm_blocks(tmp_path: Path, slurm_cluster) -> None:
    write(tmp_path / "distribute-jobs.yaml", ORIGINAL)
    write(tmp_path / "build.py", BUILD_PY)
    write(tmp_path / "run.py", RUN_PY)
    write(tmp_path / "table.csv", "a,b\n")
    r = dssh("slurm", "distribute-jobs.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    out = tmp_path / "out"
    assert "3 job(s) in array-0.sbatch (1 task), array-1.sbatch (1 task), array-2.sbatch " \
           "(1 task), after setup.sbatch" in r.stdout
    scripts = [(out / f"array-{i}.sbatch").read_text() for i in range(3)]
    for s in scripts:
        for line in ("--nodes=1", "--ntasks=1", "--mem-per-cpu=50M", "--mail-type=NONE"):
            assert f"#SBATCH {line}\n" in s
    assert "--cpus-per-task=1\n" in scripts[0] and "--time=00:05:00\n" in scripts[0]
    assert "--cpus-per-task=2\n" in scripts[1] and "--job-name=wide-one\n" in scripts[1]
    assert "--time=00:10:00\n" in scripts[2] and "--job-name=obatch\n" in scripts[2]
    submit(slurm_cluster, out)
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "orig-ns" / "obatch"
    assert (res / "small" / "out.txt").read_text() == \
        "cpus=1 built=compiled inputs=['table.csv']\n"
    assert (res / "wide" / "out.txt").read_text().startswith("cpus=2 ")
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 3


# the original tool's apptainer job file of test_original.py, with its top-level slurm block
APPTAINER = APPTAINER_JOBS + "slurm:\n  ntasks: 2\n"


def test_an_original_apptainer_file_with_a_stand_in(tmp_path: Path, slurm_cluster) -> None:
    """Labelled: the stand-in apptainer of test_original.py, first on the tasks' PATH
    (sbatch passes the submitting shell's environment on)."""
    write(tmp_path / "image.sif", "fake-image-v1\n")
    write(tmp_path / "table_always.csv", "t\n")
    write(tmp_path / "data" / "extra_points.csv", "e\n")
    write(tmp_path / "distribute-jobs.yaml", APPTAINER)
    stand = write(tmp_path / "bin" / "apptainer", STAND_IN, mode=0o755)
    r = dssh("slurm", "distribute-jobs.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    submit(slurm_cluster, tmp_path / "out",
           env={"PATH": f"{stand.parent}:{os.environ['PATH']}", "HOME": str(tmp_path)})
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "lab-ns" / "abatch"
    # the original ran `singularity run ... IMAGE {ntasks}` on Slurm: cpus = ntasks
    assert (res / "one" / "result.txt").read_text() == "cpus=2 image=fake-image-v1\n"
    assert (res / "one" / "inputs.txt").read_text().split() == ["dataset.csv",
                                                               "table_always.csv"]
    assert (res / "two" / "mounts.txt").read_text() == "/solver/scratch\n/var/run/out dir\n"
    calls = (tmp_path / "apptainer-calls.log").read_text().splitlines()
    assert len(calls) == 2 and all(c.endswith("/image.sif 2") for c in calls)


@pytest.mark.parametrize("runtime", ["bwrap", "podman"])
def test_a_container_sweep_runs_inside_its_image_on_slurm(tmp_path: Path, slurm_cluster,
                                                         runtime: str) -> None:
    from test_containers import _podman_works, _static_busybox, make_rootfs, podman_images

    if not _static_busybox() or (runtime == "podman" and not _podman_works()):
        pytest.skip(f"needs {runtime} and a static /bin/busybox (.ci/run installs them)")
    make_rootfs(tmp_path / "rootfs")
    write(tmp_path / "sweep.yaml", f"""
        name: boxed-{runtime}
        build: {{files: [tool.sh], command: "chmod +x tool.sh"}}
        run:
          command: "echo {{v}} $DSSH_INPUT $DSSH_PARAM_V > /outputs/v.txt; ls / > {{output}}/root.txt;
            cat /input/in.txt; {{build}}/tool.sh"
          files: [in.txt]
          cpus: 1
          container: {{image: rootfs, runtime: {runtime}, mounts: [/scratch]}}
        params:
          v: [a, b]
        """)
    write(tmp_path / "in.txt", "hello\n")
    write(tmp_path / "tool.sh", "#!/bin/sh\necho tool in $DSSH_BUILD\n")
    r = dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    before = podman_images(runtime)
    try:
        submit(slurm_cluster, tmp_path / "out", timeout=300)
        r = dssh("slurm", "collect", "out", cwd=tmp_path)
        assert r.returncode == 0, explain(r)
    finally:
        for ref in podman_images(runtime) - before:  # root's image store is the machine's: as it was
            subprocess.run(["podman", "rmi", "-f", ref], capture_output=True)
    res = tmp_path / "results" / "default" / f"boxed-{runtime}"
    assert (res / "v-b" / "v.txt").read_text() == "b /input b\n"
    assert (res / "v-a" / "stdout.txt").read_text() == "hello\ntool in /build\n"
    root = (res / "v-a" / "root.txt").read_text().split()
    assert {"input", "outputs", "build", "scratch", "bin"} <= set(root)
    assert "root" not in root  # the image's tree, not the host's


# -- without a cluster: what is written, and bad input ------------------------------------------
def test_options_derived_from_the_run_section(tmp_path: Path) -> None:
    write(tmp_path / "sweep.yaml", """
        name: derived
        run: {command: "true", cpus: 4, gpus: 2, timeout: 90m, retries: 1}
        slurm: {partition: gpu, exclusive: true, requeue: false, account: lab-a}
        """)
    r = dssh("slurm", "sweep.yaml", "-o", "out", "--max-parallel", "3", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    s = (tmp_path / "out" / "array-0.sbatch").read_text()
    lines = [ln for ln in s.splitlines() if ln.startswith("#SBATCH")]
    assert lines == ["#SBATCH --array=0-0%3", "#SBATCH --job-name=derived",
                     "#SBATCH --partition=gpu", "#SBATCH --exclusive",
                     "#SBATCH --account=lab-a", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --gres=gpu:2", "#SBATCH --time=0-03:05:00",
                     "#SBATCH --output=logs/%x-%A_%a.out"]
    m = json.loads((tmp_path / "out" / "dssh" / "manifest.json").read_text())
    assert m["jobs"] == [{"name": "derived", "params": {}, "array": 0, "task": 0,
                          "definition": m["jobs"][0]["definition"]}]


@pytest.mark.parametrize("block, key, words", [
    ("slurm: {array: 0-3}", "slurm.array", "--max-parallel"),
    ("slurm: {p: cpu}", "slurm.p", "not an sbatch option"),
    ("slurm: {partition: [a, b]}", "slurm.partition", "a single value"),
    ("jobs: [{name: j, slurm: {dependency: 'afterok:1'}}]", "jobs[0].slurm.dependency",
     "wait for the build"),
])
def test_bad_slurm_options_are_refused_with_file_line_and_key(tmp_path: Path, block: str,
                                                              key: str, words: str) -> None:
    write(tmp_path / "sweep.yaml", f'name: s\nrun: {{command: "true"}}\n{block}\n')
    for args in (["slurm", "sweep.yaml", "-o", "out"], ["run", "sweep.yaml", "--dry-run"]):
        r = dssh(*args, cwd=tmp_path)
        assert r.returncode == 2, explain(r)
        assert re.search(rf"sweep\.yaml:3: {re.escape(key)}: .*{re.escape(words)}", r.stderr), \
            r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_original_files_bad_per_job_slurm_option_names_its_line(tmp_path: Path) -> None:
    write(tmp_path / "build.py", BUILD_PY)
    write(tmp_path / "run.py", RUN_PY)
    write(tmp_path / "table.csv", "a,b\n")
    write(tmp_path / "distribute-jobs.yaml", ORIGINAL.replace("job_name: wide-one",
                                                              "array: 1-4"))
    r = dssh("slurm", "distribute-jobs.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2, explain(r)
    assert "distribute-jobs.yaml:20: python.jobs[1].slurm.array: dssh makes one array task " \
           "per job" in r.stderr


def test_export_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    write(tmp_path / "sweep.yaml", 'name: s\nrun: {command: "true"}\n')
    r = dssh("slurm", "sweep.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "dssh slurm sweep.yaml -o DIR" in r.stderr, explain(r)
    write(tmp_path / "full" / "mine.txt", "keep me\n")
    r = dssh("slurm", "sweep.yaml", "-o", "full", cwd=tmp_path)
    assert r.returncode == 2 and "not empty and not a dssh slurm directory" in r.stderr
    assert (tmp_path / "full" / "mine.txt").exists()
    assert dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path).returncode == 0
    r = dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr
    assert dssh("slurm", "sweep.yaml", "-o", "out", "--force", cwd=tmp_path).returncode == 0
    r = dssh("slurm", "sweep.yaml", "-o", "out", "--max-parallel", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--max-parallel 0: give 1 or more" in r.stderr
    r = dssh("slurm", "collect", "full", cwd=tmp_path)
    assert r.returncode == 2 and "not a directory written by dssh slurm" in r.stderr


# -- a host of kind: slurm, driven by dssh run over SSH ------------------------------------------
def cluster_inventory(ws, path: Path) -> str:
    """The first workstation as a cluster's login node (its user submits to the suite's
    Slurm); the others stay workstations. Returns the cluster's name."""
    w = ws.hosts[0]
    ws.write_inventory(path, overrides={w.name: {"kind": "slurm",
                                                 "slurm": {"partition": "debug"},
                                                 "env": {"SITE": "hpc"}}})
    return w.name


def test_a_slurm_host_runs_the_sweep_from_the_laptop(tmp_path: Path, slurm_cluster,
                                                    fresh_workdirs) -> None:
    sweep = project(tmp_path)
    name = cluster_inventory(fresh_workdirs, tmp_path / "inventory.yaml")
    dry = dssh("run", sweep, "-i", "inventory.yaml", "--hosts", name, "--dry-run",
               cwd=tmp_path)
    assert dry.returncode == 0, explain(dry)
    assert "8 job(s) for the Slurm cluster" in dry.stdout and "--partition=debug" in dry.stdout
    r = dssh("run", sweep, "-i", "inventory.yaml", "--hosts", name, cwd=tmp_path,
             timeout=240)
    assert r.returncode == 0, explain(r)
    res = tmp_path / "results" / "lab" / "squares"
    rows = summary(res)
    assert [(row["job"], row["status"], row["host"]) for row in rows] == \
        [(f"x-{i}", "COMPLETED", name) for i in range(1, 9)]
    assert (res / "x-7" / "result.txt").read_text() == "x=7 sq=49 mesh=coarse cpus=1 omp=1\n"
    assert (res / "x-7" / "stdout.txt").read_text() == "solved 7\n"
    assert (res / "build-" f"{name}.log").read_text() == "built\n"
    info = job_json(res, "x-2")
    assert info["node"] == os.uname().nodename.split(".")[0]
    assert info["remote_dir"].startswith(str(fresh_workdirs.hosts[0].home))
    assert "/slurm/lab/squares/" in info["remote_dir"]
    st = dssh("status", "lab/squares", "--json", cwd=tmp_path)
    assert {j["state"] for j in json.loads(st.stdout)["jobs"]} == {"COMPLETED"}
    # the job ran as the login user, from the uploaded directory, with the host's env
    again = dssh("run", sweep, "-i", "inventory.yaml", "--hosts", name, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout, explain(again)

    # dssh hosts tells a cluster from a workstation: its partitions and the user's tasks
    hosts = dssh("hosts", "-i", "inventory.yaml", "--json", cwd=tmp_path)
    assert hosts.returncode == 0, explain(hosts)
    row = next(r for r in json.loads(hosts.stdout) if r["host"] == name)
    assert row["kind"] == "slurm" and row["jobs_running"] == 0
    assert [p["partition"] for p in row["partitions"]] == ["debug*"]
    assert int(row["partitions"][0]["cpus_total"]) == os.cpu_count()

    # Mixed inventories run on the workstations unless told otherwise.
    r = dssh("run", sweep, "-i", "inventory.yaml", "--hosts", f"{name},ws2", "--dry-run",
             cwd=tmp_path)
    assert r.returncode == 2 and "a run uses the workstations or one cluster" in r.stderr


SLEEPY = """
name: sleepy
run:
  command: "echo start {i} >> $HOME/starts.txt; sleep {t}; echo done {i} > {output}/r.txt"
  cpus: 1
params:
  i: [1, 2, 3, 4]
  t: [4]
"""


def test_a_killed_head_leaves_its_slurm_jobs_running_and_the_next_follows_them(
        tmp_path: Path, slurm_cluster, fresh_workdirs) -> None:
    from helpers import start_head, wait_until_running

    write(tmp_path / "sweep.yaml", SLEEPY)
    name = cluster_inventory(fresh_workdirs, tmp_path / "inventory.yaml")
    home = fresh_workdirs.hosts[0].home
    (home / "starts.txt").unlink(missing_ok=True)
    head = start_head(tmp_path, "run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", name)
    try:
        wait_until_running(tmp_path, "sleepy", timeout=90)
    finally:
        head.kill()
        head.wait()
    assert slurm_cluster.queue(), "the tasks left the queue with their head"
    r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", name, cwd=tmp_path,
             timeout=240)
    assert r.returncode == 0, explain(r)
    assert "following 4 job(s) already submitted" in r.stderr + r.stdout
    res = tmp_path / "results" / "default" / "sleepy"
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 4
    assert sorted((home / "starts.txt").read_text().splitlines()) == \
        [f"start {i}" for i in range(1, 5)]  # each job ran once


def test_dssh_cancel_scancels_the_tasks_of_a_slurm_sweep(tmp_path: Path, slurm_cluster,
                                                        fresh_workdirs) -> None:
    from helpers import start_head, wait_until_running

    write(tmp_path / "sweep.yaml", SLEEPY.replace("t: [4]", "t: [300]"))
    name = cluster_inventory(fresh_workdirs, tmp_path / "inventory.yaml")
    head = start_head(tmp_path, "run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", name)
    try:
        wait_until_running(tmp_path, "sleepy", timeout=90)
        c = dssh("cancel", "sleepy", "-i", "inventory.yaml", cwd=tmp_path)
        assert c.returncode == 0, explain(c)
        out, err = head.communicate(timeout=120)
    finally:
        head.kill()
    assert head.returncode == 1, out + err
    res = tmp_path / "results" / "default" / "sleepy"
    assert {row["status"] for row in summary(res)} == {"CANCELLED"}
    assert not [q for q in slurm_cluster.queue() if not q[1].startswith("COMPLET")]


def test_a_lost_login_node_is_reconnected_while_slurm_runs_the_jobs(
        tmp_path: Path, slurm_cluster, fresh_workdirs) -> None:
    from helpers import start_head, wait_until_running

    write(tmp_path / "sweep.yaml", SLEEPY.replace("t: [4]", "t: [8]"))
    name = cluster_inventory(fresh_workdirs, tmp_path / "inventory.yaml")
    w = fresh_workdirs.hosts[0]
    head = start_head(tmp_path, "run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", name)
    try:
        wait_until_running(tmp_path, "sleepy", timeout=90)
        w.stop(sessions=True)  # the login node goes away, with the head's connection
        time.sleep(4)
        assert slurm_cluster.queue(), "the tasks went with the login node's sshd"
        w.start()
        out, err = head.communicate(timeout=240)
    finally:
        head.kill()
        if w.pid is None:
            w.start()
    assert head.returncode == 0, out + err
    assert "lost" in err + out and f"{name}: back" in err + out
    res = tmp_path / "results" / "default" / "sleepy"
    assert [row["status"] for row in summary(res)] == ["COMPLETED"] * 4


def test_a_job_past_its_timeout_is_timeout_as_on_the_lab(tmp_path: Path,
                                                         slurm_cluster) -> None:
    write(tmp_path / "sweep.yaml", """
        name: slow
        run: {command: "echo begin; sleep {s}; echo end", cpus: 1, timeout: 2s}
        params: {s: [0, 30]}
        """)
    assert dssh("slurm", "sweep.yaml", "-o", "out", cwd=tmp_path).returncode == 0
    assert "#SBATCH --time=0-00:06:00\n" in (tmp_path / "out" / "array-0.sbatch").read_text()
    submit(slurm_cluster, tmp_path / "out")
    r = dssh("slurm", "collect", "out", cwd=tmp_path)
    assert r.returncode == 1, explain(r)
    rows = {row["job"]: row for row in summary(tmp_path / "results" / "default" / "slow")}
    assert (rows["s-0"]["status"], rows["s-0"]["exit_code"]) == ("COMPLETED", "0")
    # the lab's wrapper stops a job past its timeout with SIGTERM: 143, TIMEOUT
    assert (rows["s-30"]["status"], rows["s-30"]["exit_code"]) == ("TIMEOUT", "143")
    assert float(rows["s-30"]["seconds"]) < 20


def test_slurm_states_are_read_from_sacct_and_scontrol() -> None:
    """The parser of what the cluster says. sacct's lines are the format `sacct -n -P -X -o
    JobID,State,ExitCode` prints where accounting runs (the suite's cluster has none)."""
    from distribute_ssh.slurm import parse_states, task_ids

    text = ("-- sacct\n"
            "41_0|COMPLETED|0:0\n41_1|FAILED|5:0\n41_[2-3]|CANCELLED by 0|0:0\n"
            "41_4|OUT_OF_MEMORY|0:125\n"
            "-- scontrol\n"
            "JobId=47 ArrayJobId=41 ArrayTaskId=1 JobState=COMPLETED ExitCode=0:0\n"
            "JobId=41 ArrayJobId=41 ArrayTaskId=5-7%2 JobState=PENDING ExitCode=0:0\n")
    got = parse_states(text)
    assert got["41_0"] == ("COMPLETED", 0) and got["41_1"] == ("FAILED", 5)  # sacct wins
    assert got["41_2"] == got["41_3"] == ("CANCELLED", 0)
    assert got["41_4"] == ("OUT_OF_MEMORY", 0)
    assert [got[f"41_{t}"][0] for t in (5, 6, 7)] == ["PENDING"] * 3
    assert task_ids("1,3-5%2") == [1, 3, 4, 5] and task_ids("x") == []

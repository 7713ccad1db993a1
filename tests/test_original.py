"""SPEC §3.1: job files of the original ``distribute`` run unchanged, on real sshd
workstations. The job files here are written for these tests in the original's format
(the original project is GPL-3.0: nothing of it is copied), in the shape of its python
example: a build script, and a run script that reads ``input/dataset.csv`` when present
and saves a table into ``distribute_save/``.

There is no ``apptainer`` binary on these machines: apptainer mode runs against a
*stand-in* ``apptainer`` (a shell script put first on the jobs' PATH) that records its
arguments and writes into the save dir it was given, so that everything dssh itself does
is checked: the image uploaded once per host, the bind dirs made, the exact command line,
the outputs collected. One test runs the real binary, and is skipped where there is none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import dssh, explain, job_json, stand_in_inventory, summary, write

BUILD_PY = """
import os
os.makedirs("solver", exist_ok=True)
with open("solver/version.txt", "w") as f:
    f.write("built from " + ",".join(sorted(os.listdir("initial_files"))) + "\\n")
print("build saw input/", sorted(os.listdir("input")))
"""

RUN_PY = """
import csv, os, sys
cpus = int(sys.argv[1])
rows = list(csv.reader(open("input/table_always.csv")))
extra = list(csv.reader(open("input/dataset.csv"))) if os.path.exists("input/dataset.csv") else []
version = open("solver/version.txt").read().strip()
assert sorted(os.listdir("distribute_save")) == [], "the save dir starts empty"
with open("distribute_save/summary.txt", "w") as f:
    f.write(f"cpus={cpus} rows={len(rows)} extra={len(extra)} {version}\\n")
os.makedirs("distribute_save/sub", exist_ok=True)
open("distribute_save/sub/inputs.txt", "w").write(" ".join(sorted(os.listdir("input"))))
print("run on", cpus, "cpus")
"""

PYTHON_JOBS = """
meta:
  batch_name: tbatch
  namespace: "lab-ns"
  capabilities: [python3]
  matrix: "@someone:matrix.org"

python:
  initialize:
    build_file:
      path: build.py
    required_files:
      - path: table_always.csv

  jobs:
    - name: with_extra
      file:
        path: run.py
      required_files:
        - path: data/extra_points.csv
          alias: dataset.csv
    - name: plain
      file: {path: run.py}
      required_files: []
    - name: nulls
      file: run.py
      required_files: ~
      slurm: ~
"""


@pytest.fixture
def jobs_dir(tmp_path: Path, fresh_workdirs) -> Path:
    d = tmp_path / "orig"
    write(d / "build.py", BUILD_PY)
    write(d / "run.py", RUN_PY)
    write(d / "table_always.csv", "x,y\n0,0\n1,1\n2,4\n")
    write(d / "data" / "extra_points.csv", "x,y\n5,5\n")
    fresh_workdirs.write_inventory(d / "inventory.yaml", overrides={
        w.name: {"cpus": 3, "capabilities": ["python3"]} for w in fresh_workdirs})
    return d


def test_python_mode_runs_with_the_originals_layout(jobs_dir: Path) -> None:
    write(jobs_dir / "distribute-jobs.yaml", PYTHON_JOBS)
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    res = jobs_dir / "results" / "lab-ns" / "tbatch"
    rows = {row["job"]: row for row in summary(res)}
    assert set(rows) == {"with_extra", "plain", "nulls"}
    assert all(row["status"] == "COMPLETED" for row in rows.values())
    # each job ran `python3 run.py CPUS` next to what the build left; what it saved in
    # distribute_save/ is what came home
    assert (res / "with_extra" / "summary.txt").read_text() == \
        "cpus=3 rows=4 extra=2 built from table_always.csv\n"
    assert (res / "plain" / "summary.txt").read_text() == \
        "cpus=3 rows=4 extra=0 built from table_always.csv\n"
    assert (res / "with_extra" / "sub" / "inputs.txt").read_text() == \
        "dataset.csv table_always.csv"
    assert (res / "plain" / "sub" / "inputs.txt").read_text() == "table_always.csv"
    assert "run on 3 cpus" in (res / "plain" / "stdout.txt").read_text()
    builds = sorted(res.glob("build-*.log"))
    assert builds and "build saw input/ ['table_always.csv']" in builds[0].read_text()
    assert job_json(res, "plain")["cpus"] == 3


def test_convert_prints_a_sweep_that_means_the_same(jobs_dir: Path) -> None:
    from distribute_ssh.model.sweep import load_sweep

    write(jobs_dir / "distribute-jobs.yaml", PYTHON_JOBS)
    r = dssh("convert", "distribute-jobs.yaml", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    assert r.stdout.startswith("# dssh sweep file converted from distribute-jobs.yaml")
    (jobs_dir / "converted.yaml").write_text(r.stdout)
    original = load_sweep(jobs_dir / "distribute-jobs.yaml")
    converted = load_sweep(jobs_dir / "converted.yaml")
    assert converted == original  # every field; the file's own directory is not compared
    assert "name: tbatch" in r.stdout and "namespace: lab-ns" in r.stdout
    r = dssh("run", "converted.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    res = jobs_dir / "results" / "lab-ns" / "tbatch"
    assert (res / "with_extra" / "summary.txt").read_text() == \
        "cpus=3 rows=4 extra=2 built from table_always.csv\n"


def test_keys_the_original_did_not_know_are_ignored_with_a_warning(jobs_dir: Path) -> None:
    text = PYTHON_JOBS.replace("  matrix:", "  description: a note\n  matrix:").replace(
        "    - name: plain\n", "    - name: plain\n      priority: 3\n")
    write(jobs_dir / "distribute-jobs.yaml", text)
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", "--dry-run", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    assert "distribute-jobs.yaml:5: meta.description: not a key of the original " \
           "distribute's job files; ignored" in r.stderr, r.stderr
    assert "python.jobs[1].priority" in r.stderr


def test_a_missing_file_in_an_original_job_file_names_its_key(jobs_dir: Path) -> None:
    write(jobs_dir / "distribute-jobs.yaml", PYTHON_JOBS.replace("data/extra_points.csv",
                                                                 "data/missing.csv"))
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 2, explain(r)
    assert "distribute-jobs.yaml:19: python.jobs[0].required_files[0].path: file " \
           "'data/missing.csv' not found" in r.stderr, r.stderr
    write(jobs_dir / "bad-ns.yaml", PYTHON_JOBS.replace('"lab-ns"', '"lab/ns"'))
    r = dssh("run", "bad-ns.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 2, explain(r)
    assert "bad-ns.yaml:3" in r.stderr and "meta.namespace" in r.stderr
    assert "no '/'" in r.stderr


STAND_IN = r"""#!/bin/sh
# A STAND-IN for apptainer, for tests only: there is no apptainer binary here. It records
# its arguments and does what a distribute image's app would: read /input, write into
# /distribute_save -- through the host dirs the --bind option maps them to.
echo "$*" >> "$HOME/apptainer-calls.log"
[ "$1" = run ] && [ "$2" = --app ] && [ "$3" = distribute ] && [ "$4" = --bind ] || exit 64
binds=$5 image=$6 cpus=$7
[ -f "$image" ] || { echo "no image $image" >&2; exit 65; }
in= save=
old_ifs=$IFS; IFS=,
for b in $binds; do
    host=${b%%:*}; rest=${b#*:}; inside=${rest%%:*}
    case $inside in
        /input) in=$host ;;
        /distribute_save) save=$host ;;
        *) [ -d "$host" ] && [ -z "$(ls -A "$host")" ] || { echo "mount $host" >&2; exit 66; }
           echo "$inside" >> "$save/mounts.txt" ;;
    esac
done
IFS=$old_ifs
ls "$in" > "$save/inputs.txt"
echo "cpus=$cpus image=$(cat "$image")" > "$save/result.txt"
"""

APPTAINER_JOBS = """
meta:
  batch_name: abatch
  namespace: lab-ns
  capabilities: [apptainer]

apptainer:
  initialize:
    sif:
      path: image.sif
    required_files:
      - path: table_always.csv
    required_mounts:
      - /solver/scratch
      - /var/run/out dir
  jobs:
    - name: one
      required_files:
        - path: data/extra_points.csv
          alias: dataset.csv
    - name: two
"""


def test_apptainer_mode_with_a_stand_in(jobs_dir: Path, fresh_workdirs) -> None:
    write(jobs_dir / "image.sif", "fake-image-v1\n")
    write(jobs_dir / "distribute-jobs.yaml", APPTAINER_JOBS)
    stand_in_inventory(fresh_workdirs, jobs_dir / "inventory.yaml", STAND_IN)
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    res = jobs_dir / "results" / "lab-ns" / "abatch"
    assert [row["status"] for row in summary(res)] == ["COMPLETED", "COMPLETED"]
    assert (res / "one" / "inputs.txt").read_text().split() == ["dataset.csv",
                                                               "table_always.csv"]
    assert (res / "two" / "inputs.txt").read_text().split() == ["table_always.csv"]
    assert (res / "one" / "result.txt").read_text() == "cpus=2 image=fake-image-v1\n"
    assert (res / "one" / "mounts.txt").read_text().splitlines() == ["/solver/scratch",
                                                                     "/var/run/out dir"]
    calls = []
    for w in fresh_workdirs:
        log = w.home / "apptainer-calls.log"
        if log.exists():
            calls += log.read_text().splitlines()
    assert len(calls) == 2
    for c in calls:
        words = c.split(" ")
        assert words[:4] == ["run", "--app", "distribute", "--bind"]
        binds = c.split(" ", 4)[4].rsplit(" ", 2)[0].split(",")
        assert binds[0].endswith("/input:/input:rw") and "/outputs:/distribute_save:rw" in \
            binds[1]
        assert binds[2].endswith("/mounts/0:/solver/scratch:rw")
        assert binds[3].endswith("/mounts/1:/var/run/out dir:rw")
        assert c.endswith("/image.sif 2")
    # The image went to each host once, into the build dir, and is reused next time.
    again = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", "--name", "again",
                 cwd=jobs_dir)
    assert again.returncode == 0, explain(again)
    assert "is cached" in again.stderr + again.stdout


def test_apptainer_mode_needs_the_capability(jobs_dir: Path) -> None:
    write(jobs_dir / "image.sif", "x\n")
    write(jobs_dir / "distribute-jobs.yaml", APPTAINER_JOBS.replace(
        "capabilities: [apptainer]", "capabilities: []"))
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 2, explain(r)
    assert "requires: apptainer" in r.stderr


REAL_SIF = os.environ.get("DSSH_TEST_SIF", "")


@pytest.mark.skipif(shutil.which("apptainer") is None or not REAL_SIF,
                    reason="needs a real apptainer binary and DSSH_TEST_SIF, an image with a "
                           "'distribute' app that writes into /distribute_save (none on these "
                           "machines, and images cannot be fetched offline); the stand-in test "
                           "above checks what dssh itself does")
def test_apptainer_mode_with_the_real_binary(jobs_dir: Path) -> None:  # pragma: no cover
    shutil.copyfile(REAL_SIF, jobs_dir / "image.sif")
    write(jobs_dir / "distribute-jobs.yaml", APPTAINER_JOBS)
    r = dssh("run", "distribute-jobs.yaml", "-i", "inventory.yaml", cwd=jobs_dir)
    assert r.returncode == 0, explain(r)
    res = jobs_dir / "results" / "lab-ns" / "abatch"
    assert [row["status"] for row in summary(res)] == ["COMPLETED", "COMPLETED"]
    assert any(p.is_file() for p in (res / "one").rglob("*")
               if p.name not in ("stdout.txt", "stderr.txt", "job.json"))

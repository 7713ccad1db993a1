"""A smoke run of ``bench/speed`` (issue 11) at tiny sizes, so the benchmark cannot rot.

The benchmark itself is not part of the test run (it takes a quarter of an hour); this runs
every one of its sections once, small, in one subprocess, and checks from its ``--json`` that
each produced numbers and that every tool's results were checked (nothing FAILED). Wall-clock targets are not
asserted: machines are noisy, and MET/MISSED is the benchmark's business.

Needs real sshd workstations (it starts its own loopback ones, as the benchmarks do); GNU
Parallel is used when ``parallel --version`` works, else the benchmark runs dssh alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.sshd

REPO = Path(__file__).resolve().parent.parent
SSHD = Path("/usr/sbin/sshd")

SMALL = [
    # (few jobs for dispatch: GNU Parallel without ControlMaster logs in for each one)
    "--jobs", "16", "--hosts", "2", "--slots", "2", "--repeat", "1",
    "--host-counts", "1,2", "--jobs-per-host", "8", "--makespan-per-host", "4",
    "--makespan-jobs", "8", "--makespan-seconds", "0.2",
    "--mixed-jobs", "8", "--mixed-mean", "0.3", "--mixed-cap", "1",
    "--scale-hosts", "5", "--scale-jobs", "100", "--scale-slots", "2", "--hosts-repeat", "1",
    "--growth-jobs", "200,2000", "--growth-hosts", "2,5", "--growth-host-jobs", "40",
    "--status-jobs", "2000", "--status-repeat", "2", "--startup-repeat", "2",
]


def _have_parallel() -> bool:
    try:
        r = subprocess.run(["parallel", "--version"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.startswith("GNU parallel")


@pytest.fixture(scope="module")
def speed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
        if os.environ.get("DSSH_TEST_REQUIRE_SSHD", "") not in ("", "0"):
            pytest.fail(f"DSSH_TEST_REQUIRE_SSHD=1, but {SSHD} is missing", pytrace=False)
        pytest.skip(f"{SSHD} missing: the benchmark runs on real OpenSSH workstations")
    out = tmp_path_factory.mktemp("speed")
    argv = [sys.executable, str(REPO / "bench" / "speed"), *SMALL, "--json", str(out / "r.json")]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(out / "r.png")]
    except ImportError:
        pass
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSSH_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"bench/speed failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    report = json.loads((out / "r.json").read_text())
    report["_stdout"] = r.stdout
    report["_plot"] = str(out / "r.png") if "--plot" in argv else None
    return report


def test_nothing_failed_and_the_table_is_printed(speed: dict) -> None:
    assert speed["failures"] == {}
    assert all(row["result"] in ("MET", "MISSED", "info", "n/a") for row in speed["table"])
    assert "dssh/peer" in speed["_stdout"] and "target" in speed["_stdout"]
    assert speed["machine"]["nproc"] >= 1
    if speed["_plot"]:
        assert Path(speed["_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_section_produced_numbers(speed: dict) -> None:
    s = speed["sections"]
    for name in ("dispatch", "curve", "makespan", "mixed", "scale", "hosts", "status", "startup",
                 "growth"):
        assert s.get(name), f"section {name} produced nothing"
    assert s["growth"]["jobs"]["series"] and s["growth"]["hosts"]["series"]


def test_dispatch_and_peers_were_checked(speed: dict) -> None:
    summ = speed["sections"]["dispatch"]["summary"]
    tools = {"dssh", "xargs -P ssh via ControlMasters", "xargs -P true (local)"}
    if _have_parallel():
        tools |= {"parallel", "parallel --controlmaster"}
    assert tools <= set(summ)
    for t in tools:
        assert summ[t]["jobs"] == 16 and summ[t]["jobs_per_s"] > 0
    assert summ["dssh"]["logins_median"] >= 1  # dssh really went over SSH


def test_makespan_mixed_and_curve(speed: dict) -> None:
    s = speed["sections"]
    assert s["makespan"]["ideal_s"] == pytest.approx(0.4)
    assert s["makespan"]["summary"]["dssh"]["median_s"] >= 0.4
    mixed = s["mixed"]
    assert len(mixed["durations"]) == 8
    assert min(mixed["in_order_s"], mixed["lpt_s"]) >= mixed["lower_bound_s"] > 0
    assert mixed["summary"]["dssh"]["median_s"] >= max(mixed["durations"])
    # the floor really connected to every host and ran a command there, in its own process
    for fl in (s["makespan"]["floor"], mixed["floor"]):
        for r in fl["runs"]:
            assert r["hosts"] == 2
            assert 0 < r["import_s"] < r["connected_s"] < r["ran_s"] < r["seconds"]
    pts = s["curve"]["points"]
    assert [p["hosts"] for p in pts] == [1, 2]
    for p in pts:
        assert p["throughput"]["dssh"] > 0 and p["makespan_s"]["dssh"] > 0


def test_scale_hosts_status_startup_growth(speed: dict) -> None:
    s = speed["sections"]
    run = s["scale"]["run"]
    assert run["jobs"] == 100 and run["hosts_used"] == 5
    assert run["max_rss_kib"] > 1000 and run["cpu"] > 0
    assert 0 < run["connect_all"] < run["seconds"]
    assert s["hosts"]["hosts"] == 5 and s["hosts"]["median_s"] > 0
    st = s["status"]
    assert st["files"]["2000"]["counts"]["COMPLETED"] > 1800
    assert st["dssh status"]["median_s"] > 0 and st["dssh status SWEEP"]["lines"] >= 2000
    for cmd in ("dssh --help", "dssh status", "dssh template"):
        assert s["startup"][cmd]["median_s"] > 0 and s["startup"][cmd]["modules"] > 0
    sizes = [[p["n"] for p in sr["points"]] for sr in s["growth"]["jobs"]["series"]]
    assert sizes == [[200, 2000], [200, 2000]]
    assert [p["n"] for p in s["growth"]["hosts"]["series"][0]["points"]] == [2, 5]



@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark needs root (its own unix users)")
def test_pause_latency_benchmark_runs_every_mode(tmp_path: Path) -> None:
    """``bench/pause_latency`` once per mode: pause files with and without a head, and the
    owner typing at a terminal (pause_when). No latency is asserted, only that each mode
    stopped and resumed the job's tree."""
    if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
        pytest.skip(f"{SSHD} missing: the benchmark runs on real OpenSSH workstations")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSSH_")}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "pause_latency"), "--trials", "1",
                        "--json"], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert set(report["summary"]) == {"head connected", "head killed",
                                      "owner typing, head killed"}
    for mode, s in report["summary"].items():
        assert s["failures"] == 0 and s["stop"]["n"] == 1 and s["resume"]["n"] == 1, (mode, s)


def test_the_table_says_where_the_workstations_homes_were(speed: dict) -> None:
    wd = speed["machine"]["workstations_dir"]
    assert wd["dir"] and wd["why"]
    assert f"workstations' homes: {wd['dir']} ({wd['why']})" in speed["_stdout"]


def test_the_workstations_homes_avoid_only_journal_less_ext4(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/_common.workstations_dir: an asked-for dir wins; tmpfs is never taken for
    journal-less ext4; the mount found for a path is the deepest one that holds it."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import _common
    finally:
        sys.path.remove(str(REPO / "bench"))
    monkeypatch.setenv("DSSH_BENCH_WORKSTATIONS_DIR", str(tmp_path))
    assert _common.workstations_dir() == (str(tmp_path), "$DSSH_BENCH_WORKSTATIONS_DIR")
    monkeypatch.delenv("DSSH_BENCH_WORKSTATIONS_DIR")
    where, why = _common.workstations_dir()
    assert where in (None, "/dev/shm") and why
    if not _common._journal_less_ext4(tempfile.gettempdir()):
        assert where is None  # the temp dir, as before
    assert _common._mount_of("/proc/self")[:2] == ("/proc", "proc")
    if _common._mount_of("/dev/shm")[1] == "tmpfs":
        assert not _common._journal_less_ext4("/dev/shm")

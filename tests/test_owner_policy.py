"""The owners' policy files on real sshd workstations (SPEC §6b): a second local user owns
the machine and writes ~/.distribute-policy; dssh's SSH user reads it and obeys."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import dssh, explain, owner_home, start_head, summary, write

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root to create the workstation owner's account")

OWNER = "dssh-polowner"
OWNER2 = "dssh-polowner2"  # a second owner of the same machine


@pytest.fixture(scope="module")
def owners() -> Iterator[Path]:
    """Two owners' homes, open to others (0711), as on a machine whose owners let dssh look."""
    base = Path(tempfile.mkdtemp(prefix="dssh-policy-owners-"))
    base.chmod(0o755)
    for name in (OWNER, OWNER2):
        owner_home(base, name, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def owner_writes(owners: Path, text: str, owner: str = OWNER) -> Path:
    """The owner writes their policy file themselves (as their own user, readable by all)."""
    path = owners / owner / ".distribute-policy"
    subprocess.run(["runuser", "-u", owner, "--", "sh", "-c", 'umask 022; cat > "$1"', "sh",
                    str(path)], input=text, text=True, check=True)
    return path


@pytest.fixture
def lab(tmp_path: Path, fresh_workdirs, owners: Path) -> dict:
    ws = fresh_workdirs
    for o in (OWNER, OWNER2):
        (owners / o / ".distribute-policy").unlink(missing_ok=True)
    pattern = [str(owners / "*" / ".distribute-policy")]
    inv = ws.write_inventory(tmp_path / "inventory.yaml", overrides={
        ws.hosts[0].name: {"cpus": 4, "policy_files": pattern},
        ws.hosts[1].name: {"cpus": 2, "policy_files": pattern, "nice": 3}})
    return {"ws": ws, "inv": inv, "dir": tmp_path, "owners": owners}


def intervals(results: Path, host: str) -> list[tuple[float, float]]:
    out = []
    for r in summary(results):
        if r["host"] == host:
            info = json.loads((results / r["job"] / "job.json").read_text())
            out.append((dt.datetime.fromisoformat(info["started"]).timestamp(),
                        dt.datetime.fromisoformat(info["finished"]).timestamp()))
    return sorted(out)


def test_owner_caps_cpus_and_sets_nice_and_dssh_hosts_shows_it(lab: dict) -> None:
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    path = owner_writes(owners, "# my desk: one core for dssh, gently\ncpus: 1\nnice: 15\n")
    r = dssh("hosts", "-i", lab["inv"], cwd=d)
    assert r.returncode == 0, explain(r)
    assert f"policy: {w1}: at most 1 cpus, nice 15" in r.stdout, r.stdout
    assert f"{OWNER}: {path}" in r.stdout
    write(d / "sweep.yaml", """
        name: gentle
        run: {command: "ps -o ni= -p $$ > {output}/nice.txt; sleep 0.4", cpus: 1}
        params: {i: [1, 2, 3, 4, 5, 6]}
        """)
    r = dssh("run", "sweep.yaml", "-i", lab["inv"], "--hosts", w1, cwd=d)
    assert r.returncode == 0, explain(r)
    results = d / "results/default/gentle"
    # the owner's cpus: 1 against the inventory's 4: one job at a time
    spans = intervals(results, w1)
    assert len(spans) == 6
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.05, spans
    for row in summary(results):
        assert (results / row["job"] / "nice.txt").read_text().strip() == "15"


def test_jobs_run_at_the_inventory_nice_or_10_without_a_policy(lab: dict) -> None:
    ws, d = lab["ws"], lab["dir"]
    w1, w2 = ws.hosts[0].name, ws.hosts[1].name
    write(d / "sweep.yaml", """
        name: nice
        run: {command: "ps -o ni= -p $$ > {output}/nice.txt", cpus: 1}
        params: {i: [1, 2, 3, 4, 5, 6, 7, 8]}
        """)
    r = dssh("run", "sweep.yaml", "-i", lab["inv"], "--hosts", f"{w1},{w2}", cwd=d)
    assert r.returncode == 0, explain(r)
    results = d / "results/default/nice"
    got = {(row["host"], (results / row["job"] / "nice.txt").read_text().strip())
           for row in summary(results)}
    assert got == {(w1, "10"), (w2, "3")}, got


def test_a_bad_policy_file_closes_the_host_and_says_where(lab: dict) -> None:
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    path = owner_writes(owners, "cpus: 2\nhourz: weekends\n")
    r = dssh("hosts", "-i", lab["inv"], cwd=d)
    assert f"note: {w1}: its owner's policy cannot be read, so dssh starts nothing there " \
           f"until it is fixed: {path}:2: unknown key hourz: did you mean 'hours'?" in r.stdout
    write(d / "sweep.yaml", """
        name: refused
        run: {command: "true"}
        """)
    r = dssh("run", "sweep.yaml", "-i", lab["inv"], "--hosts", w1, cwd=d)
    assert r.returncode != 0, explain(r)
    assert f"{path}:2: unknown key hourz" in r.stdout + r.stderr, explain(r)
    assert not list(d.rglob("job.json"))
    why = dssh("why", "refused", "-i", lab["inv"], cwd=d)
    line = next((x for x in why.stdout.splitlines() if x.startswith(w1)), "")
    assert "its owner's policy cannot be read" in line, why.stdout + why.stderr


def test_nothing_starts_outside_the_owners_hours(lab: dict) -> None:
    """The host's clock is set (for dssh alone, DSSH_CLOCK_OFFSET) to 4 s before the
    owner's evening window opens: the jobs wait for it."""
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    owner_writes(owners, "hours: 18:00-08:00\n")
    t0 = time.time()
    now = dt.datetime.fromtimestamp(t0)
    target = now.replace(hour=17, minute=59, second=56, microsecond=0)
    shift = (target - now).total_seconds()
    opens = t0 + 4.0  # when dssh's clock for the host reads 18:00
    env = {"DSSH_CLOCK_OFFSET": str(shift)}
    r = dssh("hosts", "-i", lab["inv"], cwd=d, env=env)
    assert "now: outside the hours its owners allow (18:00-08:00) until" in r.stdout, r.stdout
    write(d / "sweep.yaml", """
        name: evening
        build: {command: "date +%s.%N"}
        run: {command: "true", cpus: 1}
        params: {i: [1, 2, 3]}
        """)
    r = dssh("run", "sweep.yaml", "-i", lab["inv"], "--hosts", w1, cwd=d, env=env)
    assert r.returncode == 0, explain(r)
    assert f"{w1}: outside the hours its owners allow (18:00-08:00) until" in r.stdout
    assert f"{w1}: within its owners' hours (18:00-08:00) again" in r.stdout
    spans = intervals(d / "results/default/evening", w1)
    # (job.json holds whole seconds)
    assert len(spans) == 3 and min(s for s, _ in spans) >= opens - 1.5, (spans, opens)
    # the build, work too, waited as well (its log holds the time it ran, to the ns)
    log = (d / "results/default/evening" / f"build-{w1}.log").read_text().splitlines()
    built = float(next(x for x in log if x and not x.startswith("#")))
    assert built >= opens - 0.5, (built, opens)


def test_dssh_why_says_the_jobs_wait_for_the_owners_hours(lab: dict) -> None:
    """Noon on the host (DSSH_CLOCK_OFFSET), the owner allows evenings only: the head
    waits (killed here, as a closed laptop would be) and `dssh why` tells why."""
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    owner_writes(owners, "hours: 18:00-08:00\n")
    now = dt.datetime.now()
    env = {"DSSH_CLOCK_OFFSET": str((now.replace(hour=12, minute=0, second=0)
                                     - now).total_seconds())}
    write(d / "sweep.yaml", """
        name: noon
        run: {command: "true", cpus: 1}
        params: {i: [1, 2]}
        """)
    with pytest.raises(subprocess.TimeoutExpired):
        dssh("run", "sweep.yaml", "-i", lab["inv"], "--hosts", w1, cwd=d, env=env, timeout=8)
    assert not list(d.rglob("job.json"))  # nothing ran
    why = dssh("why", "noon", "-i", lab["inv"], cwd=d, env=env)
    assert why.returncode == 0, explain(why)
    line = next((x for x in why.stdout.splitlines() if x.strip().startswith(w1)), "")
    assert "outside the hours its owners allow (18:00-08:00)" in line, why.stdout


def test_the_owner_keeps_a_gpu_to_themselves(lab: dict) -> None:
    """The inventory lists GPUs 0 and 1 (declared, not probed: no GPU on this machine);
    the owner lets dssh have GPU 1 only."""
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    owner_writes(owners, "gpus: [1]\n")
    inv = ws.write_inventory(d / "gpu-inventory.yaml", overrides={w1: {
        "cpus": 4, "gpus": [0, 1], "policy_files": [str(owners / "*" / ".distribute-policy")]}})
    r = dssh("hosts", "-i", inv, "--json", cwd=d)
    row = next(x for x in json.loads(r.stdout) if x["host"] == w1)
    assert row["capacity"]["gpus"] == [1] and row["policy"]["gpus"] == [1], row
    write(d / "sweep.yaml", """
        name: gpu
        run: {command: "echo $CUDA_VISIBLE_DEVICES > {output}/gpu.txt; sleep 0.3", gpus: 1}
        params: {i: [1, 2, 3]}
        """)
    r = dssh("run", "sweep.yaml", "-i", inv, "--hosts", w1, cwd=d)
    assert r.returncode == 0, explain(r)
    results = d / "results/default/gpu"
    assert {(results / row["job"] / "gpu.txt").read_text().strip()
            for row in summary(results)} == {"1"}


def test_a_policy_changed_during_a_run_holds_for_what_starts_next(lab: dict) -> None:
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w1 = ws.hosts[0].name
    inv = ws.write_inventory(d / "two.yaml", overrides={w1: {
        "cpus": 2, "policy_files": [str(owners / "*" / ".distribute-policy")]}})
    write(d / "sweep.yaml", """
        name: changing
        run: {command: "sleep 3", cpus: 1}
        params: {i: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
        """)
    head = start_head(d, "run", "sweep.yaml", "-i", inv, "--hosts", w1)
    try:
        def running() -> int:
            st = json.loads(dssh("status", "changing", "--json", cwd=d).stdout or "{}")
            return sum(j["state"] == "RUNNING" for j in st.get("jobs", []))

        deadline = time.monotonic() + 60
        while running() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        owner_writes(owners, "cpus: 1\n")  # the owner wants most of the machine back
        out, err = head.communicate(timeout=180)
    finally:
        if head.poll() is None:
            head.kill()
    assert head.returncode == 0, (out, err)
    line = next((x for x in out.splitlines() if "its owners' policy is now: at most 1 cpus"
                 in x), "")
    assert line, out
    changed = dt.datetime.fromisoformat(line.split()[0]).timestamp()
    spans = intervals(d / "results/default/changing", w1)
    after = [s for s in spans if s[0] >= changed + 1]
    assert len(after) >= 2, (spans, changed)
    # what started after the change ran alone: after everything before it had ended
    for i, (start, _) in enumerate(spans):
        if start >= changed + 1:
            assert all(start >= end - 1 for _, end in spans[:i]), (spans, changed)


def test_two_owners_combine_by_the_strictest_rule_also_for_max_pause(lab: dict) -> None:
    """Two owners' files and the inventory: the fewest cpus, the highest nice, the longest
    pause. The inventory lets an empty pause file hold 5 s; one owner says 1h: a file a
    minute old still pauses the host, for dssh hosts and for a run."""
    ws, d, owners = lab["ws"], lab["dir"], lab["owners"]
    w = ws.hosts[0]
    owner_writes(owners, "cpus: 3\nnice: 12\nmax_pause: 1h\n")
    owner_writes(owners, "cpus: 1\nnice: 15\n", owner=OWNER2)
    inv = ws.write_inventory(d / "pause.yaml", overrides={w.name: {
        "cpus": 4, "max_pause": "5s", "pause_files": ["~/.distribute-pause"],
        "policy_files": [str(owners / "*" / ".distribute-policy")]}})
    flag = w.home / ".distribute-pause"
    flag.touch()
    old = time.time() - 60
    os.utime(flag, (old, old))
    try:
        r = dssh("hosts", "-i", inv, cwd=d)
        assert f"policy: {w.name}: at most 1 cpus, nice 15, pauses up to 1h" in r.stdout, r.stdout
        row = next(x for x in r.stdout.splitlines() if x.startswith(w.name + " "))
        assert str(flag) in row, r.stdout  # paused by it, though older than 5 s
        write(d / "sweep.yaml", """
            name: held
            run: {command: "ps -o ni= -p $$ > {output}/nice.txt", cpus: 1}
            """)
        head = start_head(d, "run", "sweep.yaml", "-i", inv, "--hosts", w.name)
        try:
            time.sleep(4)
            st = json.loads(dssh("status", "held", "--json", cwd=d).stdout)
            assert st["jobs"][0]["state"] == "PENDING", st
            assert str(flag) in json.dumps(st["paused_hosts"]), st
            flag.unlink()
            out, err = head.communicate(timeout=60)
        finally:
            if head.poll() is None:
                head.kill()
        assert head.returncode == 0, (out, err)
    finally:
        flag.unlink(missing_ok=True)
    results = d / "results/default/held"
    (row,) = summary(results)
    assert (results / row["job"] / "nice.txt").read_text().strip() == "15"

"""SPEC §6a: several lab members' heads share the same workstations and never push a host
past its capacity. Real OpenSSH workstations every member logs in to as themselves; each
member runs ``dssh`` as their own local user, with their own state, inventory and sweep.

Root only: each member is a unix user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import yaml
from lab import Lab, Member, Sampler, read_claims, start_lab

from distribute_ssh.ledger import waiter_name

pytestmark = [pytest.mark.sshd, pytest.mark.skipif(
    os.geteuid() != 0, reason="lab members are unix users: needs root")]

LEDGER_SH = resources.files("distribute_ssh.remote").joinpath("ledger.sh").read_bytes()


@pytest.fixture(scope="module")
def shared() -> Iterator[Lab]:
    base = Path(tempfile.mkdtemp(prefix="dssh-lab-"))
    the_lab = start_lab(3, 3, base)
    try:
        yield the_lab
    finally:
        the_lab.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def lab(shared: Lab) -> Lab:
    """The shared lab with no member process left, empty ledgers and workdirs."""
    from workstations import _kill_user_processes

    for m in shared.members:
        _kill_user_processes(m.uid, include_sshd=True)
        for w in shared.ws:
            subprocess.run(["rm", "-rf", str(m.home / w.name)], check=False)
        for p in m.home.glob("sweep-*"):
            subprocess.run(["rm", "-rf", str(p)], check=False)
        (m.home / "state.db").unlink(missing_ok=True)
    for w in shared.ws:
        subprocess.run(["rm", "-rf", w.ledger_dir], check=False)
    return shared


def _ssh(lab: Lab, m: Member, host: int, command: str, stdin: bytes | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    w = lab.ws[host]
    argv = ["ssh", *w.ssh_options(), "-i", str(m.identity_file), f"{m.user}@{w.address}",
            command]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60)


def _ledger(lab: Lab, m: Member, host: int, *args: str) -> str:
    """Run ``ledger.sh ARGS`` on a workstation as member ``m``, over SSH."""
    from shlex import join

    r = _ssh(lab, m, host, "sh -s " + join(args), stdin=LEDGER_SH)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def _claim(lab: Lab, m: Member, host: int, ledger: str, name: str, cpus: int, *,
           gpus: str = "-", cap: int = 4, cap_gpus: str = "-", head: str = "") -> str:
    """One claim as a head would make it; its verdict line (ok, full ..., yield ...)."""
    head = head or f"head-{m.user}"
    out = _ledger(lab, m, host, "claim", ledger, f"{m.user}-{name}", head, m.user, "testbox",
                  f"t/{m.user}", name, "job", str(cpus), gpus, str(cap), "-", cap_gpus,
                  f"/runs/{m.user}/{name}", waiter_name(m.user, head))
    verdict = out.splitlines()[0]
    return "ok" if verdict.startswith("ok ") else verdict


def _sweep(m: Member, name: str, jobs: int, seconds: float, cpus: int = 2) -> Path:
    """A member's sweep dir (owned by them) with ``jobs`` jobs of ``sleep SECONDS``."""
    d = m.home / f"sweep-{name}"
    d.mkdir()
    (d / f"{name}.yaml").write_text(yaml.safe_dump({
        "name": name, "run": {"command": f"date +%s.%N > {{output}}/started.txt; "
                                         f"sleep {seconds}; echo {{i}} > {{output}}/o.txt",
                              "cpus": cpus},
        "params": {"i": list(range(jobs))}}))
    return d


def _inventory(lab: Lab, m: Member, d: Path, **host) -> Path:
    p = d / "inventory.yaml"
    p.write_text(yaml.safe_dump(m.inventory(lab.ws, **host)))
    return p


def _own(m: Member, *paths: Path) -> None:
    for p in paths:
        subprocess.run(["chown", "-R", f"{m.uid}:{m.gid}", str(p)], check=True)


def _wait(proc: subprocess.Popen, d: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return (d / "head.log").read_text()


def _one_host_inventory(lab: Lab, m: Member, d: Path, cpus: int) -> None:
    """The member's inventory in ``d`` with ws1 alone, offering ``cpus``; ``d`` made theirs."""
    (d / "inventory.yaml").write_text(yaml.safe_dump(
        {"hosts": {"ws1": m.inventory(lab.ws, cpus=cpus)["hosts"]["ws1"]}}))
    _own(m, d)


def _wait_for_claims(lab: Lab, n: int, timeout: float = 30) -> None:
    """Until the workstations' ledgers hold at least ``n`` live claims (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(len(read_claims(Path(w.ledger_dir))) for w in lab.ws) >= n:
            return
        time.sleep(0.05)


def _summary(d: Path, name: str) -> list[dict[str, str]]:
    import csv

    with open(d / "results" / "default" / name / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def _starts(d: Path, name: str) -> list[tuple[float, str]]:
    """When each job's command began, to the nanosecond, as the job itself wrote it."""
    res = d / "results" / "default" / name
    return sorted((float((res / r["job"] / "started.txt").read_text()), r["job"])
                  for r in _summary(d, name))


# -- the ledger itself, as heads use it ------------------------------------------------------

def test_racing_claims_for_the_last_cpus_never_both_win(lab: Lab) -> None:
    """Eight claims of 2 cpus each, from two members at once, for a host with 4 cpus:
    exactly two win, and the ledger holds exactly 4 cpus."""
    ledger = lab.ws[0].ledger_dir
    a, b = lab.members[:2]
    _ledger(lab, a, 0, "show", ledger)  # the first use creates the dir, world-writable
    assert oct(os.stat(ledger).st_mode & 0o7777) == "0o1777"
    argv = []
    for i in range(8):
        m = (a, b)[i % 2]
        w = lab.ws[0]
        from shlex import join

        argv.append(subprocess.Popen(
            ["ssh", *w.ssh_options(), "-i", str(m.identity_file), f"{m.user}@{w.address}",
             "sh -s " + join(["claim", ledger, f"{m.user}-r{i}", f"head-{m.user}", m.user, "t",
                              "t/s", f"r{i}", "job", "2", "-", "4", "-", "-", f"/runs/r{i}",
                              waiter_name(m.user, f"head-{m.user}")])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    verdicts = []
    for p in argv:
        out, err = p.communicate(LEDGER_SH, timeout=60)
        assert p.returncode == 0, err.decode()
        verdicts.append(out.decode().splitlines()[0].split()[0])
    assert verdicts.count("ok") == 2, verdicts
    assert set(verdicts) <= {"ok", "full", "yield"}, verdicts
    claims = read_claims(Path(ledger))
    assert sum(int(c["cpus"]) for c in claims) == 4
    assert {c["user"] for c in claims} <= {a.user, b.user}


def test_smallest_capacity_gpu_ids_and_waiting_order(lab: Lab) -> None:
    a, b = lab.members[:2]
    led = lab.ws[1].ledger_dir + "-cap"
    # b's inventory says the host has 2 cpus, a's says 4: while b holds a claim, 2 is the most.
    assert _claim(lab, b, 1, led, "b1", 2, cap=2) == "ok"
    assert _claim(lab, a, 1, led, "a1", 2, cap=4).startswith("full")
    # GPUs are claimed by id: a second claim of GPU 0 fails, GPU 1 is free.
    led = lab.ws[1].ledger_dir + "-gpu"
    assert _claim(lab, a, 1, led, "g0", 1, gpus="0", cap_gpus="0,1") == "ok"
    assert _claim(lab, b, 1, led, "g0b", 1, gpus="0", cap_gpus="0,1").startswith("full")
    assert _claim(lab, b, 1, led, "g1", 1, gpus="1", cap_gpus="0,1") == "ok"
    # A GPU no one else's inventory lists is not given out: the ids in force are the
    # ones every claim's inventory shares.
    assert _claim(lab, b, 1, led, "g2", 1, gpus="2", cap_gpus="0,1,2").startswith("full")
    # First come, first served: b was refused first (it waits), so when room appears, a
    # (who never waited) yields to b.
    led = lab.ws[1].ledger_dir + "-fifo"
    assert _claim(lab, a, 1, led, "x1", 4) == "ok"
    assert _claim(lab, b, 1, led, "y1", 2).startswith("full")
    subprocess.run(["rm", "-f", f"{led}/c-{a.user}-x1"], check=True)  # a's job ended
    assert _claim(lab, a, 1, led, "x2", 2).startswith("yield")
    assert _claim(lab, b, 1, led, "y1", 2) == "ok"
    assert _claim(lab, a, 1, led, "x2", 2) == "ok"  # b was served: a's turn
    show = _ledger(lab, lab.members[2], 1, "show", led)
    assert [ln.split("\t")[1] for ln in show.splitlines() if ln.startswith("claim")] \
        .count(a.user) == 1


def test_claims_whose_process_is_gone_are_reclaimed(lab: Lab) -> None:
    """A claim whose wrapper was killed (kill -9, or a reboot) stops counting at once; one
    that was never started (its head died mid-start) once it is PENDING_STALE old."""
    a, b = lab.members[:2]
    led = lab.ws[2].ledger_dir
    assert _claim(lab, a, 2, led, "dead", 2) == "ok"
    # Sign it as a wrapper does, with a process of a's that then dies by SIGKILL.
    r = _ssh(lab, a, 2, "sleep 300 >/dev/null 2>&1 & p=$!; "
                        "s=$(cut -d' ' -f22 /proc/$p/stat); echo $p $s")
    pid, start = r.stdout.decode().split()
    claim = Path(led) / f"c-{a.user}-dead"
    with open(claim, "a") as f:
        f.write(f"pid {pid}\npstart {start}\n")
    assert _claim(lab, a, 2, led, "pend", 2) == "ok"
    assert _claim(lab, b, 2, led, "b1", 2).startswith("full")  # both of a's count now
    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)
    assert _claim(lab, b, 2, led, "b1", 2) == "ok"  # the killed one is reclaimed
    assert _claim(lab, b, 2, led, "b2", 2).startswith("full")
    old = time.time() - 61
    os.utime(Path(led) / f"c-{a.user}-pend", (old, old))  # a start cut short a minute ago
    assert _claim(lab, b, 2, led, "b2", 2) == "ok"
    # b may not remove a's files (sticky dir), but they no longer count; a's next claim
    # removes them.
    assert claim.exists()
    _claim(lab, a, 2, led, "later", 2)
    assert not claim.exists() and not (Path(led) / f"c-{a.user}-pend").exists()


def test_a_claim_from_before_a_reboot_is_reclaimed_and_a_long_wait_reserves_the_host(
        lab: Lab) -> None:
    a, b = lab.members[:2]
    led = lab.ws[0].ledger_dir + "-boot"
    assert _claim(lab, a, 0, led, "old", 4) == "ok"
    claim = Path(led) / f"c-{a.user}-old"
    text = claim.read_text().replace("boot ", "boot 0-before-the-reboot-")
    claim.write_text(text + "pid 1\npstart 1\n")  # signed, by a boot that is over
    assert _claim(lab, b, 0, led, "new", 4) == "ok"
    # A head that has waited 200 s for a whole host (4 cpus, which do not fit now): a
    # smaller claim that would fit is refused, so the big job is not starved.
    led = lab.ws[0].ledger_dir + "-reserve"
    assert _claim(lab, a, 0, led, "half", 2) == "ok"
    assert _claim(lab, b, 0, led, "whole", 4).startswith("full")  # b waits from now
    waiter = Path(led) / f"w-{waiter_name(b.user, f'head-{b.user}')}"
    assert waiter.exists()
    waiter.write_text("".join(f"since {time.time() - 200:.3f}\n" if ln.startswith("since ")
                              else ln + "\n" for ln in waiter.read_text().splitlines()))
    c = lab.members[2]
    assert _claim(lab, c, 0, led, "small", 1).startswith("yield")
    assert _claim(lab, b, 0, led, "whole", 4).startswith("full")  # still a's 2 cpus


def test_a_bad_ledger_dir_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    m = lab.members[0]
    d = _sweep(m, "badledger", 1, 0)
    inv = d / "inventory.yaml"
    inv.write_text(yaml.safe_dump(m.inventory(lab.ws, ledger_dir="tmp/ledger")))
    _own(m, d)
    proc = lab.dssh(m, "run", "badledger.yaml", "-i", "inventory.yaml", cwd=d)
    log = _wait(proc, d, 60)
    assert proc.returncode == 2, log
    assert "inventory.yaml:" in log and "ledger_dir" in log and "absolute path" in log
    # A ledger dir the member may not write to: the host is left out, saying why.
    closed = lab.base / "closed-ledger"
    closed.mkdir(mode=0o755, exist_ok=True)
    inv.write_text(yaml.safe_dump(m.inventory(lab.ws, ledger_dir=str(closed))))
    _own(m, inv)
    proc = lab.dssh(m, "run", "badledger.yaml", "-i", "inventory.yaml", cwd=d)
    log = _wait(proc, d, 60)
    assert proc.returncode != 0, log
    assert f"the ledger dir {closed} is not writable by {m.user}" in log
    assert "chmod 1777" in log


# -- heads sharing the workstations ----------------------------------------------------------

def test_three_heads_share_the_hosts_and_never_oversubscribe(lab: Lab) -> None:
    """Three members' sweeps (8 jobs x 2 cpus x 3 s each) start together on three 4-cpu
    hosts. Sampled every 100 ms: claimed cpus never exceed a host's 4, every live job tree
    has a claim, no host runs more than 2 jobs; every sweep completes; the hosts are
    really shared; `dssh hosts` shows who holds what."""
    jobs, secs = 8, 3
    dirs = []
    for m in lab.members:
        d = _sweep(m, f"share-{m.user[-1]}", jobs, secs)
        _inventory(lab, m, d, cpus=4)
        _own(m, d)
        dirs.append(d)
    sampler = Sampler(lab, {w.name: 4 for w in lab.ws}).start()
    t0 = time.monotonic()
    procs = [lab.dssh(m, "run", f"share-{m.user[-1]}.yaml", "-i", "inventory.yaml",
                      cwd=d) for m, d in zip(lab.members, dirs, strict=True)]
    # While they run, a member looks at the hosts: claims by user and sweep, free room.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(s.claimed_jobs for s in sampler.samples):
        time.sleep(0.1)
    look = lab.dssh(lab.members[0], "hosts", "--json", "-i", "inventory.yaml", cwd=dirs[0],
                    log="hosts.log")
    look.wait(timeout=60)
    logs = [_wait(p, d) for p, d in zip(procs, dirs, strict=True)]
    makespan = time.monotonic() - t0
    sampler.stop()
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log
    for m, d in zip(lab.members, dirs, strict=True):
        rows = _summary(d, f"share-{m.user[-1]}")
        assert [r["status"] for r in rows] == ["COMPLETED"] * jobs
        assert all(r["attempts"] == "1" for r in rows)
    assert sampler.samples, "the sampler saw nothing"
    assert sampler.peak_oversubscription() == 0, max(sampler.samples,
                                                      key=lambda s: s.claimed_cpus)
    assert not sampler.unclaimed(), sampler.unclaimed()[:3]
    assert max(s.running for s in sampler.samples) <= 2
    assert max(s.running for s in sampler.samples) == 2  # and the room was used
    # Shared: some host held jobs of several members in the run (a head claims the room
    # it can use in one go, so members may also take turns on a host); and the look from
    # the side saw the claims of the members that held them.
    served: dict[str, set[str]] = {}
    for s in sampler.samples:
        served.setdefault(s.host, set()).update(s.users)
    assert any(len(users) > 1 for users in served.values()), served
    rows = json.loads((dirs[0] / "hosts.log").read_text())
    seen = {c["user"] for r in rows for c in r["claims"]}
    assert seen and seen <= {m.user for m in lab.members}, rows
    ideal = 3 * jobs * 2 * secs / 12
    print(f"\nthree heads: makespan {makespan:.1f}s, ideal {ideal:.0f}s "
          f"({makespan / ideal:.2f}x), {len(sampler.samples)} samples, heads as "
          f"{'root' if lab.as_root else 'their own users'}")
    assert makespan < ideal * 3, "sharing serialised the heads"  # loose: a shared machine


def test_hosts_lists_claims_by_user_and_sweep(lab: Lab) -> None:
    a, b = lab.members[:2]
    d = _sweep(a, "seen", 2, 20)
    _inventory(lab, a, d, cpus=4)
    _own(a, d)
    proc = lab.dssh(a, "run", "seen.yaml", "-i", "inventory.yaml", cwd=d)
    try:
        _wait_for_claims(lab, 2, 60)  # its two jobs
        db = _sweep(b, "looker", 1, 0)
        _inventory(lab, b, db, cpus=4)
        _own(b, db)
        look = lab.dssh(b, "hosts", "--json", "-i", "inventory.yaml", cwd=db, log="hosts.log")
        look.wait(timeout=60)
        rows = json.loads((db / "hosts.log").read_text())
        claims = [c for r in rows for c in r["claims"]]
        assert len(claims) == 2
        assert {(c["user"], c["sweep"], c["cpus"]) for c in claims} == {
            (a.user, "default/seen", 2)}
        busy = [r for r in rows if r["claims"]]
        assert all(r["free"]["cpus"] == 4 - 2 * len(r["claims"]) for r in rows), rows
        assert busy and all(r["capacity"]["cpus"] == 4 for r in rows)
        look = lab.dssh(b, "hosts", "-i", "inventory.yaml", cwd=db, log="hosts.log")
        look.wait(timeout=60)
        table = (db / "hosts.log").read_text()
        for r in busy:
            n = len(r["claims"])
            line = next(x for x in table.splitlines() if x.startswith(r["host"] + " "))
            assert f"{a.user} default/seen: {n} job{'s' if n > 1 else ''}, {2 * n} cpus" \
                in line, table
            assert f"{4 - 2 * n}/4 cpus" in line, table
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_waiting_heads_take_turns(lab: Lab) -> None:
    """One host with room for one job at a time; a's head starts first with 4 jobs, b's
    a moment later with 4. From b's first start on, the two alternate: a's head, which
    hears of its own jobs' ends first, does not take every turn."""
    a, b = lab.members[:2]
    da, db = _sweep(a, "turns-a", 4, 2), _sweep(b, "turns-b", 4, 2)
    for m, d in ((a, da), (b, db)):
        _one_host_inventory(lab, m, d, cpus=2)
    pa = lab.dssh(a, "run", "turns-a.yaml", "-i", "inventory.yaml", cwd=da)
    _wait_for_claims(lab, 1)
    pb = lab.dssh(b, "run", "turns-b.yaml", "-i", "inventory.yaml", cwd=db)
    la, lb = _wait(pa, da), _wait(pb, db)
    assert pa.returncode == 0, la
    assert pb.returncode == 0, lb
    order = sorted([(t, "a") for t, _ in _starts(da, "turns-a")]
                   + [(t, "b") for t, _ in _starts(db, "turns-b")])
    who = "".join(x for _, x in order)
    first_b = who.index("b")
    assert first_b <= 2, who  # b waited for at most the job running when it came, and one
    tail = who[first_b:]
    # Alternating while both still have jobs queued.
    both = tail[: 2 * min(tail.count("a"), tail.count("b"))]
    assert all(both[i] != both[i + 1] for i in range(len(both) - 1)), who


def test_a_build_waits_for_room_like_a_job(lab: Lab) -> None:
    """b's job holds all 4 cpus of the one host; a's sweep must build first: its build
    claims what one of its jobs takes and starts only once b's job has given the room
    back."""
    a, b = lab.members[:2]
    db = _sweep(b, "hog", 1, 4, cpus=4)
    da = a.home / "sweep-builder"
    da.mkdir()
    (da / "builder.yaml").write_text(yaml.safe_dump({
        "name": "builder", "build": {"command": "date +%s.%N > built-at; sleep 1"},
        "run": {"command": "cat {build}/built-at > {output}/built.txt", "cpus": 2},
        "params": {"i": [1]}}))
    for m, d in ((a, da), (b, db)):
        _one_host_inventory(lab, m, d, cpus=4)
    pb = lab.dssh(b, "run", "hog.yaml", "-i", "inventory.yaml", cwd=db)
    _wait_for_claims(lab, 1)
    pa = lab.dssh(a, "run", "builder.yaml", "-i", "inventory.yaml", cwd=da)
    lb, la = _wait(pb, db), _wait(pa, da)
    assert pb.returncode == 0, lb
    assert pa.returncode == 0, la
    assert "waiting for room to build" in la, la
    hog_end = float((db / "results" / "default" / "hog" / "i-0" / "started.txt").read_text()) + 4
    built = float((da / "results" / "default" / "builder" / "i-1" / "built.txt").read_text())
    assert built >= hog_end - 0.5, (built, hog_end)  # the build began after b's job ended


def test_a_killed_head_does_not_block_the_others(lab: Lab) -> None:
    """a's head is SIGKILLed while it holds claims. Its running jobs go on (nothing is
    lost) and give their room back as they end; b's sweep completes meanwhile. Then a
    resumes, and every job of a ran once."""
    a, b = lab.members[:2]
    da, db = _sweep(a, "killed", 6, 4), _sweep(b, "other", 6, 2)
    for m, d in ((a, da), (b, db)):
        _inventory(lab, m, d, cpus=4)
        _own(m, d)
    pa = lab.dssh(a, "run", "killed.yaml", "-i", "inventory.yaml", cwd=da)
    _wait_for_claims(lab, 4)
    os.killpg(pa.pid, signal.SIGKILL)
    pa.wait()
    t0 = time.monotonic()
    pb = lab.dssh(b, "run", "other.yaml", "-i", "inventory.yaml", cwd=db)
    lb = _wait(pb, db)
    took = time.monotonic() - t0
    assert pb.returncode == 0, lb
    assert [r["status"] for r in _summary(db, "other")] == ["COMPLETED"] * 6
    # a's jobs run at most 4 s more; a start a's head left half-made is reclaimed after 60 s.
    assert took < 4 + 60 + 30, lb
    pa = lab.dssh(a, "run", "killed.yaml", "-i", "inventory.yaml", cwd=da)
    la = _wait(pa, da)
    assert pa.returncode == 0, la
    rows = _summary(da, "killed")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 6
    assert all(r["attempts"] == "1" for r in rows), rows

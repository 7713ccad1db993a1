"""Moving data (issue "Data at scale"): inputs by content once per host, outputs as a tar
stream or over SFTP, selective collection with `dssh pull` / `clean`, and the hostile
cases: symlinks out of the job dir, odd names, a transfer cut by a dying sshd, a full disk.

Everything runs against the real OpenSSH workstations of conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    dssh,
    explain,
    job_json,
    on_terminal,
    start_head,
    summary,
    user_argvs,
    write,
    write_yaml,
)

from distribute_ssh.errors import HostError
from distribute_ssh.hosts.ssh import SSHConnection
from distribute_ssh.model.inventory import Host
from distribute_ssh.transfer import fetch, fetch_small

pytestmark = pytest.mark.sshd

# A job that leaves a hostile mix in outputs/: a big file, many small ones, names with a
# newline, a backslash, non-UTF-8 bytes, a leading dash, spaces and accents; symlinks to
# /etc/passwd, up the tree and to a dir outside; a FIFO. It keeps a copy (links as links)
# in $HOME/expect-<job> for the test to compare with.
HOSTILE = r"""set -e
o={output}
head -c 3000000 /dev/urandom > "$o/big.bin"
mkdir -p "$o/many/a" "$o/many/b"
i=0; while [ $i -lt 150 ]; do head -c $((i * 37)) /dev/urandom > "$o/many/a/f$i.dat"; i=$((i + 1)); done
i=0; while [ $i -lt 150 ]; do echo "small $i" > "$o/many/b/g$i.txt"; i=$((i + 1)); done
printf 'newline\n' > "$o/$(printf 'new\nline.txt')"
printf 'backslash\n' > "$o/back\\slash.txt"
printf 'latin1\n' > "$o/$(printf 'caf\351.txt')"
printf 'dash\n' > "$o/-dash.txt"
printf 'space\n' > "$o/sp ace.txt"
printf 'unicode\n' > "$o/ünï.txt"
: > "$o/empty.txt"
ln -s /etc/passwd "$o/passwd"
ln -s ../../../.. "$o/up"
ln -s /etc "$o/etcdir"
ln -s big.bin "$o/rel_link.bin"
mkfifo "$o/pipe"
rm -rf "$HOME/expect-$DSSH_JOB"; cp -a "$o" "$HOME/expect-$DSSH_JOB"
"""


def _files(root: Path) -> dict[bytes, bytes]:
    """Every regular file below root (by its raw relative name) -> its bytes."""
    out = {}
    for dirpath, _dirs, names in os.walk(os.fsencode(root)):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    out[os.path.relpath(p, os.fsencode(root))] = f.read()
    return out


def _links(root: Path) -> list[bytes]:
    out = []
    for dirpath, dirs, names in os.walk(os.fsencode(root)):
        for n in names + dirs:
            if os.path.islink(os.path.join(dirpath, n)):
                out.append(os.path.relpath(os.path.join(dirpath, n), os.fsencode(root)))
    return out


@pytest.fixture
def lab(tmp_path: Path, fresh_workdirs) -> Path:
    for w in fresh_workdirs:
        for p in w.home.glob("expect-*"):
            shutil.rmtree(p, ignore_errors=True)
    fresh_workdirs.write_inventory(tmp_path / "inventory.yaml", overrides={
        "ws1": {"cpus": 2}, "ws2": {"cpus": 2}, "ws3": {"cpus": 2}})
    return tmp_path


def _host(w) -> Host:
    e = w.inventory_entry()
    return Host(name=w.name, **{k: v for k, v in e.items()
                                if k in ("address", "port", "user", "identity_file",
                                         "known_hosts")})


# -- outputs -------------------------------------------------------------------------------------
def test_hostile_outputs_arrive_intact_and_nothing_escapes(lab: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    sweep = write_yaml(lab / "hostile.yaml", {
        "name": "hostile", "run": {"command": HOSTILE, "cpus": 1}, "params": {"k": [1, 2]}})
    proc = dssh("run", sweep, "-i", lab / "inventory.yaml", "--verify", cwd=lab)
    assert proc.returncode == 0, explain(proc)
    results = lab / "results/default/hostile"
    for r in summary(results):
        host = ws[r["host"]]
        expect = _files(host.home / f"expect-{r['job']}")
        got = _files(results / r["job"])
        for own in (b"stdout.txt", b"stderr.txt", b"job.json"):
            got.pop(own)
        # every regular file, byte for byte, under its own raw name; nothing else
        assert got == expect
        assert len(got) == 300 + 8
        assert b"caf\xe9.txt" in got and b"new\nline.txt" in got and b"back\\slash.txt" in got
        assert _links(results / r["job"]) == []  # no link is recreated, none followed
        assert not (results / r["job"] / "etcdir").exists()
        assert not (results / r["job"] / "passwd").exists()
        info = job_json(results, r["job"])
        skipped = "\n".join(info["skipped"])
        for name in ("passwd", "up", "etcdir", "rel_link.bin"):
            assert f"{name}: a symlink, not collected" in skipped
        assert "pipe: not a regular file" in skipped
        assert len(info["outputs"]) == 308 and info["left_on_host"] == []
        # --verify: the host's SHA-256 of every file, equal to what arrived
        assert len(info["sha256"]) == 308
        for rel, data in list(got.items())[:50]:
            assert info["sha256"][os.fsdecode(rel)] == hashlib.sha256(data).hexdigest()
    # the warnings name the links, and nothing came to rest outside results/
    assert "passwd: a symlink, not collected" in proc.stdout
    assert {p.name for p in lab.iterdir()} - {"home", "locks", "state.db", "state.db-wal",
                                              "state.db-shm"} == {
        "hostile.yaml", "inventory.yaml", "results"}
    assert not (results / ".incoming").exists()


@pytest.mark.parametrize("tar", [True, False], ids=["tar-stream", "sftp"])
async def test_fetch_by_either_way_keeps_names_and_refuses_links(
        tar: bool, lab: Path, fresh_workdirs, tmp_path: Path) -> None:
    """The two ways a host's files come home (the tar stream where GNU tar is there, SFTP
    otherwise), each through a real SSH connection."""
    w = fresh_workdirs["ws1"]
    src = w.home / "fetch-src"
    shutil.rmtree(src, ignore_errors=True)
    script = f"mkdir -p {src}\nDSSH_JOB=x\n" + HOSTILE.replace("{output}", str(src))
    subprocess.run(w.ssh_argv("sh -s"), input=script.encode(), check=True, capture_output=True)
    conn = SSHConnection(_host(w))
    await conn.connect()
    try:
        entries = await conn.walk(str(src))
        files = [e for e in entries if e.kind == "file"]
        links = [e for e in entries if e.kind == "link"]
        assert len(links) == 4 and len(files) == 308
        staging = tmp_path / "staging"
        got = await fetch(conn, str(src), entries, staging, tar=tar, verify=True)
    finally:
        await conn.close()
    assert got.notes == []
    assert _files(staging) == _files(src)
    assert _links(staging) == []
    assert len(got.digests) == 308


async def test_a_batch_of_small_files_comes_in_one_round_trip_with_a_look_after_it(
        lab: Path, fresh_workdirs, tmp_path: Path) -> None:
    """The batched collection's fetch (GNU tar on the host): files with bytes come in the
    archive, empty ones are made on the head with nothing sent, and a script given as
    ``then`` runs on the host after the archive is written, in the same round trip; what
    it prints comes back apart from the archive and its errors."""
    w = fresh_workdirs["ws1"]
    src = w.home / "small-src"
    subprocess.run(w.ssh_argv(
        f"rm -rf {src}; mkdir -p {src}/a/sub {src}/b && printf 'one\\n' > {src}/a/x.txt && "
        f": > {src}/a/sub/empty.txt && : > {src}/b/empty2 && printf 'two' > {src}/b/y"),
        check=True)
    conn = SSHConnection(_host(w))
    await conn.connect()
    runs: list[str] = []
    real_run = conn.run

    async def counted(script: str, **kw):
        runs.append(script)
        return await real_run(script, **kw)
    try:
        entries = [e for e in await conn.walk(str(src)) if e.kind == "file"]
        conn.run = counted  # type: ignore[method-assign]
        assert sorted(e.size for e in entries) == [0, 0, 3, 4]
        staging = tmp_path / "small"
        # The look sees the host as the archive left it: a file made after tar ran.
        got = await fetch_small(conn, str(src), entries, staging,
                                then="touch late; for f in late a/x.txt; do "
                                     "[ -e $f ] && echo has $f; done")
        assert runs and len(runs) == 1, runs
        assert got.then.split("\n")[:2] == ["has late", "has a/x.txt"]
        assert _files(staging) == {b"a/x.txt": b"one\n", b"a/sub/empty.txt": b"",
                                   b"b/empty2": b"", b"b/y": b"two"}
        assert got.got == {"a/x.txt", "a/sub/empty.txt", "b/empty2", "b/y"}
        # Empty files only: nothing to send; with no look asked for, no round trip at all.
        runs.clear()
        empties = [e for e in entries if not e.size]
        got = await fetch_small(conn, str(src), empties, tmp_path / "empties")
        assert runs == [] and _files(tmp_path / "empties") == {
            b"a/sub/empty.txt": b"", b"b/empty2": b""}
        # A look that cannot run where asked (the dir is gone) is an error, not silence.
        with pytest.raises(HostError, match="no answer"):
            await fetch_small(conn, str(src / "gone"), empties, tmp_path / "gone",
                              then="echo -")
    finally:
        await conn.close()


async def test_a_transfer_cut_short_raises_and_leaves_no_whole_looking_file(
        lab: Path, fresh_workdirs, tmp_path: Path) -> None:
    """The connection dies in the middle of a 200 MB file: fetch says so, and the file
    it was writing is short (it lives only in the staging dir the engine throws away)."""
    w = fresh_workdirs["ws2"]
    src = w.home / "cut-src"
    subprocess.run(w.ssh_argv(f"mkdir -p {src}"), check=True)
    big = src / "big.bin"
    subprocess.run(w.ssh_argv(f"head -c 209715200 /dev/urandom > {big}"), check=True)
    conn = SSHConnection(_host(w))
    await conn.connect()
    staging = tmp_path / "staging"

    async def cut() -> None:
        while not (staging / "big.bin").exists() or (staging / "big.bin").stat().st_size < (8 << 20):
            await asyncio.sleep(0.005)
        await asyncio.to_thread(w.stop, sessions=True)

    try:
        entries = await conn.walk(str(src))
        cutter = asyncio.ensure_future(cut())
        with pytest.raises(HostError):
            await fetch(conn, str(src), entries, staging, tar=True)
        await cutter
    finally:
        await conn.close()
        if not w.running:
            w.start()
    assert (staging / "big.bin").stat().st_size < big.stat().st_size


def test_host_lost_mid_collection_collects_whole_after_it_returns(lab: Path,
                                                                  fresh_workdirs) -> None:
    """sshd stops while a job's 300 MB output travels: no file of that job appears under
    its final name until all of it has arrived, after the host is back."""
    ws = fresh_workdirs
    w = ws["ws3"]
    inv = lab / "inventory.yaml"
    sweep = write_yaml(lab / "cut.yaml", {
        "name": "cut", "run": {"command": "head -c 314572800 /dev/urandom > {output}/flow.bin; "
                                          "md5sum < {output}/flow.bin > $HOME/flow.md5",
                               "cpus": 2}})
    head = start_head(lab, "run", sweep, "-i", inv, "--hosts", "ws3")
    final = lab / "results/default/cut/cut/flow.bin"
    try:
        deadline = time.monotonic() + 120
        incoming = lab / "results/default/cut/.incoming"
        while time.monotonic() < deadline:
            part = list(incoming.glob("*/flow.bin")) if incoming.exists() else []
            if part and part[0].stat().st_size > (20 << 20):
                break
            assert head.poll() is None, head.communicate()
            time.sleep(0.01)
        else:
            pytest.fail("the collection never started")
        w.stop(sessions=True)
        time.sleep(3)
        assert not final.exists()  # half a file is never where a whole one belongs
    finally:
        if not w.running:
            w.start()
    out, _ = head.communicate(timeout=240)
    assert head.returncode == 0, out
    want = (w.home / "flow.md5").read_text().split()[0]
    assert hashlib.md5(final.read_bytes()).hexdigest() == want
    assert not (lab / "results/default/cut/.incoming").exists()


def _tars_running(uid: int) -> int:
    """How many dssh collections (``tar -c ... --format=gnu``) run as ``uid`` right now."""
    return sum(1 for argv in user_argvs(uid).values()
               if argv[:1] == [b"tar"] and b"--format=gnu" in argv)


def test_outputs_of_several_jobs_travel_at_once_while_jobs_keep_starting(
        lab: Path, fresh_workdirs) -> None:
    """Up to COLLECTIONS jobs' outputs travel from a host at once, and a slot whose job
    ended takes the next job while that job's outputs are still on their way."""
    import pwd
    import threading

    from distribute_ssh.engine import COLLECTIONS

    w = fresh_workdirs["ws1"]
    if not w.has_own_user:
        pytest.skip("needs root: the workstation's processes are told apart by their user")
    uid = pwd.getpwnam(w.user).pw_uid
    sweep = write_yaml(lab / "many.yaml", {
        "name": "many", "run": {"command": "head -c 200000000 /dev/zero > {output}/f.bin",
                                "cpus": 1}, "params": {"i": list(range(6))}})
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append((time.time(), _tars_running(uid)))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc = dssh("run", sweep, "-i", lab / "inventory.yaml", "--hosts", "ws1", cwd=lab)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0, explain(proc)
    results = lab / "results/default/many"
    for r in summary(results):
        assert (results / r["job"] / "f.bin").stat().st_size == 200000000
    assert max(n for _, n in seen) <= COLLECTIONS
    assert max(n for _, n in seen) >= 1  # the sampler does see collections
    # a job was started (the head's own record, to the millisecond) at a moment when a
    # collection was running on the host
    import sqlite3

    with contextlib.closing(sqlite3.connect(lab / "state.db")) as db:
        starts = [t for (t,) in db.execute("SELECT time FROM events WHERE kind='running'")]
    assert len(starts) == 6
    assert any(n and abs(t - s) < 0.02 for s in starts for t, n in seen), (starts, seen[:5])


# -- selective collection, pull, clean ----------------------------------------------------------
LEAVE = r"""o={output}
echo "r,{i}" > "$o/r.csv"
mkdir -p "$o/flow/sub"
head -c 200000 /dev/urandom > "$o/flow/u.vtk"
head -c 300000 /dev/urandom > "$o/flow/sub/p.vtk"
echo stats > "$o/flow/stats.csv"
echo log > "$o/solver.log"
rm -rf "$HOME/expect-$DSSH_JOB"; cp -a "$o" "$HOME/expect-$DSSH_JOB"
"""


def test_collect_exclude_then_pull_list_and_clean(lab: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    inv = lab / "inventory.yaml"
    sweep = write_yaml(lab / "leave.yaml", {
        "name": "leave", "run": {"command": LEAVE, "cpus": 1}, "params": {"i": [1, 2, 3, 4]},
        "outputs": {"collect": ["*.csv"], "exclude": ["flow/**"]}})
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    results = lab / "results/default/leave"
    rows = summary(results)
    for r in rows:
        d = results / r["job"]
        assert (d / "r.csv").read_text() == f"r,{r['i']}\n"
        assert not (d / "flow").exists() and not (d / "solver.log").exists()
        left = job_json(results, r["job"])["left_on_host"]
        assert sorted((x["path"], x["size"]) for x in left) == [
            ("flow/stats.csv", 6), ("flow/sub/p.vtk", 300000), ("flow/u.vtk", 200000),
            ("solver.log", 4)]

    # --list: what is where and how big, nothing fetched
    lst = dssh("pull", "leave", "--list", "--json", "-i", inv, cwd=lab)
    assert lst.returncode == 0, explain(lst)
    listed = json.loads(lst.stdout)
    assert sorted(j["job"] for j in listed) == sorted(r["job"] for r in rows)
    for j in listed:
        assert j["host"] == next(r["host"] for r in rows if r["job"] == j["job"])
        assert j["bytes"] == 500010 and len(j["files"]) == 4
    text = dssh("pull", "leave", "--list", "-i", inv, cwd=lab)
    assert "16 file(s), 1.9 MiB in all" in text.stdout, explain(text)
    assert not (results / rows[0]["job"] / "flow").exists()

    # filters: the big fields but not p.vtk, of two jobs, into the results
    a, b = rows[0]["job"], rows[1]["job"]
    got = dssh("pull", "leave", a, b, "--include", "*.vtk", "--exclude", "p.vtk", "-i", inv,
               cwd=lab)
    assert got.returncode == 0, explain(got)
    assert "pulled 2 file(s)" in got.stdout
    for r in rows:
        d = results / r["job"]
        expect = _files(ws[r["host"]].home / f"expect-{r['job']}")
        if r["job"] in (a, b):
            assert (d / "flow/u.vtk").read_bytes() == expect[b"flow/u.vtk"]
            assert not (d / "flow/sub/p.vtk").exists()
        else:
            assert not (d / "flow").exists()
        assert (d / "r.csv").exists()  # what was collected stays

    # --to DIR: everything left, by job; the host still has it until `clean`
    to = lab / "elsewhere"
    got = dssh("pull", sweep, "--to", to, "--verify", "-i", inv, cwd=lab)
    assert got.returncode == 0, explain(got)
    for r in rows:
        expect = _files(ws[r["host"]].home / f"expect-{r['job']}")
        assert _files(to / r["job"]) == {k: v for k, v in expect.items() if k != b"r.csv"}
    assert not (to / ".incoming").exists()

    # clean: the job dirs go down to the mark other heads need; nothing left to pull
    cl = dssh("clean", "leave", "-i", inv, cwd=lab)
    assert cl.returncode == 0, explain(cl)
    assert "removed 4 job dir(s)" in cl.stdout
    for w in ws:
        for d in (w.workdir / "jobs/default/leave").glob("*/*"):
            assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == [
                ".dssh", ".dssh/claim", ".dssh/collected"], d
    after = dssh("pull", "leave", "--list", "-i", inv, cwd=lab)
    assert "0 file(s), 0 B in all" in after.stdout, explain(after)


def test_pull_usage_errors_and_a_full_disk(lab: Path, fresh_workdirs) -> None:
    inv = lab / "inventory.yaml"
    sweep = write_yaml(lab / "keep.yaml", {
        "name": "keep", "run": {"command": "head -c 4000000 /dev/urandom > {output}/big.dat; "
                                           "echo ok > {output}/ok.csv", "cpus": 1},
        "outputs": {"collect": ["*.csv"]}})
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    bad = dssh("pull", "keep", "nosuchjob", "-i", inv, cwd=lab)
    assert bad.returncode == 2
    assert "no job nosuchjob in sweep default/keep (its jobs: keep)" in bad.stderr
    bad = dssh("pull", "nosweep", "-i", inv, cwd=lab)
    assert bad.returncode == 2 and "no sweep 'nosweep'" in bad.stderr
    mnt = lab / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        full = dssh("pull", "keep", "--to", mnt, "-i", inv, cwd=lab)
        assert full.returncode == 1, explain(full)
        assert "the files need 3.8 MiB and only" in full.stderr and "are free there" in full.stderr
        assert list(mnt.iterdir()) == []  # checked before anything was fetched
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- inputs -----------------------------------------------------------------------------------
def test_inputs_cross_once_per_host_and_jobs_cannot_write_into_the_store(
        lab: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    inv = lab / "inventory.yaml"
    mesh = lab / "mesh.bin"
    mesh.write_bytes(os.urandom(3 << 20))
    write(lab / "case/a.cfg", "a\n")
    write(lab / "case/sub/b.cfg", "b\n")
    want = hashlib.md5(mesh.read_bytes()).hexdigest()
    job = ("md5sum < input/mesh.bin | cut -d' ' -f1 > {output}/sum; "
           "stat -c %h input/mesh.bin > {output}/links; cat input/case/sub/b.cfg > {output}/b; "
           "if echo x >> input/mesh.bin 2>/dev/null; then echo wrote; else echo refused; fi "
           "> {output}/write; rm input/mesh.bin && echo removed > {output}/rm")
    sweep = write_yaml(lab / "mesh.yaml", {
        "name": "mesh", "run": {"command": job, "cpus": 1, "files": ["mesh.bin", "case/"]},
        "params": {"i": list(range(12))}})
    proc = dssh("run", sweep, "-i", inv, cwd=lab)
    assert proc.returncode == 0, explain(proc)
    results = lab / "results/default/mesh"
    rows = summary(results)
    hosts = {r["host"] for r in rows}
    assert len(hosts) >= 2
    root = ws["ws1"].has_own_user and os.geteuid() == 0
    for r in rows:
        d = results / r["job"]
        assert (d / "sum").read_text().strip() == want
        assert (d / "b").read_text() == "b\n" and (d / "rm").read_text() == "removed\n"
        if root:  # the workstation users are not root: the store is theirs, read-only
            assert (d / "write").read_text() == "refused\n"
            assert int((d / "links").read_text()) >= 2  # a hard link to the store
    # one upload of each file per host, said per host; the store holds one copy, intact
    for h in hosts:
        assert f"{h}: sent 3 input file(s), 3.0 MiB; 0 already in its store" in proc.stdout
        store = ws[h].workdir / "store"
        entries = [p for p in store.iterdir() if not p.name.startswith(".")]
        assert len(entries) == 3
        digest = hashlib.sha256(mesh.read_bytes()).hexdigest()
        assert hashlib.sha256((store / digest).read_bytes()).hexdigest() == digest
    # another sweep with the same mesh: nothing crosses again
    again = write_yaml(lab / "mesh2.yaml", {
        "name": "mesh2", "run": {"command": "md5sum < input/mesh.bin > {output}/sum",
                                 "cpus": 1, "files": ["mesh.bin"]},
        "params": {"i": [1, 2, 3, 4, 5, 6]}})
    proc = dssh("run", again, "-i", inv, "--hosts", ",".join(sorted(hosts)), cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert "sent 1 input file" not in proc.stdout
    for h in {r["host"] for r in summary(lab / "results/default/mesh2")}:
        assert f"{h}: sent 0 input file(s), 0.0 MiB; 1 already in its store" in proc.stdout


def test_a_damaged_store_entry_is_sent_again(lab: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    inv = lab / "inventory.yaml"
    data = lab / "data.txt"
    data.write_text("the real data\n")
    sweep = write_yaml(lab / "st.yaml", {
        "name": "st", "run": {"command": "cat input/data.txt > {output}/copy", "cpus": 1,
                              "files": ["data.txt"]}})
    proc = dssh("run", sweep, "-i", inv, "--hosts", "ws1", cwd=lab)
    assert proc.returncode == 0, explain(proc)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    entry = ws["ws1"].workdir / "store" / digest
    entry.chmod(0o644)
    entry.write_text("truncated")  # someone (root, a disk) damaged it
    again = write_yaml(lab / "st2.yaml", {
        "name": "st2", "run": {"command": "cat input/data.txt > {output}/copy", "cpus": 1,
                               "files": ["data.txt"]}})
    proc = dssh("run", again, "-i", inv, "--hosts", "ws1", cwd=lab)
    assert proc.returncode == 0, explain(proc)
    assert (lab / "results/default/st2/st2/copy").read_text() == "the real data\n"
    assert "ws1: sent 1 input file(s)" in proc.stdout


# -- progress ---------------------------------------------------------------------------------
def test_bytes_moved_in_the_live_display_and_a_progress_bar_for_pull(tmp_path: Path) -> None:
    """On this machine as its own host (no inventory): the live display counts the bytes
    that came home; `dssh pull` on a terminal draws a bar with bytes and rate."""
    sweep = write_yaml(tmp_path / "p.yaml", {
        "name": "bar", "run": {"command": "head -c 30000000 /dev/urandom > {output}/field.bin; "
                                          "echo 1 > {output}/r.csv", "cpus": 1},
        "params": {"i": [1, 2]}, "outputs": {"collect": ["*.csv"], "exclude": []}})
    rc, text = on_terminal(tmp_path, ["run", str(sweep)])
    assert rc == 0, text
    assert "moved " in text and " B" in text  # r.csv files: a few bytes
    rc, text = on_terminal(tmp_path, ["pull", str(sweep)])
    assert rc == 0, text
    assert "pull: 100%" in text and "57.2M/57.2M" in text, text
    assert "pulled 2 file(s), 57.2 MiB" in text
    for i in (1, 2):
        assert (tmp_path / f"results/default/bar/i-{i}/field.bin").stat().st_size == 30000000


def test_clean_removes_builds_nothing_else_uses_and_pull_names_a_missing_host(
        lab: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    inv = lab / "inventory.yaml"
    write(lab / "build.sh", "echo built > built.txt\n")
    doc = {"build": {"files": ["build.sh"], "command": "sh build.sh"},
           "run": {"command": "cat {build}/built.txt > {output}/b.txt; echo x > {output}/x.dat",
                   "cpus": 1},
           "outputs": {"collect": ["*.txt"]}}
    for name in ("one", "two"):  # the same build: one build dir per host, shared
        proc = dssh("run", write_yaml(lab / f"{name}.yaml", {"name": name, **doc}), "-i", inv,
                    "--hosts", "ws1", cwd=lab)
        assert proc.returncode == 0, explain(proc)
    builds = ws["ws1"].workdir / "builds"
    assert len(list(builds.iterdir())) == 1
    cl = dssh("clean", "one", "-i", inv, cwd=lab)
    assert cl.returncode == 0, explain(cl)
    assert "removed 1 job dir(s) and 0 build(s)" in cl.stdout  # "two" still uses it
    assert len(list(builds.iterdir())) == 1
    # a sweep of its own build, alone: its build goes with it
    solo = dssh("run", write_yaml(lab / "solo.yaml", {
        "name": "solo", **doc, "build": {"files": ["build.sh"], "command": "sh build.sh; :"}}),
        "-i", inv, "--hosts", "ws1", cwd=lab)
    assert solo.returncode == 0, explain(solo)
    assert len(list(builds.iterdir())) == 2
    cl = dssh("clean", "solo", "-i", inv, cwd=lab)
    assert cl.returncode == 0 and "removed 1 job dir(s) and 1 build(s)" in cl.stdout, explain(cl)
    assert len(list(builds.iterdir())) == 1
    # the jobs of "two" ran on ws1: an inventory without it cannot reach what they left
    import yaml

    data = yaml.safe_load(inv.read_text())
    del data["hosts"]["ws1"]
    other = lab / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    bad = dssh("pull", "two", "--list", "-i", other, cwd=lab)
    assert bad.returncode == 2, explain(bad)
    assert "jobs ran on ws1, which is not in the inventory" in bad.stderr

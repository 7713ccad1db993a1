"""The shared ledger is the one place on a host other users write (SPEC §6a): what they
put there cannot stall a head, write through to the head user's files, or make dssh act on
their processes (issue "hostile input", item 3). On real OpenSSH workstations: ws2's user
is the hostile local user of ws1, ws3's user a bystander. These machines run with
fs.protected_symlinks off, so a symlink planted in the sticky ledger dir is followed by
whoever writes through its name."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from helpers import dssh, explain, summary, write


def as_user(user: str, *argv: str, stdin: str | None = None) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True,
                   input=stdin, text=True, cwd="/")


def test_hostile_ledger_entries_neither_stall_nor_reach_anyone(tmp_path: Path,
                                                              fresh_workdirs) -> None:
    ws = fresh_workdirs
    w, evil, bystander = ws.hosts[0], ws.hosts[1], ws.hosts[2]
    if os.geteuid() != 0 or not all(x.has_own_user for x in ws.hosts):
        pytest.skip("needs the workstations' own users (as root)")
    ledger = Path(w.ledger_dir)
    ledger.mkdir(parents=True, exist_ok=True)
    ledger.chmod(0o1777)
    victim = w.home / "notes.txt"
    victim.write_text("the user's own file\n")
    os.chown(victim, os.stat(w.home).st_uid, os.stat(w.home).st_gid)
    # the bystander's process, and a claim (planted by the hostile user) naming it as live
    sleeper = subprocess.Popen(["runuser", "-u", bystander.user, "--", "sleep", "120"])
    try:
        # runuser's own child, not any other sleep of that user (an earlier test's job
        # may still be on its way out)
        child = 0
        for _ in range(100):
            found = subprocess.run(["pgrep", "-P", str(sleeper.pid), "-x", "sleep"],
                                   capture_output=True, text=True).stdout.split()
            if found:
                child = int(found[0])
                break
            time.sleep(0.05)
        assert child, "the bystander's sleep did not start"
        pstart = Path(f"/proc/{child}/stat").read_text().rsplit(") ", 1)[1].split()[19]
        claim = (f"user {evil.user}\nhead x\nmachine m\nsweep s\njob j\nkind job\ncpus 0\n"
                 f"gpus \nsince 1\ncap 64 - -\ndir /nonexistent\nboot x\npid {child}\n"
                 f"pstart {pstart}\n")
        as_user(evil.user, "sh", "-c", 'cat > "$1"', "sh", str(ledger / f"c-{evil.user}-live"),
                stdin=claim)
        as_user(evil.user, "mkfifo", str(ledger / f"c-{evil.user}-fifo"))
        as_user(evil.user, "ln", "-s", "/dev/zero", str(ledger / f"c-{evil.user}-zero"))
        as_user(evil.user, "mkfifo", str(ledger / f"w-{evil.user}-fifo"))
        # the claim name the head will use for job 'b', pointing at the head user's file
        run_dir = f"{w.workdir}/jobs/default/hostile/b/1"
        name = f"c-{w.user}-{hashlib.sha256(run_dir.encode()).hexdigest()[:16]}"
        as_user(evil.user, "ln", "-s", str(victim), str(ledger / name))

        ws.write_inventory(tmp_path / "inventory.yaml", overrides={w.name: {"cpus": 2}})
        write(tmp_path / "sweep.yaml", """
            name: hostile
            run: {command: "echo ran > {output}/r.txt", cpus: 1}
            jobs: [{name: a}, {name: b}]
            """)
        r = dssh("run", "sweep.yaml", "-i", "inventory.yaml", "--hosts", w.name, cwd=tmp_path,
                 timeout=120)
        # 'a' ran; 'b' could not claim its room through the planted name, and says so
        rows = {row["job"]: row for row in summary(tmp_path / "results/default/hostile")}
        assert rows["a"]["status"] == "COMPLETED", explain(r)
        assert rows["b"]["status"] == "FAILED" and r.returncode == 1, explain(r)
        st = dssh("status", "hostile", "--json", cwd=tmp_path)
        reason = {j["job"]: j["reason"] for j in json.loads(st.stdout)["jobs"]}
        assert "cannot write" in reason["b"], reason
        assert victim.read_text() == "the user's own file\n"  # never written through
        assert sleeper.poll() is None and Path(f"/proc/{child}").exists()  # never signalled
        assert (ledger / f"c-{evil.user}-live").exists()  # not anyone else's to remove
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["pkill", "-u", bystander.user, "-x", "sleep"], capture_output=True)

"""The corpus' hostile values and outputs over real SSH (issue 10: "run against real sshd
workstations with a second local user on each"). The rest of the corpus runs on local
hosts; this module takes its biggest batches to an OpenSSH workstation (ws1, its own
local user), with the other workstations' users as the other local users of the machine.

- ``test_values_arrive_as_data_over_ssh``: every hostile value of values.yaml, swept and as
  an explicit job, in every quoting context of test_injection.py, as sweep env and host env,
  reaches the job byte for byte through SSH; no canary fires; nothing changes in ws1's home
  outside its workdir, nor in the other users' homes, nor outside the arena's own trees.
- ``test_hostile_outputs_over_ssh``: a job on ws1 leaves symlinks to another user's home and
  to /etc, a FIFO, a non-UTF-8 name and a name with a newline, and, in a second job,
  replaces its outputs/ with a symlink to a directory of ws1's user outside the workdir:
  links and the FIFO are not collected (noted in job.json), odd names arrive intact, and
  nothing is collected from, or deleted in, the linked directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from advkit import Arena, escaped, explain, run_allowed, snapshot
from test_injection import CONTEXTS, VALUES, injection_command


def homes(ws: Any, exclude_workdir: Path) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    for w in ws.hosts:
        for k, v in snapshot(w.home).items():
            full = str(w.home / k)
            if full == str(exclude_workdir) or full.startswith(str(exclude_workdir) + "/"):
                continue
            snap[full] = v
    return snap


def remote_inventory(a: Arena, w: Any, **extra: Any) -> Path:
    import yaml

    p = a.root / "inventory.yaml"
    p.write_text(yaml.safe_dump({"hosts": {w.name: w.inventory_entry(cpus=4, **extra)}},
                                sort_keys=False, allow_unicode=True, width=1 << 20))
    return p


def test_values_arrive_as_data_over_ssh(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w = ws.hosts[0]
    a = Arena(tmp_path)
    try:
        vals = [a.subst(v["value"], v["id"]) for v in VALUES]
        n = len(vals)
        path = a.write_sweep({
            "name": "inject",
            "run": {"command": injection_command(), "cpus": 1,
                    "env": {f"HOSTILE_{i}": v for i, v in enumerate(vals)}},
            "params": {"i": list(range(n)), "p": vals}, "zip": [["i", "p"]],
            "job_name": "v{i}",
            "jobs": [{"name": f"x{i}", "params": {"i": i, "p": v}} for i, v in enumerate(vals)],
        })
        remote_inventory(a, w, env={f"HOST_HOSTILE_{i}": v for i, v in enumerate(vals)})
        before, hb = snapshot(a.root), homes(ws, w.workdir)
        proc = a.run(path, timeout=240)
        after, ha = snapshot(a.root), homes(ws, w.workdir)
        assert proc.returncode == 0, explain(proc)
        results = a.sweep_dir / "results" / "default" / "inject"
        for i, value in enumerate(vals):
            for job in (f"v{i}", f"x{i}"):
                for name, (_frag, expect) in CONTEXTS.items():
                    got = (results / job / name).read_bytes()
                    assert got == expect(value).encode(), (VALUES[i]["id"], job, name, got)
        assert a.fired() == []
        assert escaped(before, after, run_allowed("sweep/results/default/inject")) == []
        assert {k for k in set(hb) | set(ha) if hb.get(k) != ha.get(k)} == set()
    finally:
        a.clean_canaries()


def test_hostile_outputs_over_ssh(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    w, other = ws.hosts[0], ws.hosts[1]
    if not w.has_own_user:
        pytest.skip("needs the workstations' own users (as root)")
    a = Arena(tmp_path)
    scratch = w.home / "scratch"
    scratch.mkdir(exist_ok=True)
    (scratch / "keep.txt").write_text("ws1's user's own file\n")
    os.chown(scratch, os.stat(w.home).st_uid, os.stat(w.home).st_gid)
    os.chown(scratch / "keep.txt", os.stat(w.home).st_uid, os.stat(w.home).st_gid)
    path = a.write_sweep({
        "name": "outs",
        "run": {"command": "sh ./input/job.sh {kind}", "cpus": 1, "files": ["job.sh"]},
        "params": {"kind": ["odd", "linked"]},
        "outputs": {"collect": ["**"]},
    })
    (a.sweep_dir / "job.sh").write_text(
        'cd outputs\n'
        'if [ "$1" = odd ]; then\n'
        f'  ln -s {other.home}/secret.txt other-user.txt\n'
        '  ln -s /etc/hostname etc.txt\n'
        '  mkfifo fifo\n'
        "  printf x > \"$(printf 'bad\\377name')\"\n"
        "  printf y > 'new\nline'\n"
        '  echo fine > fine.txt\n'
        'else\n'
        f'  cd .. && rm -rf outputs && ln -s {scratch} outputs\n'
        'fi\n')
    remote_inventory(a, w)
    before_homes = homes(ws, w.workdir)
    proc = a.run(path, timeout=120)
    assert proc.returncode == 0, explain(proc)
    res = a.sweep_dir / "results" / "default" / "outs"
    odd = res / "kind-odd"
    got = sorted(os.listdir(os.fsencode(odd)))
    assert got == sorted([b"bad\xffname", b"fine.txt", b"job.json", b"new\nline",
                          b"stderr.txt", b"stdout.txt"])
    skipped = json.loads((odd / "job.json").read_text())["skipped"]
    assert any(s.startswith("other-user.txt: a symlink") for s in skipped)
    assert any(s.startswith("etc.txt: a symlink") for s in skipped)
    assert any(s.startswith("fifo: not a regular file") for s in skipped)
    linked = res / "kind-linked"
    assert sorted(os.listdir(linked)) == ["job.json", "stderr.txt", "stdout.txt"]
    assert (scratch / "keep.txt").read_text() == "ws1's user's own file\n"
    after_homes = homes(ws, w.workdir)
    changed = {k for k in set(before_homes) | set(after_homes)
               if before_homes.get(k) != after_homes.get(k)}
    assert changed == set()

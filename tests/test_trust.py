"""Host keys (SPEC §2, issue "hostile input"): first contact with ``dssh hosts --trust``,
and unknown, changed and revoked keys refused, against real OpenSSH workstations."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import dssh, explain, write_yaml


def inventory(ws, path: Path, kh: Path) -> Path:
    """The workstations, checked against ``kh`` (a per-inventory known_hosts file)."""
    return write_yaml(path, {"defaults": {"known_hosts": str(kh)},
                             "hosts": {w.name: w.inventory_entry(without=("known_hosts",))
                                       for w in ws.hosts}})


def fingerprint(w) -> str:
    """What OpenSSH itself says of the workstation's host key."""
    out = subprocess.run(["ssh-keygen", "-lf", f"{w.host_key_file}.pub"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def test_trust_pins_every_new_key_at_once_on_one_confirmation(tmp_path: Path,
                                                             fresh_workdirs) -> None:
    ws = fresh_workdirs
    kh = tmp_path / "lab_known_hosts"
    kh.write_text("")
    inv = inventory(ws, tmp_path / "inventory.yaml", kh)
    sweep = write_yaml(tmp_path / "s.yaml", {"name": "keys", "run": {"command": "true"}})
    r = dssh("run", sweep, "-i", inv, cwd=tmp_path)
    assert r.returncode == 4 and "unknown host key" in r.stderr, explain(r)

    # without a terminal, nothing is pinned without --yes: the fingerprints are shown
    r = dssh("hosts", "-i", inv, "--trust", cwd=tmp_path)
    assert r.returncode == 2, explain(r)
    assert "dssh hosts --trust --yes" in r.stderr and kh.read_text() == ""
    for w in ws.hosts:
        assert fingerprint(w) in r.stdout
    assert r.stdout.count(" new") == len(ws.hosts)

    r = dssh("hosts", "-i", inv, "--trust", "--yes", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    assert f"pinned {len(ws.hosts)} host key(s) to {kh}" in r.stdout
    lines = kh.read_text().splitlines()
    assert sorted(lines) == sorted(w.host_pub_key_line for w in ws.hosts)
    r = dssh("run", sweep, "-i", inv, cwd=tmp_path)
    assert r.returncode == 0, explain(r)

    r = dssh("hosts", "-i", inv, "--trust", "--json", cwd=tmp_path)
    assert r.returncode == 0 and {row["status"] for row in json.loads(r.stdout)} == {"known"}
    assert kh.read_text().splitlines() == lines  # nothing pinned twice


def test_a_changed_or_revoked_key_is_never_pinned_nor_used(tmp_path: Path,
                                                          fresh_workdirs) -> None:
    ws = fresh_workdirs
    w1, w2 = ws.hosts[0], ws.hosts[1]
    kh = tmp_path / "lab_known_hosts"
    # ws1's address and port recorded with ws2's key: a changed key; ws2's key revoked
    addr1 = w1.host_pub_key_line.split()[0]
    key2 = " ".join(w2.host_pub_key_line.split()[1:])
    kh.write_text(f"{addr1} {key2}\n@revoked {w2.host_pub_key_line}\n")
    before = kh.read_text()
    inv = inventory(ws, tmp_path / "inventory.yaml", kh)
    r = dssh("hosts", "-i", inv, "--trust", "--yes", "--json", cwd=tmp_path)
    assert r.returncode == 1, explain(r)
    status = {row["host"]: row["status"] for row in json.loads(r.stdout)}
    assert status == {"ws1": "CHANGED", "ws2": "REVOKED", "ws3": "new"}
    assert "the key differs from the one recorded" in r.stderr
    assert "ssh-keygen -R" in r.stderr and "revoked" in r.stderr
    assert kh.read_text().startswith(before)  # ws3 added, nothing else touched
    assert kh.read_text()[len(before):] == ws.hosts[2].host_pub_key_line + "\n"

    sweep = write_yaml(tmp_path / "s.yaml", {"name": "keys", "run": {"command": "true"}})
    for name, words in (("ws1", "has CHANGED"), ("ws2", "is REVOKED")):
        r = dssh("run", sweep, "-i", inv, "--hosts", name, "--accept-new-hostkeys",
                 cwd=tmp_path)
        assert r.returncode == 4, explain(r)
        assert words in r.stderr
    assert kh.read_text().count("\n") == 3  # accept-new never overrides a recorded key

"""An Ansible YAML inventory, as a lab admin already has it, used as dssh's inventory; its
groups select hosts (``--hosts GROUP``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import dssh, explain, summary, write, write_yaml

from distribute_ssh.errors import ConfigError
from distribute_ssh.model.inventory import parse_inventory

ADMIN = """
all:
  vars:
    ansible_user: alice
    dssh_workdir: ~/.dssh-lab
    site_motd: "not dssh's"
  hosts:
    head:
      ansible_connection: local
  children:
    workstations:
      vars:
        dssh_capabilities: [python3]
      hosts:
        lab1: {ansible_host: 10.0.0.11, ansible_port: 2222}
        lab2:
          ansible_host: 10.0.0.12
          dssh_cpus: 8
          ansible_user: bob
      children:
        gpu_boxes:
          vars:
            dssh_capabilities: [python3, gpu]
          hosts:
            lab3:
              ansible_host: 10.0.0.13
              ansible_ssh_private_key_file: {key}
              dssh_gpus: [0, 1]
"""


def test_variables_groups_and_inheritance(tmp_path: Path) -> None:
    key = tmp_path / "id_lab"
    key.write_text("")
    inv = parse_inventory(ADMIN.replace("{key}", str(key)), str(tmp_path / "hosts.yml"))
    h = inv.hosts
    assert h["head"].connection == "local"
    assert (h["lab1"].address, h["lab1"].port, h["lab1"].user) == ("10.0.0.11", 2222, "alice")
    assert (h["lab2"].user, h["lab2"].cpus) == ("bob", 8)  # the host's own var wins
    assert h["lab3"].capabilities == {"python3", "gpu"}  # the inner group's vars win
    assert h["lab3"].gpus == (0, 1) and h["lab3"].identity_file == str(key)
    assert all(x.workdir == "~/.dssh-lab" for x in h.values())
    assert inv.groups["gpu_boxes"] == ["lab3"]
    assert inv.groups["workstations"] == ["lab1", "lab2", "lab3"]
    assert list(inv.select(["gpu_boxes", "lab1"]).hosts) == ["lab3", "lab1"]
    with pytest.raises(ConfigError) as e:
        inv.select(["gpu-boxes"])
    assert "groups: all, workstations, gpu_boxes" in str(e.value)


def test_a_bad_dssh_variable_names_the_variable_and_its_line(tmp_path: Path) -> None:
    write(tmp_path / "hosts.yml", ADMIN.replace("dssh_cpus: 8", "dssh_cpus: 0")
          .replace("{key}", "/nonexistent"))
    write(tmp_path / "sweep.yaml", "name: s\nrun: {command: echo}\n")
    r = dssh("run", "sweep.yaml", "-i", "hosts.yml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 2, explain(r)
    assert "hosts.yml:17: all.children.workstations.hosts.lab2.dssh_cpus: must be more " \
           "than 0" in r.stderr, r.stderr
    write(tmp_path / "hosts.yml", ADMIN.replace("{key}", "/nonexistent"))
    r = dssh("run", "sweep.yaml", "-i", "hosts.yml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 2, explain(r)
    assert "hosts.yml:26: all.children.workstations.children.gpu_boxes.hosts.lab3." \
           "ansible_ssh_private_key_file: '/nonexistent' does not exist" in r.stderr, r.stderr


def test_a_sweep_runs_on_an_ansible_group(tmp_path: Path, fresh_workdirs) -> None:
    ws = fresh_workdirs
    hosts = {w.name: {"ansible_host": w.address, "ansible_port": w.port,
                      "ansible_user": w.user, "dssh_workdir": str(w.workdir),
                      "dssh_ledger_dir": w.ledger_dir} for w in ws}
    write_yaml(tmp_path / "hosts.yml", {"all": {
        "vars": {"ansible_ssh_private_key_file": str(ws.identity_file),
                 "dssh_known_hosts": str(ws.known_hosts), "dssh_cpus": 2},
        "children": {
            "pair": {"hosts": {n: hosts[n] for n in ("ws1", "ws2")}},
            "rest": {"hosts": {"ws3": hosts["ws3"]}}}}})
    write(tmp_path / "sweep.yaml", """
        name: ans
        run: {command: "echo {i} > {output}/i.txt", cpus: 1}
        params: {i: [1, 2, 3, 4, 5, 6]}
        """)
    r = dssh("run", "sweep.yaml", "-i", "hosts.yml", "--hosts", "pair", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    rows = summary(tmp_path / "results" / "default" / "ans")
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert {row["host"] for row in rows} <= {"ws1", "ws2"}

"""Ansible YAML inventories (``all``/``hosts``/``children``/``vars``) as dssh inventories.

A lab admin's inventory works as it is: ``ansible_host``, ``ansible_port``,
``ansible_user``, ``ansible_ssh_private_key_file`` and ``ansible_connection: local`` say
how to reach a host; dssh's own settings are variables named ``dssh_<key>``
(``dssh_cpus``, ``dssh_gpus``, ``dssh_capabilities``, ...). Variables are inherited as
Ansible does it: ``all``'s vars, then each group's from the outside in, then the host's
own. Every group a host belongs to (``all`` included) can select it: ``--hosts gpu_boxes``.
"""

from __future__ import annotations

import re
from typing import Any

GROUP_KEYS = {"hosts", "children", "vars"}
ANSIBLE_VARS = {"ansible_host": "address", "ansible_port": "port", "ansible_user": "user",
                "ansible_ssh_private_key_file": "identity_file"}


def is_ansible(data: Any) -> bool:
    if not isinstance(data, dict) or not data or {"hosts", "defaults"} & set(data):
        return False
    return all(v is None or (isinstance(v, dict) and set(v) <= GROUP_KEYS)
               for v in data.values())


def convert(data: dict) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, tuple]]:
    """The dssh inventory document, the groups (name -> hosts), and for each dssh key of
    each host the path of the Ansible variable it came from (for messages)."""
    host_vars: dict[str, dict[str, Any]] = {}
    origin: dict[str, dict[str, tuple]] = {}
    groups: dict[str, list[str]] = {}

    def walk(name: str, node: Any, inherited: dict[str, tuple[Any, tuple]],
             path: tuple, chain: list[str]) -> None:
        node = node or {}
        here = dict(inherited)
        for k, v in (node.get("vars") or {}).items():
            here[k] = (v, path + ("vars", k))
        for h, hv in (node.get("hosts") or {}).items():
            h = str(h)
            for g in chain + [name]:
                if h not in groups.setdefault(g, []):
                    groups[g].append(h)
            merged = host_vars.setdefault(h, {})
            src = origin.setdefault(h, {})
            for k, (v, p) in here.items():
                merged[k], src[k] = v, p
            for k, v in (hv or {}).items():
                merged[k], src[k] = v, path + ("hosts", h, k)
        for child, cnode in (node.get("children") or {}).items():
            groups.setdefault(str(child), [])
            walk(str(child), cnode, here, path + ("children", child), chain + [name])

    for top, node in data.items():
        walk(str(top), node, {}, (top,), [])
    doc: dict[str, Any] = {"hosts": {}}
    paths: dict[str, tuple] = {}
    for h, vs in host_vars.items():
        entry: dict[str, Any] = {}
        for k, v in vs.items():
            if k in ANSIBLE_VARS:
                key = ANSIBLE_VARS[k]
            elif k == "ansible_connection" and v == "local":
                key, v = "connection", "local"
            elif k.startswith("dssh_"):
                key = k[5:]
            else:
                continue  # the admin's other variables are not dssh's business
            entry[key] = v
            paths[f"hosts.{h}.{key}"] = origin[h][k]
        doc["hosts"][h] = entry
    return doc, groups, paths


def rewrite_message(msg: str, paths: dict[str, tuple], where: Any) -> str:
    """Say a dssh key's error with the Ansible variable and line it came from."""
    def repl(m: re.Match) -> str:
        key = m.group(2)
        p = paths.get(key)
        if p is None:
            return m.group(0)
        return f"{where(p)}: {'.'.join(map(str, p))}"

    return re.sub(r"^(\S+?:\d+): (hosts\.[^:\s]+)", repl, msg, flags=re.M)

"""``dssh hosts --trust``: first contact with a lab's workstations, all at once.

Every SSH host's key is fetched concurrently (no login), compared with the known_hosts
file dssh would check it against, and shown with its SHA-256 fingerprint; on one
confirmation the new keys are pinned to that file (``~/.ssh/known_hosts``, or the file the
inventory names in ``known_hosts``). A changed or revoked key is never pinned: it is
reported, as OpenSSH does, with what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from .hosts.quick_import import asyncssh
from .hosts.ssh import _ssh_config_paths, revoked_keys
from .model.inventory import Host, Inventory


def _known_files(host: Host, config_known: Any) -> list[Path]:
    if host.known_hosts:
        return [Path(host.known_hosts).expanduser()]
    if isinstance(config_known, list | tuple) and config_known:
        return [Path(p).expanduser() for p in config_known]
    return [Path("~/.ssh/known_hosts").expanduser()]


def _known_text(files: list[Path]) -> str:
    text = ""
    for f in files:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            text += f.read_text() + "\n"
    return text


async def scan(host: Host) -> dict[str, Any]:
    """One host's key and what the known_hosts file says of it: ``status`` is known, new,
    CHANGED, REVOKED or unreachable."""
    target = host.address or host.name
    row: dict[str, Any] = {"host": host.name, "status": "unreachable", "key_type": "",
                           "fingerprint": "", "file": "", "line": "", "error": ""}
    try:
        opts = asyncssh.SSHClientConnectionOptions(
            config=_ssh_config_paths(), host=target, port=host.port or (),
            username=host.user or ())
    except (OSError, asyncssh.Error, ValueError) as e:
        row["error"] = f"cannot read ~/.ssh/config for this host: {e}"
        return row
    if opts.known_hosts is None:
        row["error"] = ("~/.ssh/config sets 'UserKnownHostsFile none'; dssh always verifies "
                        "host keys: set known_hosts for this host in the inventory")
        return row
    name = opts.host_key_alias or opts.host
    port = opts.port or 22
    files = _known_files(host, opts.known_hosts)
    row["file"] = str(files[0])
    row["address"] = name if port == 22 else f"{name}:{port}"
    try:
        async with asyncio.timeout(host.connect_timeout + 5):
            key = await asyncssh.get_server_host_key(
                target, host.port or (), config=_ssh_config_paths())
    except (OSError, asyncssh.Error, TimeoutError) as e:
        row["error"] = str(e) or type(e).__name__
        return row
    if key is None:
        row["error"] = "the server presented no host key"
        return row
    row["key_type"] = key.get_algorithm()
    row["fingerprint"] = key.get_fingerprint("sha256")
    kh_name = name if port == 22 else f"[{name}]:{port}"
    row["line"] = f"{kh_name} {key.export_public_key().decode().strip()}"
    text = _known_text(files)
    p = port if port != 22 else None
    trusted = asyncssh.import_known_hosts(text).match(name, "", p)[0] if text.strip() else []
    revoked = revoked_keys(text, name, "", p)
    if key in (revoked or []):
        row["status"] = "REVOKED"
    elif key in (trusted or []):
        row["status"] = "known"
    elif trusted:
        row["status"] = "CHANGED"
    else:
        row["status"] = "new"
    return row


async def scan_all(inventory: Inventory) -> list[dict[str, Any]]:
    hosts = [h for h in inventory.hosts.values() if not h.is_local]
    return list(await asyncio.gather(*(scan(h) for h in hosts)))


def pin(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Append the new keys to their known_hosts files; how many went to each file."""
    by_file: dict[str, list[str]] = {}
    for r in rows:
        if r["status"] == "new" and r["line"] not in by_file.get(r["file"], []):
            by_file.setdefault(r["file"], []).append(r["line"])
    for f, lines in by_file.items():
        p = Path(f)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old = p.read_bytes() if p.exists() else b""
        with open(p, "a") as out:
            if old and not old.endswith(b"\n"):
                out.write("\n")
            out.write("".join(f"{line}\n" for line in lines))
    return {f: len(lines) for f, lines in by_file.items()}

"""asyncssh's look for liboqs at import (hosts/quick_import.py): with no liboqs in sight it
runs no compiler or linker; with one in sight, the real search runs as before. Checked
with stand-in ``gcc``/``cc``/``ld`` on PATH that record being run (labelled as such: they
only tell whether ctypes' search reached them). Its X.509 layer: skipped where pyOpenSSL,
which it needs, is not installed; imported as before where it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _import(tmp_path: Path, code: str, **env: str) -> tuple[list[str], str]:
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "ran.txt"
    log.write_text("")
    for tool in ("gcc", "cc", "ld", "objdump"):
        (stubs / tool).write_text(f'#!/bin/sh\necho {tool} >> {log}\nexit 1\n')
        (stubs / tool).chmod(0o755)
    e = {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "PYTHONPATH": str(REPO), **env}
    out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return log.read_text().split(), out.strip()


def test_no_liboqs_in_sight_means_no_compiler_run(tmp_path: Path) -> None:
    if b"liboqs" in Path("/etc/ld.so.cache").read_bytes():  # pragma: no cover
        import pytest

        pytest.skip("this machine has liboqs: the quick answer does not apply")
    quick, answer = _import(
        tmp_path, "from distribute_ssh.hosts.quick_import import asyncssh\n"
                  "import asyncssh.crypto.pq as pq; print(pq.sntrup_available)")
    assert quick == [] and answer == "False"
    # the plain import, for contrast, does run them (so the stand-ins can tell), and
    # comes to the same answer
    plain, same = _import(tmp_path, "import asyncssh.crypto.pq as pq; "
                                    "print(pq.sntrup_available)")
    assert plain and same == answer


def test_a_liboqs_in_sight_gets_the_real_search(tmp_path: Path) -> None:
    libs = tmp_path / "lib"
    libs.mkdir()
    (libs / "liboqs.so.5").write_bytes(b"")  # not a library: the search finds no symbols
    ran, _ = _import(tmp_path, "from distribute_ssh.hosts.quick_import import asyncssh",
                     LD_LIBRARY_PATH=str(libs))
    assert ran, "with a liboqs in LD_LIBRARY_PATH the real find_library must run"


_X509 = ("import sys\nfrom distribute_ssh.hosts.quick_import import asyncssh\n"
         "from asyncssh import public_key\n"
         "print(public_key._x509_available, 'cryptography.x509' in sys.modules)\n"
         "import asyncssh.crypto.x509\n")  # (asked for later, it is there to import)


def test_without_pyopenssl_the_x509_layer_is_not_imported_and_asyncssh_ends_the_same() -> None:
    import importlib.util

    if importlib.util.find_spec("OpenSSL") is not None:  # pragma: no cover
        import pytest

        pytest.skip("pyOpenSSL is installed here: asyncssh's X.509 layer loads as before")
    e = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", _X509], env=e, capture_output=True, text=True,
                       timeout=60)
    # the import that was skipped fails the same way when asked for afterwards
    assert "No module named 'OpenSSL'" in r.stderr
    assert r.stdout.split() == ["False", "False"]
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, asyncssh\nfrom asyncssh import public_key\n"
                               "print(public_key._x509_available, "
                               "'cryptography.x509' in sys.modules)"],
        env=e, capture_output=True, text=True, timeout=60, check=True)
    # the plain import loads cryptography.x509 for nothing, and ends the same
    assert plain.stdout.split() == ["False", "True"]


def test_with_pyopenssl_installed_the_x509_layer_is_imported_as_before(tmp_path: Path) -> None:
    # a stand-in OpenSSL package (labelled as such): enough for asyncssh's import of its
    # X.509 layer to succeed, which is all this looks at
    pkg = tmp_path / "site" / "OpenSSL"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "crypto.py").write_text("")
    e = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"}
    r = subprocess.run([sys.executable, "-c", _X509], env=e,
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.split() == ["True", "True"]

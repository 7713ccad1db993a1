"""Outputs a job creates to attack the head: nothing escapes (issue 10, theme 4).

A job is arbitrary code on its host; what it leaves in ``outputs/`` must never make the head
write, change or follow anything outside ``results/<ns>/<sweep>/`` (SPEC §8: "Output files
are never followed through symlinks out of the job's dir, and nothing from a host is ever
written outside this tree"). Each odd file either arrives intact (same name bytes, same
content) or is listed in job.json's ``skipped`` (and printed as a warning). The arena is
snapshotted before and after (path, type, mode, size, mtime, link target; /etc/hostname
too): only the run's own trees may change.

Cases (``test_hostile_output[NAME]``, one job ``nasty`` makes them all):

- ``link-file`` (-> /etc/passwd), ``link-outside`` (-> a file in the arena's outside/,
  whose bytes and mtime the snapshot watches), ``link-up`` (-> ../../..), ``link-dir`` (-> /etc, a
  symlinked directory), ``dangling`` (-> a missing path), ``sub/shadow`` (a link in a
  subdirectory, -> /etc/shadow): never followed nor copied; skipped with a note.
- ``hardlink``: a hard link to a file outside the job's dir (in the arena's outside/, same
  file system): it is a regular file of the job's, so it arrives as a new file with its
  content (not linked to the original); the original is untouched.
- names ``new\\nline``, ``back\\slash``, non-UTF-8 ``non\\377utf8``, ``...``, ``-rf``,
  ``--help``, `` spaces ``, ``$(cd;touch pwned-out)`` and the same in backticks (if run, a
  file would appear in HOME, which the snapshot sees): arrive under exactly those bytes.
- dssh's own names at the top of outputs/: ``job.json``, ``stdout.txt``, ``stderr.txt``,
  ``.attempts/1``: not collected (they would hide dssh's files), noted.
- ``fifo`` and ``device`` (a character device like /dev/null, or a socket where mknod is
  not allowed): not regular files: skipped with a note; the head does not block on them.
- ``deep``: a file 200 directories down; ``long-name``: a file name of 255 bytes: arrive.
- ``test_nasty_run_is_clean``: exit 0, the job COMPLETED, results/<job>/ holds exactly the
  expected files, nothing outside the run's trees changed, no canary.
- ``test_collect_patterns_cannot_reach_out``: collect patterns aiming outside outputs/
  (``../*``, ``/etc/passwd``, ``**/../**``, ``../../**``) collect nothing; every output
  stays on the host, listed in ``left_on_host``.
- ``test_symlinked_outputs_dir`` (found by this corpus, fixed; was UNSAFE): a job that
  replaces its ``outputs/`` with a symlink to a directory outside its dir: nothing is
  collected from it, and nothing there is deleted.
- ``test_symlinked_stdout`` (found by this corpus, fixed): a job that replaces
  ``.dssh/stdout.txt`` with a symlink: the link's target is not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from advkit import Arena, escaped, explain, run_allowed, snapshot

# /etc/passwd and /etc/shadow are link targets too, but other suites add users meanwhile:
# the files the snapshot watches are /etc/hostname and the arena's outside/.
EXTRA = ("/etc/hostname",)
LONG = "n" * 255
DEEP = "/".join(["deep"] + ["d"] * 200) + "/f"

# What the job makes in outputs/ (sh, run in outputs/; @OUTSIDE@ and @CANARY@ substituted).
MAKE = r"""
cd {output}
ln -s /etc/passwd link-file
ln -s @OUTSIDE@/precious.txt link-outside
ln -s ../../.. link-up
ln -s /etc link-dir
ln -s /nonexistent/x dangling
mkdir sub && ln -s /etc/shadow sub/shadow
ln @OUTSIDE@/precious.txt hardlink
printf nl > "$(printf 'new\nline')"
printf bs > 'back\slash'
printf bin > "$(printf 'non\377utf8')"
printf dots > '...'
printf dash > -rf
printf help > --help
printf sp > ' spaces '
printf cs > '$(cd;touch pwned-out)'
printf bt > '`cd;touch pwned-bt`'
printf mine > job.json
printf mine > stdout.txt
printf mine > stderr.txt
mkdir .attempts && printf mine > .attempts/1
mkfifo fifo
mknod device c 1 3 2>/dev/null || python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('device')"
mkdir -p "$(dirname DEEP)" && printf deep > DEEP
printf long > LONG
echo made
""".replace("DEEP", DEEP).replace("LONG", LONG)

LINK_NOTE = "a symlink, not collected (dssh never follows links)"
OWN_NOTE = "an output with this name would hide dssh's own file; not collected (write it " \
    "into a subdirectory)"
SPECIAL_NOTE = "not a regular file, not collected"
# name (bytes, relative to outputs/) -> ("file", content) or ("skipped", note)
EXPECT: dict[bytes, tuple[str, Any]] = {
    b"link-file": ("skipped", LINK_NOTE),
    b"link-outside": ("skipped", LINK_NOTE),
    b"link-up": ("skipped", LINK_NOTE),
    b"link-dir": ("skipped", LINK_NOTE),
    b"dangling": ("skipped", LINK_NOTE),
    b"sub/shadow": ("skipped", LINK_NOTE),
    b"hardlink": ("file", b"precious\n"),
    b"new\nline": ("file", b"nl"),
    b"back\\slash": ("file", b"bs"),
    b"non\377utf8": ("file", b"bin"),
    b"...": ("file", b"dots"),
    b"-rf": ("file", b"dash"),
    b"--help": ("file", b"help"),
    b" spaces ": ("file", b"sp"),
    b"$(cd;touch pwned-out)": ("file", b"cs"),
    b"`cd;touch pwned-bt`": ("file", b"bt"),
    b"job.json": ("skipped", OWN_NOTE),
    b"stdout.txt": ("skipped", OWN_NOTE),
    b"stderr.txt": ("skipped", OWN_NOTE),
    b".attempts/1": ("skipped", OWN_NOTE),
    b"fifo": ("skipped", SPECIAL_NOTE),
    b"device": ("skipped", SPECIAL_NOTE),
    DEEP.encode(): ("file", b"deep"),
    LONG.encode(): ("file", b"long"),
}
IDS = {b"$(cd;touch pwned-out)": "cmd-subst", b"`cd;touch pwned-bt`": "backticks", DEEP.encode(): "deep-200", LONG.encode(): "long-name",
       b"non\377utf8": "non-utf8", b"new\nline": "newline", b"back\\slash": "backslash",
       b" spaces ": "spaces", b"...": "three-dots"}


def _files(root: Path) -> set[bytes]:
    """Every non-directory below ``root``, as relative byte paths."""
    out = set()
    top = os.fsencode(root)
    for dirpath, _dirs, names in os.walk(top):
        for n in names:
            out.add(os.path.relpath(os.path.join(dirpath, n), top))
    return out


@pytest.fixture(scope="module")
def nasty(module_arenas: Any) -> dict[str, Any]:
    a: Arena = module_arenas("outputs")
    path = a.write_sweep({"name": "outs", "run": {"command": a.subst(MAKE, "out"), "cpus": 1},
                          "jobs": [{"name": "nasty"}]})
    a.write_inventory()
    before = snapshot(a.root, EXTRA)
    proc = a.run(path)
    after = snapshot(a.root, EXTRA)
    job = a.sweep_dir / "results/default/outs/nasty"
    info = json.loads((job / "job.json").read_text()) if (job / "job.json").exists() else {}
    return {"arena": a, "proc": proc, "before": before, "after": after, "job": job,
            "info": info}


def _subst(a: Arena, name: bytes) -> bytes:
    return name.replace(b"@CANARY@", a.canary("out").encode())


@pytest.mark.parametrize("name", list(EXPECT),
                         ids=[IDS.get(n) or n.decode(errors="replace") for n in EXPECT])
def test_hostile_output(nasty: dict[str, Any], name: bytes) -> None:
    a, proc, info = nasty["arena"], nasty["proc"], nasty["info"]
    assert proc.returncode == 0, explain(proc)
    real = _subst(a, name)
    path = os.path.join(os.fsencode(nasty["job"]), real)
    kind, want = EXPECT[name]
    shown = os.fsdecode(real)  # job.json writes a non-UTF-8 byte as a lone surrogate
    if kind == "file":
        st = os.lstat(path)
        assert os.path.isfile(path) and not os.path.islink(path)
        assert st.st_nlink == 1, "the result is linked to a file outside the results"
        with open(path, "rb") as f:
            assert f.read() == want
        assert shown in info["outputs"]
    else:
        note = f"{shown}: {want}"
        assert note in info["skipped"]
        assert f"warning nasty: {note}" in proc.stdout
        if name not in (b"job.json", b"stdout.txt", b"stderr.txt"):
            assert not os.path.lexists(path), "a skipped output reached the results"
        else:  # dssh's own file is there, not the job's
            with open(path, "rb") as f:
                assert f.read() != b"mine"


def test_nasty_run_is_clean(nasty: dict[str, Any]) -> None:
    a, proc, info = nasty["arena"], nasty["proc"], nasty["info"]
    assert proc.returncode == 0, explain(proc)
    assert info["status"] == "COMPLETED"
    want = {_subst(a, n) for n, (k, _) in EXPECT.items() if k == "file"}
    assert _files(nasty["job"]) == want | {b"job.json", b"stdout.txt", b"stderr.txt"}
    assert (nasty["job"] / "stdout.txt").read_text() == "made\n"
    assert a.fired() == []
    assert (a.outside / "precious.txt").read_text() == "precious\n"
    assert escaped(nasty["before"], nasty["after"], run_allowed("sweep/results/default/outs")) \
        == []


def test_collect_patterns_cannot_reach_out(arena: Arena) -> None:
    path = arena.write_sweep({
        "name": "pats", "run": {"command": "printf x > {output}/a.txt", "cpus": 1},
        "outputs": {"collect": ["../*", "/etc/passwd", "**/../**", "../../**", "/../x"]},
        "job_name": "j", "params": {"p": [1]}})
    arena.write_inventory()
    before = snapshot(arena.root, EXTRA)
    proc = arena.run(path)
    after = snapshot(arena.root, EXTRA)
    assert proc.returncode == 0, explain(proc)
    job = arena.sweep_dir / "results/default/pats/j"
    assert _files(job) == {b"job.json", b"stdout.txt", b"stderr.txt"}
    info = json.loads((job / "job.json").read_text())
    assert (info["outputs"], info["left_on_host"]) == ([], [{"path": "a.txt", "size": 1}])
    assert escaped(before, after, run_allowed("sweep/results/default/pats")) == []


def test_symlinked_outputs_dir(arena: Arena) -> None:
    (arena.outside / "secret.txt").write_text("secret\n")
    (arena.outside / "keep.dat").write_text("keep\n")
    path = arena.write_sweep({
        "name": "swap", "run": {"command": f"rm -rf outputs && ln -s {arena.outside} outputs",
                                "cpus": 1},
        "outputs": {"collect": ["*.txt"]}, "jobs": [{"name": "j"}]})
    arena.write_inventory()
    before = snapshot(arena.root, EXTRA)
    proc = arena.run(path)
    after = snapshot(arena.root, EXTRA)
    assert proc.returncode == 0, explain(proc)
    job = arena.sweep_dir / "results/default/swap/j"
    assert escaped(before, after, run_allowed("sweep/results/default/swap")) == [], \
        "files outside the job's dir were changed"
    assert _files(job) == {b"job.json", b"stdout.txt", b"stderr.txt"}, \
        "files from outside the job's dir were collected"


def test_symlinked_stdout(arena: Arena) -> None:
    (arena.outside / "secret.txt").write_text("secret\n")
    path = arena.write_sweep({
        "name": "log", "run": {"command": f"ln -sf {arena.outside}/secret.txt .dssh/stdout.txt",
                               "cpus": 1}, "jobs": [{"name": "j"}]})
    arena.write_inventory()
    proc = arena.run(path)
    assert proc.returncode == 0, explain(proc)
    got = (arena.sweep_dir / "results/default/log/j/stdout.txt").read_text()
    assert "secret" not in got

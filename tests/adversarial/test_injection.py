"""Hostile values arrive as data: nothing injected (issue 10, themes 1, 2 and 5).

Every case runs the real CLI (``python -m distribute_ssh run``) against one ``connection:
local`` host in its own arena (advkit), and checks three things: the job received the hostile
value as exactly the bytes written in the sweep file, no canary (``touch /tmp/dssh-pwned-...``
inside the value) exists afterwards, and nothing outside the run's own trees (results, the
host's workdir and ledger, the state file) changed.

Cases and the threat each covers:

- ``test_value_arrives_as_data[ID]``, one per entry of values.yaml (spaces, quotes, ``$()``,
  backticks, ``;``, ``&&``, ``|``, newlines, backslashes, leading dashes, ``..``, globs,
  non-ASCII, control characters, placeholder look-alikes, an 8 KB value, ...): the value as a
  swept parameter and as an explicit job's parameter, substituted into the command plainly,
  inside ``"..."``, inside ``'...'``, inside ``$(...)`` and inside backticks (and inside
  ``"$(... "...")"``), read back from ``$DSSH_PARAM_P``, from the sweep's ``run.env`` and from
  the inventory host's ``env``; also the brief's unquoted forms ``echo `echo {p}` `` and
  ``echo $(echo {p})`` (canary only: word splitting and globbing are the template's own).
  The value must also come back unchanged in job.json's ``params`` and summary.csv.
- ``test_injection_run_is_clean``: the whole batch run: exit 0, every job COMPLETED, no
  canary, nothing outside the run's trees touched, no raw terminal escape in dssh's output.
- ``test_very_long_value``: a 200 KB value cannot reach a job (Linux allows 128 KiB per
  exec argument or environment string): the job fails cleanly with exit 126 ("Argument list
  too long"), nothing runs, nothing escapes.
- ``test_summary_csv_row_injection`` (found by this corpus, fixed): a value holding a lone
  carriage return must not forge an extra row in summary.csv.
- ``test_nested_shell_is_warned_and_the_environment_keeps_the_value_data``: a placeholder
  inside a second shell's script (``sh -c '...{p}...'``) is parsed again by that shell, which
  dssh's quoting cannot prevent: dssh warns, naming the fix, and ``"$DSSH_PARAM_P"`` keeps
  the value data.
- ``test_nul_in_value`` (found by this corpus, fixed): YAML's ``"\\0"`` escape puts a NUL
  in a value, which no command line can carry: refused, exit 2.
- ``test_job_names_are_sanitised[VALUE]``: ``job_name: "{p}"`` with values holding ``/``,
  ``..``, ``.``, ``$()``, newlines, leading dashes: each job's name (its results dir and its
  dir on the host) is the value with every run of characters outside ``[A-Za-z0-9._-]``
  made ``_`` (``.``/``..`` prefixed with ``_``), as plan.py's ``_safe_name`` does, and nothing
  lands outside results/<ns>/<sweep>/.
- ``test_long_job_name`` (found by this corpus, fixed; was a hang): a 300-character value
  makes a job name longer than a file name may be: refused before anything starts.
- ``test_input_file_names[NAME]``: input files whose names hold spaces, ``;``, ``$()``,
  backticks, quotes, newlines, backslashes, ``*`` and non-ASCII, and ``as:`` targets holding
  the same (and nested dirs): each arrives in the job's ``input/`` under exactly its name
  with its bytes.
- ``test_input_dir_with_non_utf8_name`` (found by this corpus, fixed; was a traceback): an
  input dir holding names that are not UTF-8 (``a\\xffb``) next to newlines, backslashes,
  ``$(g)``: the names arrive byte for byte.
- ``test_input_target_with_leading_dash`` (found by this corpus, fixed; was a hang): an
  input named ``-rf`` (or ``--help``) arrives under that name.
- ``test_input_target_option_injection`` (found by this corpus, fixed; was UNSAFE):
  ``as: "--target-directory=/x"`` arrives as ``input/--target-directory=/x``, and nothing is
  written outside the job's dir.
- ``test_hostile_inventory_values[ID]``: inventory values that reach host-side shell
  scripts: ``workdir`` with ``;``, ``$()``, backticks, a newline and spaces, ``ledger_dir``
  with ``;``, ``pause_files`` patterns with ``$()`` and ``;``, ``python`` with ``;`` and
  ``$()`` (a python-mode job of the original format): handled as data: directories with
  those names (the runs succeed), or an interpreter of that whole name that is not found
  (the build fails with 127 and the run exits 1, "the build failed on every capable
  host"); never run as shell code.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from advkit import HERE, Arena, escaped, explain, finish, run_allowed, snapshot

# Outside the arena, the snapshot watches /etc/hostname (not /etc/passwd: other suites add
# users while this one runs).
EXTRA = ("/etc/hostname",)


def load_values() -> list[dict[str, Any]]:
    out = []
    for e in yaml.safe_load((HERE / "values.yaml").read_text()):
        out.append({**e, "value": e["value"] * e.get("repeat", 1)})
    return out


VALUES = load_values()
IDS = [v["id"] for v in VALUES]

# Each context: the command line writing one file of the job's outputs, and the bytes that
# file must hold for a value v. ``$(...)`` and backticks drop trailing newlines (POSIX).
CONTEXTS: dict[str, tuple[str, Any]] = {
    "plain": ("printf '%s' {p}", lambda v: v),
    "param-env": ("printf '%s' \"$DSSH_PARAM_P\"", lambda v: v),
    "double-quoted": ("printf '%s' \"v={p}\"", lambda v: "v=" + v),
    "single-quoted": ("printf '%s' 'v={p}'", lambda v: "v=" + v),
    "cmd-subst": ("printf '%s' \"$(printf '%s' {p})\"", lambda v: v.rstrip("\n")),
    "backticks": ("printf '%s' \"`printf '%s' {p}`\"", lambda v: v.rstrip("\n")),
    "dq-in-cmd-subst": ("printf '%s' \"$(printf '%s' \"w={p}\")\"",
                        lambda v: ("w=" + v).rstrip("\n")),
    "sweep-env": ("printenv HOSTILE_{i}", lambda v: v + "\n"),
    "host-env": ("printenv HOST_HOSTILE_{i}", lambda v: v + "\n"),
}
# The brief's unquoted forms: their output is the shell's business (splitting, globbing,
# echo's escapes); only that nothing runs is checked.
UNQUOTED = "echo `echo {p}` > /dev/null; echo $(echo {p}) > /dev/null"


def injection_command() -> str:
    lines = [f"{frag} > {{output}}/{name}" for name, (frag, _) in CONTEXTS.items()]
    return "\n".join([*lines, UNQUOTED, ""])


@pytest.fixture(scope="module")
def injected(module_arenas: Any) -> dict[str, Any]:
    """One sweep: every hostile value as a swept and an explicit parameter and as env."""
    a: Arena = module_arenas("inject")
    vals = [a.subst(v["value"], v["id"]) for v in VALUES]
    n = len(vals)
    sweep = {
        "name": "inject",
        "run": {"command": injection_command(), "cpus": 1,
                "env": {f"HOSTILE_{i}": v for i, v in enumerate(vals)}},
        "params": {"i": list(range(n)), "p": vals},
        "zip": [["i", "p"]],
        "job_name": "v{i}",
        "jobs": [{"name": f"x{i}", "params": {"i": i, "p": v}} for i, v in enumerate(vals)],
    }
    path = a.write_sweep(sweep)
    a.write_inventory(env={f"HOST_HOSTILE_{i}": v for i, v in enumerate(vals)})
    before = snapshot(a.root, EXTRA)
    proc = a.run(path, timeout=120)
    after = snapshot(a.root, EXTRA)
    results = a.sweep_dir / "results" / "default" / "inject"
    return {"arena": a, "values": vals, "proc": proc, "before": before, "after": after,
            "results": results}


@pytest.mark.parametrize("vid", IDS)
def test_value_arrives_as_data(injected: dict[str, Any], vid: str) -> None:
    a: Arena = injected["arena"]
    proc = injected["proc"]
    assert proc.returncode == 0, explain(proc)
    i = IDS.index(vid)
    value = injected["values"][i]
    results: Path = injected["results"]
    for job in (f"v{i}", f"x{i}"):
        for name, (_frag, expect) in CONTEXTS.items():
            got = (results / job / name).read_bytes()
            assert got == expect(value).encode(), f"{job}: context {name!r} received {got!r}"
        info = json.loads((results / job / "job.json").read_text())
        assert info["status"] == "COMPLETED"
        assert info["params"] == {"i": i, "p": value}
    if "\r" not in value:  # a lone CR breaks summary.csv: test_summary_csv_row_injection
        with open(results / "summary.csv", newline="") as f:
            rows = {r["job"]: r for r in csv.DictReader(f)}
        assert rows[f"v{i}"]["p"] == value and rows[f"x{i}"]["p"] == value
    assert not os.path.exists(a.canary(vid)), f"the value {vid} ran as shell code"


def test_injection_run_is_clean(injected: dict[str, Any]) -> None:
    a: Arena = injected["arena"]
    proc = injected["proc"]
    assert proc.returncode == 0, explain(proc)
    assert f"{2 * len(VALUES)} jobs: {2 * len(VALUES)} COMPLETED" in proc.stdout
    assert a.fired() == []
    assert escaped(injected["before"], injected["after"],
                   run_allowed("sweep/results/default/inject")) == []
    assert "\x1b" not in proc.stdout + proc.stderr, "a value's escape codes reached the terminal"


def test_nested_shell_is_warned_and_the_environment_keeps_the_value_data(
        arena: Arena) -> None:
    """dssh quotes a value for the shell that runs the command; a second shell in the
    command (``sh -c '... {p} ...'``) parses it again, which no quoting by dssh can
    prevent (docs/security.md). dssh says so before the run, naming the line and the fix,
    and the fix (the value from the environment) keeps it data."""
    canary = arena.canary("nested")
    path = arena.write_sweep({"name": "nested", "run": {
        "command": "sh -c 'printf %s \"$DSSH_PARAM_P\"' > {output}/p.txt; "
                   "true sh -c 'echo {p}' > /dev/null", "cpus": 1},
        "params": {"p": [f"$(touch {canary})"]}, "job_name": "j"})
    arena.write_inventory()
    dry = arena.run(path, "--dry-run")
    assert dry.returncode == 0, explain(dry)
    assert "run.command: {p} is inside the script of a second shell" in dry.stderr
    assert 'Use the environment there: "$DSSH_PARAM_P"' in dry.stderr
    proc = arena.run(path)
    assert proc.returncode == 0, explain(proc)
    assert not os.path.exists(canary), "a value ran as code"
    got = (arena.sweep_dir / "results/default/nested/j/p.txt").read_text()
    assert got == f"$(touch {canary})"


def test_very_long_value(arena: Arena) -> None:
    """A 200 KB value reaches the job whole and as data: the command runs in the shell
    that reads ``command.sh`` (no exec of ``sh -c COMMAND``, whose one argument Linux
    caps at 128 KiB), so nothing in the value runs and nothing escapes."""
    canary = arena.canary("huge")
    value = f"$(touch {canary});" * (200_000 // (len(canary) + 10))
    path = arena.write_sweep({"name": "huge", "run": {
        "command": "printf '%s' {p} > {output}/p", "cpus": 1}, "params": {"p": [value]},
        "job_name": "big"})
    arena.write_inventory()
    before = snapshot(arena.root)
    proc = arena.run(path)
    after = snapshot(arena.root)
    assert proc.returncode == 0, explain(proc)
    info = json.loads((arena.sweep_dir / "results/default/huge/big/job.json").read_text())
    assert (info["status"], info["exit_code"]) == ("COMPLETED", 0)
    assert (arena.sweep_dir / "results/default/huge/big/p").read_text() == value
    assert not os.path.exists(canary)
    assert escaped(before, after, run_allowed("sweep/results/default/huge")) == []


def test_summary_csv_row_injection(arena: Arena) -> None:
    value = "x\rforged"
    path = arena.write_sweep({"name": "csv", "run": {"command": "true", "cpus": 1},
                              "params": {"p": [value]}, "job_name": "real"})
    arena.write_inventory()
    proc = arena.run(path)
    assert proc.returncode == 0, explain(proc)
    with open(arena.sweep_dir / "results/default/csv/summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["p"]) for r in rows] == [("real", value)]


def test_nul_in_value(arena: Arena) -> None:
    path = arena.write_sweep('name: nul\nrun: {cpus: 1, command: "printf %s {p} > {output}/p"}\n'
                             'params: {p: ["a\\0b"]}\n')
    arena.write_inventory()
    before = snapshot(arena.root)
    proc = arena.run(path)
    assert proc.returncode == 2, explain(proc)
    assert "sweep.yaml:3: params.p" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(arena.root) == before


# -- job names made from values ------------------------------------------------------------
# value -> the job's name (its results dir and its dir on the host). "@C@" is the canary.
NAMES = {
    "..": "_..",
    ".": "_.",
    "...": "...",
    "a/b": "a_b",
    "../../../etc/cron.d/x": ".._.._.._etc_cron.d_x",
    "/abs/path": "abs_path",
    "$(touch @C@)": "touch_@C_@",  # the canary's name, its slashes made _
    "a\nb c": "a_b_c",
    "-rf": "-rf",
    "--help": "--help",
    "é": "job",
    "x;y|z&&w": "x_y_z_w",
}


@pytest.fixture(scope="module")
def named(module_arenas: Any) -> dict[str, Any]:
    a: Arena = module_arenas("names")
    canary = a.canary("names")

    def c(s: str) -> str:
        return s.replace("@C@", canary).replace("@C_@", canary.strip("/").replace("/", "_"))

    values = [c(v) for v in NAMES]
    path = a.write_sweep({"name": "names", "run": {
        "command": "printf '%s' \"$DSSH_PARAM_P\" > {output}/p; printf '%s' \"$DSSH_JOB\" > "
                   "{output}/job", "cpus": 1}, "params": {"p": values}, "job_name": "{p}"})
    a.write_inventory()
    before = snapshot(a.root, EXTRA)
    proc = a.run(path)
    after = snapshot(a.root, EXTRA)
    return {"arena": a, "proc": proc, "before": before, "after": after, "c": c,
            "results": a.sweep_dir / "results/default/names"}


@pytest.mark.parametrize("value", list(NAMES), ids=list(NAMES.values()))
def test_job_names_are_sanitised(named: dict[str, Any], value: str) -> None:
    proc, c = named["proc"], named["c"]
    assert proc.returncode == 0, explain(proc)
    results: Path = named["results"]
    want = c(NAMES[value])
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == \
        sorted(c(n) for n in NAMES.values())
    assert (results / want / "p").read_bytes() == c(value).encode()
    assert (results / want / "job").read_text() == want
    assert json.loads((results / want / "job.json").read_text())["job"] == want
    assert named["arena"].fired() == []
    assert escaped(named["before"], named["after"], run_allowed("sweep/results/default/names")) \
        == []


def test_long_job_name(arena: Arena) -> None:
    path = arena.write_sweep({"name": "long", "run": {
        "command": "printf '%s' {p} > {output}/p", "cpus": 1}, "params": {"p": ["x" * 300]}})
    arena.write_inventory()
    proc = finish(arena.start("run", path, "-i", arena.root / "inventory.yaml"),
                  deadline=time.monotonic() + 8)
    assert proc.returncode is not None, "dssh was still running after 8 s"
    if proc.returncode == 2:
        assert "sweep.yaml" in proc.stderr and "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 0, explain(proc)


# -- input file names and `as:` targets -----------------------------------------------------
# name of a file next to the sweep file (listed in run.files as it is) -> its content.
# "$(cd;touch ...)" would land in HOME (the arena's home/) if it ran: the snapshot sees it.
SOURCE_NAMES = {
    "a b;$(cd;touch pwned-f1)": "f1",
    "`cd;touch pwned-f2`": "f2",
    "quote'd \"name\"": "f3",
    "new\nline": "f4",
    "back\\slash": "f5",
    "*": "f6",
    "é漢字": "f7",
    "x && y | z": "f8",
}
# `as:` targets (one explicit job): source file -> target inside input/
AS_TARGETS = {
    "t1": "$(touch @CANARY@)",  # holds '/': a nested path inside input/
    "t2": "sub/dir/`touch @CANARY@`",
    "t3": "x;touch @CANARY@",
    "t4": ".hidden",
    "t5": "line\nbreak",
}
DIR_NAMES = [b"a\xffb", b"c\nd", b"e\\f", b"$(g)", b"...", b"h i"]  # in an input dir


@pytest.fixture(scope="module")
def inputs(module_arenas: Any) -> dict[str, Any]:
    a: Arena = module_arenas("inputs")
    for name, content in SOURCE_NAMES.items():
        (a.sweep_dir / name).write_text(content)
    for src in AS_TARGETS:
        (a.sweep_dir / src).write_text(f"content of {src}")
    targets = {src: a.subst(t, src) for src, t in AS_TARGETS.items()}
    path = a.write_sweep({
        "name": "inputs",
        "run": {"command": "cp -R input/. {output}/in", "cpus": 1,
                "files": list(SOURCE_NAMES)},
        "jobs": [{"name": "plain"},
                 {"name": "renamed", "files": [{"path": s, "as": t} for s, t in targets.items()]}],
    })
    a.write_inventory()
    before = snapshot(a.root, EXTRA)
    proc = a.run(path)
    after = snapshot(a.root, EXTRA)
    return {"arena": a, "proc": proc, "before": before, "after": after, "targets": targets,
            "results": a.sweep_dir / "results/default/inputs"}


CASES_IN = [("source", n) for n in SOURCE_NAMES] + [("as", s) for s in AS_TARGETS]


@pytest.mark.parametrize(("kind", "name"), CASES_IN,
                         ids=[f"{k}-{SOURCE_NAMES.get(n, n)}" for k, n in CASES_IN])
def test_input_file_names(inputs: dict[str, Any], kind: str, name: str) -> None:
    proc, a = inputs["proc"], inputs["arena"]
    assert proc.returncode == 0, explain(proc)
    got = inputs["results"] / ("renamed" if kind == "as" else "plain") / "in"
    if kind == "source":
        assert (got / name).read_text() == SOURCE_NAMES[name]
    else:
        assert (got / inputs["targets"][name]).read_text() == f"content of {name}"
    assert a.fired() == []
    assert escaped(inputs["before"], inputs["after"], run_allowed("sweep/results/default/inputs")) \
        == []


def test_input_dir_with_non_utf8_name(arena: Arena) -> None:
    d = arena.sweep_dir / "tree"
    d.mkdir()
    for n in DIR_NAMES:
        with open(os.path.join(os.fsencode(d), n), "wb") as f:
            f.write(b"bytes of " + n)
    path = arena.write_sweep({"name": "tree", "run": {
        "command": "cp -R input/. {output}/in", "cpus": 1, "files": ["tree/"]}})
    arena.write_inventory()
    proc = arena.run(path)
    assert "Traceback" not in proc.stderr, explain(proc)
    assert proc.returncode == 0, explain(proc)
    got = os.fsencode(arena.sweep_dir / "results/default/tree/tree/in/tree")
    assert sorted(os.listdir(got)) == sorted(DIR_NAMES)
    for n in DIR_NAMES:
        with open(os.path.join(got, n), "rb") as f:
            assert f.read() == b"bytes of " + n


def test_input_target_with_leading_dash(arena: Arena) -> None:
    (arena.sweep_dir / "-rf").write_text("one")
    (arena.sweep_dir / "--help").write_text("two")
    path = arena.write_sweep({"name": "dash", "run": {
        "command": "cat -- input/-rf input/--help > {output}/cat", "cpus": 1,
        "files": ["-rf", "--help"]}})
    arena.write_inventory()
    proc = finish(arena.start("run", path, "-i", arena.root / "inventory.yaml"),
                  deadline=time.monotonic() + 8)
    assert proc.returncode == 0, explain(proc)
    assert (arena.sweep_dir / "results/default/dash/dash/cat").read_text() == "onetwo"


def test_input_target_option_injection(arena: Arena) -> None:
    (arena.sweep_dir / "data.txt").write_text("data")
    path = arena.write_sweep({"name": "opt", "run": {
        "command": "ls -R input > {output}/ls", "cpus": 1,
        "files": [{"path": "data.txt", "as": f"--target-directory={arena.outside}"}]}})
    arena.write_inventory()
    before = snapshot(arena.root)
    proc = arena.run(path)
    after = snapshot(arena.root)
    assert escaped(before, after, run_allowed("sweep/results/default/opt")) == [], \
        "a file was written outside the job's dir"
    assert proc.returncode in (0, 2), explain(proc)


# -- inventory values that reach the host's shell -------------------------------------------
# id -> (host settings, the sweep to run, expected exit, the trees the run may change)
ORIGINAL = {"meta": {"batch_name": "orig", "namespace": "ns", "capabilities": []},
            "python": {"initialize": {"build_file": "build.py", "required_files": []},
                       "jobs": [{"name": "j1", "file": "run.py", "required_files": []}]}}
PLAIN = {"name": "inv", "run": {"command": "printf ok > {output}/ok", "cpus": 1}}
INVENTORY_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], int, list[str]]] = {
    "workdir-semicolon": ({"workdir": "@ARENA@/host/w;touch @CANARY@"}, PLAIN, 0,
                          ["host/w;touch "]),
    "workdir-dollar-paren": ({"workdir": "@ARENA@/host/$(touch @CANARY@)"}, PLAIN, 0,
                             ["host/$(touch "]),
    "workdir-backticks": ({"workdir": "@ARENA@/host/`touch @CANARY@`"}, PLAIN, 0,
                          ["host/`touch "]),
    "workdir-newline-space": ({"workdir": "@ARENA@/host/w x\ntouch @CANARY@"}, PLAIN, 0,
                              ["host/w x\ntouch "]),
    "ledger-dir-semicolon": ({"ledger_dir": "@ARENA@/led;touch @CANARY@"}, PLAIN, 0,
                             ["led;touch "]),
    "pause-files-patterns": ({"pause_files": ["@ARENA@/p;touch @CANARY@",
                                              "@ARENA@/$(touch @CANARY@)*", "@ARENA@/`x`?"]},
                             PLAIN, 0, []),
    "python-semicolon": ({"python": "python3; touch @CANARY@"}, ORIGINAL, 1, []),
    "python-dollar-paren": ({"python": "$(touch @CANARY@)"}, ORIGINAL, 1, []),
}


@pytest.mark.parametrize("cid", list(INVENTORY_CASES))
def test_hostile_inventory_values(arena: Arena, cid: str) -> None:
    settings, sweep, want, trees = INVENTORY_CASES[cid]
    settings = json.loads(arena.subst(json.dumps(settings), cid))
    orig = "meta" in sweep
    if orig:
        (arena.sweep_dir / "build.py").write_text("print('built')\n")
        (arena.sweep_dir / "run.py").write_text("open('distribute_save/out', 'w').write('x')\n")
    path = arena.write_sweep(sweep, "distribute-jobs.yaml" if orig else "sweep.yaml")
    arena.write_inventory(**settings)
    before = snapshot(arena.root, EXTRA)
    proc = arena.run(path)
    after = snapshot(arena.root, EXTRA)
    assert proc.returncode == want, explain(proc)
    assert arena.fired() == [], "an inventory value ran as shell code"
    ns, name = ("ns", "orig") if orig else ("default", "inv")
    results = arena.sweep_dir / "results" / ns / name
    if want == 0:
        assert (results / "inv/ok").read_text() == "ok"
    else:  # the build looks for an interpreter of that whole name, and finds none
        assert "the build failed on every capable host" in proc.stderr
        log = (results / "build-here.log").read_text()
        assert "# exit code: 127" in log and "not found" in log
    allowed = run_allowed(f"sweep/results/{ns}/{name}") + trees
    assert escaped(before, after, allowed) == []

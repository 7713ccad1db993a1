"""Bad input stops before anything starts: exit 2, and a message naming file, line, key and fix.

SPEC §4: "Exit codes: ... 2 bad input or usage (nothing was started) ... Errors are one or a
few lines naming the file, the line and the key at fault, and what to do — never a traceback".

Every case below is one malformed sweep file, inventory or command line, run through the real
CLI (``dssh run``). Most run in-process (``cli.main``) with ``--dry-run`` for speed; a set of
them also runs as a subprocess *without* ``--dry-run`` to prove that nothing starts: no state
file, no results dir, no ``~/.dssh`` on the (local) host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distribute_ssh.cli import main

GOOD_SWEEP = "name: ok\nrun: {command: echo hi}\n"
GOOD_INVENTORY = "hosts: {here: {connection: local, capabilities: [python3]}}\n"


@dataclass(frozen=True)
class Bad:
    """One bad input and what its message must say.

    ``at`` is ``FILE:LINE`` relative to the test's directory (None: nothing in a file is at
    fault, e.g. a missing file); ``file`` the file the message must name; ``key`` the key (or
    option) it must name; ``fix`` words of what to do.
    """

    id: str
    key: str | None
    fix: tuple[str, ...]
    at: str | None = None
    sweep: str = GOOD_SWEEP
    inventory: str = GOOD_INVENTORY
    file: str | None = None  # default: the file of ``at``
    files: dict[str, str] = field(default_factory=dict)  # more files next to the sweep
    args: tuple[str, ...] = ()  # more command-line arguments ({tmp} is the test's directory)
    sweep_arg: str = "sweep.yaml"
    inventory_arg: str = "inventory.yaml"


def s(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


CASES = [
    # -- YAML syntax ----------------------------------------------------------------------------
    Bad("yaml-bad-indentation", at="sweep.yaml:4", key="run.cpus",
        fix=("indented differently", "spaces"),
        sweep=s("""
            name: t
            run:
              command: echo
               cpus: 2
            """)),
    Bad("yaml-unclosed-bracket", at="sweep.yaml:2", key="requires",
        fix=("never closed", "add the missing ']'"),
        sweep=s("""
            name: t
            requires: [python3
            run: {command: echo}
            """)),
    Bad("yaml-tab-indentation", at="sweep.yaml:3", key="run.command",
        fix=("tab", "replace the tabs on line 3 with spaces"),
        sweep="name: t\nrun:\n\tcommand: echo\n"),
    Bad("yaml-unquoted-template", at="sweep.yaml:3", key="run.command",
        fix=("starts with '{'", 'quote the whole value'),
        sweep=s("""
            name: t
            run:
              command: {build}/solver {x}
            params: {x: [1]}
            """)),
    Bad("yaml-duplicate-key", at="sweep.yaml:3", key="name",
        fix=("appears twice", "first on line 1", "keep one"),
        sweep=s("""
            name: t
            run: {command: echo}
            name: u
            """)),
    Bad("sweep-empty-file", at="sweep.yaml:1", key="name", fix=("empty", "dssh template"),
        sweep=""),
    Bad("sweep-top-level-list", at="sweep.yaml:1", key="(top level)",
        fix=("must be a mapping", "'key: value' lines", "without '- '"),
        sweep="- name: t\n- run: {command: echo}\n"),
    # -- keys -----------------------------------------------------------------------------------
    Bad("unknown-top-level-key", at="sweep.yaml:3", key="parmas",
        fix=("unknown key", "did you mean 'params'?"),
        sweep="name: t\nrun: {command: 'echo {x}'}\nparmas: {x: [1]}\n"),
    Bad("unknown-key-in-run", at="sweep.yaml:4", key="run.cpu",
        fix=("unknown key", "did you mean 'cpus'?"),
        sweep="name: t\nrun:\n  command: echo\n  cpu: 2\n"),
    Bad("unknown-key-no-close-match", at="sweep.yaml:3", key="run.colour",
        fix=("remove it or fix its spelling", "keys allowed in run: command, files"),
        sweep="name: t\nrun:\n  colour: red\n  command: echo\n"),
    Bad("missing-name", at="sweep.yaml:1", key="name", fix=("is missing", "add name:"),
        sweep="run: {command: echo}\n"),
    Bad("missing-run-command", at="sweep.yaml:2", key="run.command",
        fix=("is missing", "add command:"),
        sweep="name: t\nrun:\n  cpus: 2\n"),
    Bad("run-is-a-bare-string", at="sweep.yaml:2", key="run",
        fix=("expected a mapping", 'write it as run: {command: "echo hi"}'),
        sweep='name: t\nrun: "echo hi"\n'),
    Bad("run-is-empty", at="sweep.yaml:2", key="run",
        fix=("got nothing", "write its keys indented under 'run:'"),
        sweep="name: t\nrun:\n"),
    # -- types ----------------------------------------------------------------------------------
    Bad("cpus-quoted", at="sweep.yaml:4", key="run.cpus",
        fix=("expected a whole number", "without quotes: cpus: 4"),
        sweep='name: t\nrun:\n  command: echo\n  cpus: "4"\n'),
    Bad("cpus-fraction", at="sweep.yaml:4", key="run.cpus",
        fix=("expected a whole number", "2.5", "cpus: 2"),
        sweep="name: t\nrun:\n  command: echo\n  cpus: 2.5\n"),
    Bad("retries-yes", at="sweep.yaml:4", key="run.retries",
        fix=("expected a whole number", "yes (read as true)", "YAML reads yes/no"),
        sweep="name: t\nrun:\n  command: echo\n  retries: yes\n"),
    Bad("priority-a-word", at="sweep.yaml:4", key="run.priority",
        fix=("is not a number", "higher priority start first", "{duration}"),
        sweep="name: t\nrun:\n  command: echo\n  priority: high\n"),
    Bad("priority-not-a-parameter", at="sweep.yaml:4", key="run.priority",
        fix=("{secs}", "not a parameter", "only the sweep's parameters (d)"),
        sweep="name: t\nrun:\n  command: sleep {d}\n  priority: \"{secs}\"\n"
              "params: {d: [1, 2]}\n"),
    Bad("priority-gives-a-word", at="sweep.yaml:4", key="run.priority",
        fix=("'fast'", "not a number", "values are numbers"),
        sweep="name: t\nrun:\n  command: echo {m}\n  priority: \"{m}\"\n"
              "params: {m: [fast, slow]}\n"),
    Bad("job-priority-a-template", at="sweep.yaml:5", key="jobs[0].priority",
        fix=("is not a number", "higher priority start first"),
        sweep="name: t\nrun:\n  command: echo\njobs:\n  - {name: a, priority: \"{x}\"}\n"),
    Bad("params-is-a-list", at="sweep.yaml:3", key="params",
        fix=("expected a mapping", "params: {re: [100, 400]"),
        sweep="name: t\nrun: {command: echo}\nparams: [1, 2]\n"),
    Bad("requires-is-a-string", at="sweep.yaml:2", key="requires",
        fix=("expected a list", "requires: [python3]"),
        sweep="name: t\nrequires: python3\nrun: {command: echo}\n"),
    Bad("outputs-exclude-is-a-string", at="sweep.yaml:4", key="outputs.exclude",
        fix=("expected a list", 'exclude: ["*.vtk"]'),
        sweep='name: t\nrun: {command: echo}\noutputs:\n  exclude: "*.vtk"\n'),
    Bad("outputs-exclude-typo", at="sweep.yaml:4", key="outputs.exclud",
        fix=("did you mean 'exclude'", "collect, exclude"),
        sweep='name: t\nrun: {command: echo}\noutputs:\n  exclud: ["*.vtk"]\n'),
    Bad("env-value-is-a-list", at="sweep.yaml:5", key="run.env.OMP_NUM_THREADS",
        fix=("expected text or a number", "single value"),
        sweep="name: t\nrun:\n  command: echo\n  env:\n    OMP_NUM_THREADS: [1, 2]\n"),
    Bad("name-is-a-number", at="sweep.yaml:1", key="name",
        fix=("expected text", 'quote it: name: "2024"'),
        sweep="name: 2024\nrun: {command: echo}\n"),
    # -- values ---------------------------------------------------------------------------------
    Bad("cpus-zero", at="sweep.yaml:4", key="run.cpus",
        fix=("at least 1, got 0", "remove the line"),
        sweep="name: t\nrun:\n  command: echo\n  cpus: 0\n"),
    Bad("cpus-negative", at="sweep.yaml:4", key="run.cpus", fix=("at least 1, got -2",),
        sweep="name: t\nrun:\n  command: echo\n  cpus: -2\n"),
    Bad("gpus-negative", at="sweep.yaml:4", key="run.gpus", fix=("0 or more", "use 0"),
        sweep="name: t\nrun:\n  command: echo\n  gpus: -1\n"),
    Bad("retries-negative", at="sweep.yaml:4", key="run.retries", fix=("0 or more", "use 0"),
        sweep="name: t\nrun:\n  command: echo\n  retries: -1\n"),
    Bad("timeout-not-a-duration", at="sweep.yaml:4", key="run.timeout",
        fix=("'soon'", "timeout: 2h"),
        sweep="name: t\nrun:\n  command: echo\n  timeout: soon\n"),
    Bad("migrate-signal-kill", at="sweep.yaml:4", key="run.migrate_signal",
        fix=("'KILL' is not a signal dssh sends", "TERM, INT, HUP, USR1", "migrate_signal: USR1"),
        sweep="name: t\nrun:\n  command: echo\n  migrate_signal: KILL\n"),
    Bad("migrate-after-not-a-duration", at="sweep.yaml:4", key="run.migrate_after",
        fix=("'later'", "migrate_after: 2h"),
        sweep="name: t\nrun:\n  command: echo\n  migrate_after: later\n"),
    Bad("name-with-space", at="sweep.yaml:1", key="name",
        fix=("not a valid name", "letters, digits", "name: my-sweep"),
        sweep="name: my sweep\nrun: {command: echo}\n"),
    Bad("name-with-slash", at="sweep.yaml:1", key="name", fix=("no spaces or slashes", "a-b"),
        sweep="name: a/b\nrun: {command: echo}\n"),
    Bad("namespace-with-space", at="sweep.yaml:2", key="namespace", fix=("namespace: my-group",),
        sweep="name: t\nnamespace: my group\nrun: {command: echo}\n"),
    Bad("param-with-no-values", at="sweep.yaml:4", key="params.re",
        fix=("no values", "at least one"),
        sweep="name: t\nrun: {command: 'echo {re}'}\nparams:\n  re: []\n"),
    Bad("param-name-starts-with-digit", at="sweep.yaml:4", key="params.2x",
        fix=("must start with a letter", "rename it"),
        sweep="name: t\nrun: {command: echo}\nparams:\n  2x: [1]\n"),
    Bad("run-container-image-missing", at="sweep.yaml:4", key="run.container.image",
        fix=("'solver.sif' not found", "root filesystem dir"),
        sweep="name: t\nrun:\n  command: echo\n  container: {image: solver.sif}\n"),
    Bad("run-container-bwrap-needs-a-tree", at="sweep.yaml:4", key="run.container.image",
        fix=("neither a dir nor a .tar",), files={"solver.sif": ""},
        sweep="name: t\nrun:\n  command: echo\n  container: {image: solver.sif, runtime: "
              "bwrap}\n"),
    Bad("run-container-bad-mount", at="sweep.yaml:4", key="run.container.mounts",
        fix=("absolute paths inside the image", "mounts: [/scratch]"), files={"s.sif": ""},
        sweep="name: t\nrun:\n  command: echo\n  container: {image: s.sif, mounts: "
              "[scratch]}\n"),
    Bad("run-container-bad-runtime", at="sweep.yaml:4", key="run.container.runtime",
        fix=("apptainer, podman, bwrap", "runtime: bwrap"), files={"s.sif": ""},
        sweep="name: t\nrun:\n  command: echo\n  container: {image: s.sif, runtime: "
              "docker}\n"),
    Bad("params-range-backwards", at="sweep.yaml:4", key="params.re",
        fix=("stop not below start", "{start: 100, stop: 1000, step: 300}"),
        sweep="name: r\nrun: {command: echo}\nparams:\n  re: {start: 10, stop: 1, step: 1}\n"),
    Bad("zip-unequal-lengths", at="sweep.yaml:4", key="zip[0]",
        fix=("as many values each",),
        sweep="name: z\nrun: {command: echo}\nparams: {a: [1, 2], b: [1]}\nzip: [[a, b]]\n"),
    Bad("original-format-missing-build-file", at="sweep.yaml:6",
        key="python.initialize.build_file.path", fix=("'build.py' not found", "fix the path"),
        sweep=s("""
            meta:
              batch_name: b
              namespace: n
              capabilities: [python3]
            python:
              initialize: {build_file: build.py}
              jobs: []
            """)),
    Bad("original-format-both-modes", at="sweep.yaml:5", key="apptainer",
        fix=("not both", "split it into two files"),
        files={"build.py": "", "x.sif": ""},
        sweep=s("""
            meta: {batch_name: b, namespace: n}
            python:
              initialize: {build_file: build.py}
              jobs: []
            apptainer:
              initialize: {sif: x.sif}
            """)),
    # -- job names and placeholders -------------------------------------------------------------
    Bad("duplicate-explicit-job-names", at="sweep.yaml:5", key="jobs[1].name",
        fix=("'a' is used twice", "jobs[0] and jobs[1]", "rename one"),
        sweep=s("""
            name: t
            run: {command: echo}
            jobs:
              - {name: a}
              - {name: a}
            """)),
    Bad("job-name-template-collapses", at="sweep.yaml:4", key="job_name",
        fix=("used twice", "job_name", "{mesh}"),
        sweep=s("""
            name: t
            run: {command: "solve {re} {mesh}"}
            params: {re: [1, 2], mesh: [coarse, fine]}
            job_name: "re{re}"
            """)),
    Bad("job-name-uses-a-non-parameter", at="sweep.yaml:4", key="job_name",
        fix=("{seed}", "not a parameter", "remove {seed}"),
        sweep=s("""
            name: t
            run: {command: "solve {re}"}
            params: {re: [1, 2]}
            job_name: "re{re}-{seed}"
            """)),
    Bad("unknown-placeholder", at="sweep.yaml:3", key="run.command",
        fix=("{mesh}", "neither a parameter", "add mesh to params"),
        sweep="name: t\nrun:\n  command: 'solve {re} {mesh}'\nparams: {re: [1]}\n"),
    Bad("misspelt-placeholder", at="sweep.yaml:2", key="run.command",
        fix=("{jbo}", "did you mean {job}?"),
        sweep="name: t\nrun: {command: 'solve --name {jbo}'}\n"),
    Bad("placeholder-in-build-command", at="sweep.yaml:2", key="build.command",
        fix=("{re}", "shared by every job", "move the per-job part to run.command"),
        sweep=s("""
            name: t
            build: {command: "make RE={re}"}
            run: {command: "solve {re}"}
            params: {re: [1]}
            """)),
    Bad("malformed-template", at="sweep.yaml:2", key="run.command",
        fix=("malformed template", "{{ and }}"),
        sweep="name: t\nrun: {command: \"awk '{print $1' data\"}\n"),
    Bad("explicit-job-lacks-a-param", at="sweep.yaml:6", key="jobs[0].params",
        fix=("job 'special' has no value for {mesh}", "add mesh: <value> to its params"),
        sweep=s("""
            name: t
            run: {command: "solve {re} {mesh}"}
            params: {re: [1], mesh: [a]}
            jobs:
              - name: special
                params: {re: 2}
            """)),
    # -- files ----------------------------------------------------------------------------------
    Bad("missing-run-file", at="sweep.yaml:4", key="run.files[0]",
        fix=("'base.cfg' not found", "fix the path", "sweep file's directory"),
        sweep="name: t\nrun:\n  command: echo\n  files: [base.cfg]\n"),
    Bad("missing-build-file", at="sweep.yaml:4", key="build.files[0]",
        fix=("'build.py' not found", "fix the path"),
        sweep=s("""
            name: t
            build:
              command: python3 build.py
              files: [build.py]
            run: {command: echo}
            """)),
    Bad("missing-per-job-file", at="sweep.yaml:5", key="jobs[0].files[0]",
        fix=("'special.cfg' not found", "fix the path"),
        sweep=s("""
            name: t
            run: {command: echo}
            jobs:
              - name: special
                files: [special.cfg]
            """)),
    Bad("as-with-dotdot", at="sweep.yaml:5", key="jobs[0].files[0].as",
        fix=("plain relative name", "no '..'", "as: x.cfg"),
        files={"special.cfg": "x"},
        sweep=s("""
            name: t
            run: {command: echo}
            jobs:
              - name: special
                files: [{path: special.cfg, as: ../x.cfg}]
            """)),
    Bad("as-absolute", at="sweep.yaml:4", key="run.files[0].as",
        fix=("plain relative name", "not absolute"),
        files={"base.cfg": "x"},
        sweep="name: t\nrun:\n  command: echo\n  files: [{path: base.cfg, as: /etc/base.cfg}]\n"),
    Bad("two-input-files-same-name", at="sweep.yaml:6", key="run.files[1]",
        fix=("two input files named 'in.cfg'", "run.files[0]", "'as:'"),
        files={"a/in.cfg": "a", "b/in.cfg": "b"},
        sweep=s("""
            name: t
            run:
              command: echo
              files:
                - a/in.cfg
                - b/in.cfg
            """)),
    # -- matching jobs to the inventory's hosts (line: see test_no_capable_host_names_the_line)
    Bad("no-host-with-capabilities", file="sweep.yaml", key="requires",
        fix=("gpu", "no host", "here: python3", "Add them to a host's 'capabilities'"),
        sweep="name: t\nrequires: [python3, gpu]\nrun: {command: echo}\n"),
    Bad("more-gpus-than-any-host", file="sweep.yaml", key="run.gpus",
        fix=("run.gpus is 2", "lists that many GPUs", "lower run.gpus"),
        sweep="name: t\nrun:\n  command: echo\n  gpus: 2\n",
        inventory="hosts: {here: {connection: local, gpus: [0]}}\n"),
    Bad("more-cpus-than-any-host", file="sweep.yaml", key="run.cpus",
        fix=("run.cpus is 8", "here: 2", "lower run.cpus"),
        sweep="name: t\nrun:\n  command: echo\n  cpus: 8\n",
        inventory="hosts: {here: {connection: local, cpus: 2}}\n"),
    # -- inventory ------------------------------------------------------------------------------
    Bad("inventory-pause-when-load-zero", at="inventory.yaml:5",
        key="hosts.here.pause_when.foreign_load",
        fix=("must be more than 0", "foreign_load: 0.5"),
        inventory="hosts:\n  here:\n    connection: local\n    pause_when:\n"
                  "      foreign_load: 0\n"),
    Bad("inventory-pause-when-unknown", at="inventory.yaml:5",
        key="hosts.here.pause_when.owner_idle",
        fix=("did you mean 'owner_active'?",),
        inventory="hosts:\n  here:\n    connection: local\n    pause_when:\n"
                  "      owner_idle: 15m\n"),
    Bad("inventory-hours", at="inventory.yaml:4", key="hosts.here.hours",
        fix=("'nights' is not a day", "weekends"),
        inventory="hosts:\n  here:\n    connection: local\n    hours: nights\n"),
    Bad("inventory-unknown-host-key", at="inventory.yaml:4", key="hosts.here.colour",
        fix=("unknown key", "remove it or fix its spelling"),
        inventory="hosts:\n  here:\n    connection: local\n    colour: red\n"),
    Bad("inventory-misspelt-top-key", at="inventory.yaml:1", key="hsots",
        fix=("did you mean 'hosts'?",),
        inventory="hsots:\n  here: {connection: local}\n"),
    Bad("inventory-port-zero", at="inventory.yaml:4", key="hosts.here.port",
        fix=("between 1 and 65535, got 0", "22"),
        inventory="hosts:\n  here:\n    connection: local\n    port: 0\n"),
    Bad("inventory-port-too-big", at="inventory.yaml:4", key="hosts.here.port",
        fix=("between 1 and 65535, got 70000",),
        inventory="hosts:\n  here:\n    connection: local\n    port: 70000\n"),
    Bad("inventory-port-quoted", at="inventory.yaml:4", key="hosts.here.port",
        fix=("expected a whole number", "without quotes: port: 22"),
        inventory='hosts:\n  here:\n    connection: local\n    port: "22"\n'),
    Bad("inventory-connection-telnet", at="inventory.yaml:3", key="hosts.here.connection",
        fix=("must be one of ssh, local", "'telnet'"),
        inventory="hosts:\n  here:\n    connection: telnet\n"),
    Bad("inventory-slots-zero", at="inventory.yaml:4", key="hosts.here.slots",
        fix=("more than 0, got 0", "remove the line for no limit"),
        inventory="hosts:\n  here:\n    connection: local\n    slots: 0\n"),
    Bad("inventory-gpu-listed-twice", at="inventory.yaml:4", key="hosts.here.gpus",
        fix=("GPU id 0 is listed twice", "list each GPU once"),
        inventory="hosts:\n  here:\n    connection: local\n    gpus: [0, 0]\n"),
    Bad("inventory-capabilities-string", at="inventory.yaml:4",
        key="hosts.here.capabilities",
        fix=("expected a list", "capabilities: [python3]"),
        inventory="hosts:\n  here:\n    connection: local\n    capabilities: python3\n"),
    Bad("inventory-host-name-with-space", at="inventory.yaml:2", key="hosts['my host']",
        fix=("may only use letters", "rename it, e.g. my-host"),
        inventory="hosts:\n  my host:\n    connection: local\n"),
    Bad("inventory-known-hosts-none", at="inventory.yaml:4", key="hosts.here.known_hosts",
        fix=("host-key checking off", "remove the line"),
        inventory="hosts:\n  here:\n    connection: local\n    known_hosts: none\n"),
    Bad("inventory-missing-identity-file", at="inventory.yaml:2", key="defaults.identity_file",
        fix=("does not exist", "fix the path"),
        inventory=s("""
            defaults:
              identity_file: {tmp}/no-such-key
            hosts:
              here: {connection: local}
              there: {connection: local}
            """)),
    Bad("inventory-on-pause-stop", at="inventory.yaml:4", key="hosts.here.on_pause",
        fix=("suspend, drain", "'stop'"),
        inventory="hosts:\n  here:\n    connection: local\n    on_pause: stop\n"),
    Bad("inventory-max-pause-forever", at="inventory.yaml:4", key="hosts.here.max_pause",
        fix=("'forever'", "max_pause: 8h"),
        inventory="hosts:\n  here:\n    connection: local\n    max_pause: forever\n"),
    Bad("inventory-relative-ledger-dir", at="inventory.yaml:4", key="hosts.here.ledger_dir",
        fix=("absolute path", "ledger_dir: /tmp/dssh-ledger"),
        inventory="hosts:\n  here:\n    connection: local\n    ledger_dir: tmp/ledger\n"),
    Bad("inventory-is-a-list", at="inventory.yaml:1", key="(top level)",
        fix=("must be a mapping",),
        inventory="- here\n- there\n"),
    Bad("inventory-no-hosts", at="inventory.yaml:1", key="hosts",
        fix=("lists no hosts", "add at least one"),
        inventory="hosts: {}\n"),
    Bad("inventory-hosts-empty-value", at="inventory.yaml:2", key="hosts",
        fix=("lists no hosts",),
        inventory="defaults: {user: alice}\nhosts:\n"),
    Bad("inventory-host-is-a-bare-string", at="inventory.yaml:2", key="hosts.here",
        fix=("expected a mapping", 'here: {connection: "local"}'),
        inventory="hosts:\n  here: local\n"),
    Bad("inventory-duplicate-host", at="inventory.yaml:3", key="hosts.here",
        fix=("appears twice", "keep one"),
        inventory="hosts:\n  here: {connection: local}\n  here: {connection: local}\n"),
    Bad("inventory-yaml-tab", at="inventory.yaml:3", key="hosts.here",
        fix=("tab", "spaces"),
        inventory="hosts:\n  here:\n\tconnection: local\n"),
    # -- files and options on the command line --------------------------------------------------
    Bad("sweep-file-not-found", file="nope.yaml", key=None,
        fix=("sweep file not found", "check the path"), sweep_arg="nope.yaml"),
    Bad("sweep-file-is-a-directory", file="sub", key=None,
        fix=("is a directory", "sweep file inside it"), sweep_arg="sub",
        files={"sub/sweep.yaml": GOOD_SWEEP}),
    Bad("inventory-not-found", file="nope-inventory.yaml", key="-i/--inventory",
        fix=("inventory file not found", "check the path"),
        inventory_arg="nope-inventory.yaml"),
    Bad("unknown-hosts-option", file="inventory.yaml", key="--hosts",
        fix=("unknown host 'lab9'", "hosts in", "here", "check the spelling"),
        args=("--hosts", "here,lab9")),
    Bad("empty-hosts-option", key="--hosts", fix=("at least one host name",),
        args=("--hosts", ",")),
    Bad("bad-name-option", key="--name", fix=("letters, digits",),
        args=("--name", "nightly run")),
]

# Run again as a subprocess and without --dry-run: nothing may start.
WITHOUT_DRY_RUN = ["yaml-bad-indentation", "unknown-key-in-run", "cpus-quoted",
                   "name-with-space", "unknown-placeholder", "job-name-template-collapses",
                   "missing-run-file", "inventory-port-zero", "inventory-not-found",
                   "unknown-hosts-option", "bad-name-option", "sweep-file-not-found"]


def _write(tmp: Path, case: Bad) -> tuple[Path, Path]:
    (tmp / "sweep.yaml").write_text(case.sweep.replace("{tmp}", str(tmp))
                                    if case.sweep is not GOOD_SWEEP else case.sweep)
    (tmp / "inventory.yaml").write_text(case.inventory.replace("{tmp}", str(tmp)))
    for name, text in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)
    return tmp / case.sweep_arg, tmp / case.inventory_arg


def _argv(tmp: Path, case: Bad, *, dry_run: bool) -> list[str]:
    sweep, inventory = _write(tmp, case)
    argv = ["run", str(sweep), "-i", str(inventory), "--state", str(tmp / "state.db"),
            "--results", str(tmp / "results")]
    argv += [a.replace("{tmp}", str(tmp)) for a in case.args]
    return argv + (["--dry-run"] if dry_run else [])


def _check_message(tmp: Path, case: Bad, err: str) -> None:
    assert "Traceback" not in err, err
    assert err.startswith("dssh: error: "), err
    lines = err.strip().splitlines()
    assert len(lines) <= 4, f"an error is one or a few lines, got {len(lines)}:\n{err}"
    at_file = case.file or (case.at.split(":")[0] if case.at else None)
    if at_file:
        assert str(tmp / at_file) in err, f"the message must name {tmp / at_file}:\n{err}"
    if case.at:
        assert f"{tmp / case.at}" in err, f"the message must name {case.at}:\n{err}"
    if case.key:
        assert case.key in err, f"the message must name the key {case.key}:\n{err}"
    for words in case.fix:
        assert words.replace("{tmp}", str(tmp)) in err, f"missing {words!r} in:\n{err}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_with_a_clear_message(
        case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DSSH_INVENTORY", raising=False)
    try:
        rc = main(_argv(tmp_path, case, dry_run=True))
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, f"exit {rc}, expected 2:\n{err}"
    assert "nothing was started" not in out and not out.strip(), out
    _check_message(tmp_path, case, err)
    assert not (tmp_path / "state.db").exists()


def test_there_are_enough_distinct_bad_inputs() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30


def _subprocess_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSSH_", "XDG_"))}
    env.update(HOME=str(tmp / "home"), DSSH_PLAIN="1")
    (tmp / "home").mkdir()
    return env


def _run_cli(tmp: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distribute_ssh", *argv], capture_output=True,
                          text=True, cwd=tmp, env=_subprocess_env(tmp), timeout=60)


def _assert_nothing_started(tmp: Path) -> None:
    assert not (tmp / "state.db").exists(), "the state file was created"
    assert not (tmp / "results").exists(), "the results dir was created"
    assert not (tmp / "home" / ".dssh").exists(), "a workdir appeared on the (local) host"
    assert list((tmp / "home").iterdir()) == [], list((tmp / "home").iterdir())


@pytest.mark.parametrize("case", [c for c in CASES if c.id in WITHOUT_DRY_RUN],
                         ids=lambda c: c.id)
def test_nothing_starts_without_dry_run(case: Bad, tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, _argv(tmp_path, case, dry_run=False))
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr}"
    _check_message(tmp_path, case, proc.stderr)
    _assert_nothing_started(tmp_path)


def test_every_subprocess_case_exists() -> None:
    assert set(WITHOUT_DRY_RUN) <= {c.id for c in CASES}


NO_CAPABLE_HOST = next(c for c in CASES if c.id == "no-host-with-capabilities")
HOST_MATCHING = [c for c in CASES if c.id in ("no-host-with-capabilities",
                                              "more-gpus-than-any-host", "more-cpus-than-any-host")]


@pytest.mark.parametrize("case", HOST_MATCHING, ids=lambda c: c.id)
def test_no_capable_host_creates_nothing(case: Bad, tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, _argv(tmp_path, case, dry_run=False))
    assert proc.returncode == 2, proc.stderr
    _check_message(tmp_path, case, proc.stderr)
    _assert_nothing_started(tmp_path)


def test_no_capable_host_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    rc = main(_argv(tmp_path, NO_CAPABLE_HOST, dry_run=True))
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{tmp_path / 'sweep.yaml'}:2" in err, err


# -- the cases above fail for the reason they name --------------------------------------------

def test_the_good_files_the_cases_start_from_are_accepted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sweep.yaml").write_text(GOOD_SWEEP)
    (tmp_path / "inventory.yaml").write_text(GOOD_INVENTORY)
    rc = main(["run", str(tmp_path / "sweep.yaml"), "-i", str(tmp_path / "inventory.yaml"),
               "--state", str(tmp_path / "state.db"), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "nothing was started" in out


def test_a_type_error_and_a_bad_name_are_both_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = Bad("both", key=None, fix=(), sweep=s("""
        name: my sweep
        run:
          command: echo
          cpus: "4"
          retries: -1
        """))
    assert main(_argv(tmp_path, case, dry_run=True)) == 2
    err = capsys.readouterr().err
    f = tmp_path / "sweep.yaml"
    assert f"{f}:1: name: 'my sweep' is not a valid name" in err, err
    assert f"{f}:4: run.cpus: expected a whole number" in err, err
    assert f"{f}:5: run.retries: must be 0 or more" in err, err


def test_errors_in_several_places_are_listed_in_file_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = Bad("several", key=None, fix=(), inventory=s("""
        hosts:
          a:
            connection: local
            port: 0
          b:
            connection: local
            slots: 0
          c:
            connection: local
            colour: red
        """))
    assert main(_argv(tmp_path, case, dry_run=True)) == 2
    err = capsys.readouterr().err
    f = tmp_path / "inventory.yaml"
    at = [err.index(f"{f}:{n}:") for n in (4, 7, 10)]
    assert at == sorted(at), err

"""The sweep file: what to build, what to run, over which parameters (SPEC §3)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs
import yaml

from ..durations import parse_duration
from ..errors import ConfigError
from .yamlload import (
    ENV_NAME_RE,
    NAME_RE,
    Duration,
    EnvText,
    FieldValueError,
    Scalar,
    Source,
    dotted,
    parse_yaml,
    read_config_file,
    structure,
    yaml_key,
)

# What leaving a numeric key out means, for messages about a bad value.
_DEFAULTS = {
    "cpus": "remove the line to give each job all of the host's cpus",
    "gpus": "use 0 (the default) for none",
    "retries": "use 0 (the default) for no retries",
    "max_failures": "remove the line to never stop early",
}


def _name(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and (not NAME_RE.match(v) or v in (".", "..")):
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", v).strip("-.") or "my-sweep"
        raise FieldValueError(yaml_key(a), f"{v!r} is not a valid name: use only letters, digits, "
                                           f"'.', '_' and '-' (no spaces or slashes), e.g. "
                                           f"{yaml_key(a)}: {suggestion}")


def _non_negative(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v < 0:
        hint = _DEFAULTS.get(a.name, "use 0 or a positive whole number")
        raise FieldValueError(yaml_key(a), f"must be 0 or more, got {v}: {hint}")


def _positive(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v <= 0:
        hint = _DEFAULTS.get(a.name, "remove the line for the default")
        raise FieldValueError(yaml_key(a), f"must be at least 1, got {v}: give a whole number "
                                           f"of 1 or more, or {hint}")


def _duration(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            if parse_duration(v) <= 0:
                raise ValueError(f"must be longer than zero, got {v!r}")
        except ValueError as e:
            raise FieldValueError(yaml_key(a), f"{e}: write e.g. {yaml_key(a)}: 2h, or remove "
                                               "the line for no limit") from None


def _priority(inst: Any, a: attrs.Attribute, v: Any, template: bool = False) -> None:
    """A number; for run.priority also a template of parameters that gives one per job."""
    if v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                     and v == v and abs(v) != float("inf")):
        return
    if template and isinstance(v, str) and "{" in v:
        return  # checked per job, once the parameters are known (plan.expand)
    raise FieldValueError(yaml_key(a), f"{v!r} is not a number: write a number (jobs with a "
                                       "higher priority start first; 0 is the default)"
                          + (", or a template of parameters such as \"{duration}\""
                             if template else ""))


def _run_priority(inst: Any, a: attrs.Attribute, v: Any) -> None:
    _priority(inst, a, v, template=True)


def _capabilities(inst: Any, a: attrs.Attribute, v: Any) -> None:
    for c in v or ():
        if not isinstance(c, str) or not NAME_RE.match(c):
            raise FieldValueError(yaml_key(a), f"{c!r} is not a capability name: capabilities "
                                               "use letters, digits, '.', '_' and '-', e.g. "
                                               "requires: [python3, gpu]")


def _relative_inside(what: str):
    def check(inst: Any, a: attrs.Attribute, v: Any) -> None:
        if v is None:
            return
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or v in ("", "."):
            raise FieldValueError(yaml_key(a), f"{what} {v!r} must be a plain relative name "
                                               "inside the job's input/ (no '..', not "
                                               f"absolute), e.g. {what}: "
                                               f"{Path(v).name or 'input.cfg'}")

    return check


@attrs.frozen
class File:
    """A file (or directory) to copy to the host; ``as_`` renames it there."""

    path: str
    as_: str | None = attrs.field(default=None, metadata={"yaml_key": "as"},
                                  validator=_relative_inside("as"))

    @property
    def target(self) -> str:
        return self.as_ or Path(self.path.rstrip("/")).name


@attrs.frozen
class Build:
    command: str
    files: list[File] = attrs.Factory(list)


RUNTIMES = ("apptainer", "podman", "bwrap")


def _runtime(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v not in RUNTIMES:
        raise FieldValueError(yaml_key(a), f"must be one of {', '.join(RUNTIMES)}, got {v!r}: "
                                           "write e.g. runtime: bwrap")


def _mounts(inst: Any, a: attrs.Attribute, v: Any) -> None:
    for m in v:
        if not m.startswith("/") or ".." in Path(m).parts or m.rstrip("/") in (
                "", "/input", "/outputs", "/build") or "," in m or ":" in m:
            raise FieldValueError(yaml_key(a), f"{m!r} is not a mount: give absolute paths "
                                               "inside the image, other than /, /input, "
                                               "/outputs and /build, without ',' or ':', "
                                               "e.g. mounts: [/scratch]")


@attrs.frozen
class Container:
    """Run each job inside an image (SPEC §3): ``input/`` at /input, ``outputs/`` at
    /outputs, the build (if any) read-only at /build, a fresh empty dir per mount."""

    image: str
    runtime: str = attrs.field(default="apptainer", validator=_runtime)
    mounts: list[str] = attrs.field(factory=list, validator=_mounts)


MIGRATE_SIGNALS = ("TERM", "INT", "HUP", "USR1", "USR2", "QUIT")


def _signal(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and str(v).upper().removeprefix("SIG") not in MIGRATE_SIGNALS:
        raise FieldValueError(yaml_key(a), f"{v!r} is not a signal dssh sends to ask a job to "
                                           f"save its state: use one of "
                                           f"{', '.join(MIGRATE_SIGNALS)}, e.g. "
                                           f"{yaml_key(a)}: USR1")


@attrs.frozen
class Run:
    command: str
    files: list[File] = attrs.Factory(list)
    cpus: int | None = attrs.field(default=None, validator=_positive)
    gpus: int = attrs.field(default=0, validator=_non_negative)
    timeout: Duration | None = attrs.field(default=None, validator=_duration)
    retries: int = attrs.field(default=0, validator=_non_negative)
    # Numbers become text, as they do when read from a file.
    env: dict[str, EnvText] = attrs.field(
        factory=dict, converter=lambda d: {k: v if isinstance(v, str) or type(v) not in (
            int, float) else str(v) for k, v in d.items()} if isinstance(d, dict) else d)
    container: Container | None = None
    # Which jobs start first: a number, or a template of parameters that gives one per
    # job ("{duration}": longest first). Higher first; ties keep the sweep's order.
    priority: Scalar | None = attrs.field(default=None, validator=_run_priority)
    # Moving off a long pause (SPEC §6d): a job suspended this long gets migrate_signal,
    # migrate_grace to save its state into outputs/, and is run on another host with
    # that in input/checkpoint/.
    migrate_after: Duration | None = attrs.field(default=None, validator=_duration)
    migrate_signal: str | None = attrs.field(default=None, validator=_signal)
    migrate_grace: Duration | None = attrs.field(default=None, validator=_duration)

    @property
    def timeout_seconds(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout is not None else None


@attrs.frozen
class JobSpec:
    """An explicit job from the ``jobs:`` list."""

    name: str = attrs.field(validator=_name)
    params: dict[str, Scalar] = attrs.Factory(dict)
    files: list[File] = attrs.Factory(list)
    # sbatch options for this job on a Slurm cluster, over the sweep's (SPEC §10).
    slurm: dict[str, Scalar] | None = None
    priority: Scalar | None = attrs.field(default=None, validator=_priority)


@attrs.frozen
class Outputs:
    """Which files under a job's ``outputs/`` come home when it ends; the rest stays on
    its host until ``dssh pull`` fetches it or ``dssh clean`` removes it."""

    collect: list[str] = attrs.Factory(lambda: ["**"])
    exclude: list[str] = attrs.Factory(list)  # taken out of what collect matched


NOTIFY_ON = ("end", "failure", "first-failure")


def _notify_on(inst: Any, a: attrs.Attribute, v: Any) -> None:
    for w in v:
        if w not in NOTIFY_ON:
            raise FieldValueError(yaml_key(a), f"{w!r} is not an event: use end (the sweep "
                                               "ended), failure (each job that failed for "
                                               "good) or first-failure")


@attrs.frozen
class Notify:
    """A command run on the head when the sweep ends, or a job fails (``when``), with the
    summary as JSON on stdin and in DSSH_NOTIFY_* variables (docs/notify.md). The key
    is ``when``: YAML 1.1 reads ``on`` as true."""

    command: str | None = None
    when: list[str] = attrs.field(factory=lambda: ["end"], validator=_notify_on)
    # The original tool's meta.matrix: a Matrix user; sent through $DSSH_NOTIFY_MATRIX.
    matrix: str | None = None


@attrs.frozen
class Sweep:
    """One batch of jobs, as a sweep file describes it."""

    name: str = attrs.field(validator=_name)
    run: Run
    namespace: str = attrs.field(default="default", validator=_name)
    requires: list[str] = attrs.field(factory=list, validator=_capabilities)
    build: Build | None = None
    slurm: dict[str, Scalar] | None = None
    params: dict[str, list[Scalar]] = attrs.Factory(dict)
    # Parameters that vary together (one job per position, not their product).
    zip: list[list[str]] = attrs.Factory(list)
    # Combinations of the product to leave out: each entry drops the jobs matching all of it.
    exclude: list[dict[str, Scalar]] = attrs.Factory(list)
    job_name: str | None = None
    jobs: list[JobSpec] = attrs.Factory(list)
    outputs: Outputs = attrs.Factory(Outputs)
    notify: Notify | None = None
    # Stop starting jobs once this many have failed for good in a run (running ones finish).
    max_failures: int | None = attrs.field(default=None, validator=_positive)
    # Where relative paths are resolved; not part of the file itself.
    base_dir: str = attrs.field(default=".", metadata={"internal": True}, eq=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def needs(self) -> list[str]:
        """The capabilities a host must list: ``requires``, and a container's runtime."""
        c = self.run.container
        return [*self.requires, *([c.runtime] if c and c.runtime not in self.requires else [])]

    def to_yaml(self) -> str:
        """This sweep as a sweep file: ``Sweep.from_yaml(s.to_yaml()) == s``."""
        from .dump import to_yaml

        return to_yaml(self)

    @classmethod
    def from_yaml(cls, text: str, filename: str = "<sweep>",
                  base_dir: str | os.PathLike | None = None) -> Sweep:
        """A sweep from a sweep file's text, validated as ``dssh run`` would (files named
        in it are looked for in ``base_dir``, default the current directory)."""
        return parse_sweep(text, filename, base_dir if base_dir is not None else Path.cwd())


def _structure_file_entry(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


def _normalise(data: dict) -> dict:
    """Accept the short spellings: ``files: [a.txt]``, ``params: {x: 1}``, a null ``jobs:``."""
    def files(lst: Any) -> Any:
        return [_structure_file_entry(f) for f in lst] if isinstance(lst, list) else lst

    for section in ("build", "run"):
        sec = data.get(section)
        if isinstance(sec, dict) and "files" in sec:
            sec["files"] = files(sec["files"])
    if isinstance(data.get("jobs"), list):
        for j in data["jobs"]:
            if isinstance(j, dict) and "files" in j:
                j["files"] = files(j["files"])
    params = data.get("params")
    if isinstance(params, dict):
        for k, v in list(params.items()):
            if not isinstance(v, list | dict) and v is not None:
                params[k] = [v]
    for key in ("jobs", "params", "requires", "zip", "exclude"):
        if key in data and data[key] is None:
            del data[key]
    return data


def _number(v: Any) -> bool:
    return type(v) in (int, float)


# The most jobs a sweep may make (plan.MAX_JOBS); one range or linspace may make them all.
MAX_VALUES = 1_000_000


def expand_ranges(data: dict, source: Source) -> dict:
    """``{start, stop, step}`` and ``{linspace: [a, b, n]}`` parameter values, as lists."""
    params = data.get("params")
    if not isinstance(params, dict):
        return data
    for k, v in list(params.items()):
        if not isinstance(v, dict):
            continue
        where = f"{source.where(('params', k))}: params.{k}"
        if set(v) == {"linspace"}:
            lin = v["linspace"]
            if not (isinstance(lin, list) and len(lin) == 3 and all(map(_number, lin[:2]))
                    and type(lin[2]) is int and lin[2] >= 1):
                raise ConfigError(f"{where}: linspace takes [first, last, count], e.g. "
                                  f"{k}: {{linspace: [0.0, 1.0, 11]}} (count a whole number of "
                                  f"1 or more), got {lin!r}", path=source.filename,
                                  line=source.line(("params", k)), key=f"params.{k}")
            a, b, n = lin
            if n > MAX_VALUES:
                raise ConfigError(f"{where}: this linspace has {n} values, more than a whole "
                                  f"sweep's {MAX_VALUES} jobs: use fewer, or split the sweep",
                                  path=source.filename,
                                  line=source.line(("params", k)), key=f"params.{k}")
            step = (b - a) / (n - 1) if n > 1 else 0
            params[k] = [round(a + i * step, 12) for i in range(n)]
            if n > 1:
                params[k][-1] = b
        elif set(v) in ({"start", "stop", "step"}, {"start", "stop"}):
            a, b, step = v["start"], v["stop"], v.get("step", 1)
            if not (_number(a) and _number(b) and _number(step)) or step <= 0 or b < a:
                raise ConfigError(f"{where}: a range is {{start, stop, step}} with numbers, "
                                  "step more than 0 and stop not below start, e.g. "
                                  f"{k}: {{start: 100, stop: 1000, step: 300}}, got {v!r}",
                                  path=source.filename, line=source.line(("params", k)),
                                  key=f"params.{k}")
            n = int((b - a) / step + 1e-9) + 1
            if n > MAX_VALUES:
                raise ConfigError(f"{where}: this range has {n} values, more than a whole "
                                  f"sweep's {MAX_VALUES} jobs: use a larger step, or split "
                                  "the sweep", path=source.filename,
                                  line=source.line(("params", k)), key=f"params.{k}")
            ints = all(type(x) is int for x in (a, b, step))
            params[k] = [a + i * step if ints else round(a + i * step, 12) for i in range(n)]
        else:
            raise ConfigError(f"{where}: a parameter is a list of values, a range "
                              f"{{start, stop, step}} or {{linspace: [first, last, count]}}; "
                              f"got the keys {', '.join(map(str, v))}", path=source.filename,
                              line=source.line(("params", k)), key=f"params.{k}")
    return data


def is_original(data: Any) -> bool:
    """Is this a job file of the original distribute (SPEC §3.1)? (Here, not in
    .original: that module is loaded only for such files.)"""
    return isinstance(data, dict) and "meta" in data and ("python" in data
                                                          or "apptainer" in data)


def parse_sweep(text: str, filename: str, base_dir: str | os.PathLike | None = None) -> Sweep:
    """Parse and fully validate a sweep file's text. Raises ConfigError."""
    data, source = parse_yaml(text, filename)
    if data is None:
        raise ConfigError(
            f"{filename}:1: name, run: the sweep file is empty: a sweep needs at least "
            "'name:' and 'run: {command: ...}' (print a commented example with: dssh template)",
            path=filename, line=1, key="name")
    if is_original(data):  # a job file of the original distribute (SPEC §3.1)
        from .original import parse_original

        base = str(base_dir if base_dir is not None else Path(filename).resolve().parent)
        sweep = attrs.evolve(parse_original(data, source, base), base_dir=base)
        validate_sweep(sweep, source)
        return sweep
    if isinstance(data, dict):
        data = expand_ranges(_normalise(data), source)
    sweep = structure(data, Sweep, source, "the sweep file")
    base = str(base_dir if base_dir is not None else Path(filename).resolve().parent)
    sweep = attrs.evolve(sweep, base_dir=base)
    from ..redact import register_env

    register_env(sweep.run.env)
    validate_sweep(sweep, source)
    return sweep


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read a sweep file; relative paths in it are relative to its directory."""
    p = Path(path)
    text = read_config_file(p, "sweep file", "sweep.yaml",
                            "check the path, or start one with: dssh template > sweep.yaml",
                            key="SWEEP")
    return parse_sweep(text, str(p), p.resolve().parent)


_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def validate_sweep(sweep: Sweep, source: Source | None = None) -> None:
    """Checks that need more than types: files exist, placeholders known, names unique."""
    from ..plan import PlanError, expand

    fname = source.filename if source else f"sweep {sweep.name}"
    msgs: list[tuple[int, str]] = []
    keys: list[str] = []

    def add(path: tuple, text: str) -> None:
        line = source.line(path) if source else 0
        head = f"{fname}:{line}" if source else fname
        msgs.append((line, f"{head}: {dotted(path)}: {text}"))
        keys.append(dotted(path))

    base = Path(sweep.base_dir)

    def check_files(files: list[File], path: tuple, what: str, where_to: str) -> None:
        targets: dict[str, int] = {}
        for i, f in enumerate(files):
            if "{" in f.path:
                continue  # chosen per job; checked when the job is expanded
            p = base / os.path.expanduser(f.path)
            from ..plan import escape_problem

            if p.exists() and (escapes := escape_problem(base, f.path)):
                add(path + (i,), escapes)
            if not p.exists():
                add(path + (i,), f"file {f.path!r} not found (looked in {base}): fix the path "
                                 "(relative paths start at the sweep file's directory) or "
                                 "create the file")
            if f.target in targets:
                j = targets[f.target]
                add(path + (i,), f"two {what} files named {f.target!r}: {f.path!r} and "
                                 f"{files[j].path!r} ({dotted(path + (j,))}) would both be "
                                 f"{where_to}{f.target}: give one of them another name with "
                                 f"'as:', e.g. {{path: {f.path}, as: other-{f.target}}}")
            targets.setdefault(f.target, i)

    if sweep.build:
        check_files(sweep.build.files, ("build", "files"), "build", "the build dir's ")
        if not sweep.build.command.strip():
            add(("build", "command"), "is empty: give the command that builds the solver "
                                      "(e.g. command: make), or remove 'build:'")
    check_files(sweep.run.files, ("run", "files"), "input", "input/")
    for j, job in enumerate(sweep.jobs):
        check_files(job.files, ("jobs", j, "files"), "input", "input/")
        for k in job.params:
            if not _PARAM_RE.match(str(k)):
                add(("jobs", j, "params", k), f"parameter name {k!r} must start with a letter "
                                              "or '_' and use only letters, digits and '_'")
    if not sweep.run.command.strip():
        add(("run", "command"), "is empty: give the command each job runs, e.g. "
                                "command: \"python3 solve.py {x}\"")
    c = sweep.run.container
    if c is not None:
        img = base / os.path.expanduser(c.image)
        if not img.exists():
            add(("run", "container", "image"), f"image {c.image!r} not found (looked in "
                                               f"{base}): give the path of a .sif (apptainer) "
                                               "or of a root filesystem dir or .tar/.tar.gz "
                                               "(bwrap, podman)")
        elif c.runtime != "apptainer" and not (img.is_dir() or img.name.endswith(
                (".tar", ".tar.gz", ".tgz"))):
            add(("run", "container", "image"), f"{c.runtime} runs a root filesystem: "
                                               f"{c.image!r} is neither a dir nor a "
                                               ".tar/.tar.gz of one")
    for k in sweep.run.env:
        if not ENV_NAME_RE.match(str(k)):
            add(("run", "env", k), f"{k!r} is not an environment variable name: use letters, "
                                   "digits and '_', not starting with a digit")
    for k, values in sweep.params.items():
        if not _PARAM_RE.match(str(k)):
            fixed = re.sub(r"\W", "_", str(k))
            fixed = fixed if _PARAM_RE.match(fixed) else f"p{fixed}"
            add(("params", k), f"parameter name {k!r} must start with a letter or '_' and use "
                               f"only letters, digits and '_' (it becomes {{{k}}} in commands "
                               f"and $DSSH_PARAM_...): rename it, e.g. {fixed}")
        elif not values:
            add(("params", k), "has no values: give at least one, e.g. "
                               f"{k}: [1, 2], or remove it")
    grouped: dict[str, int] = {}
    for i, group in enumerate(sweep.zip):
        for name in group:
            if name not in sweep.params:
                add(("zip", i), f"{name!r} is not a parameter (params: "
                                f"{', '.join(sweep.params) or 'none'}): zip lists parameters "
                                "that vary together, e.g. zip: [[mesh, mesh_file]]")
            elif name in grouped:
                add(("zip", i), f"{name!r} is already in zip group {grouped[name]}: a parameter "
                                "varies with one group only; merge the groups")
            grouped.setdefault(name, i)
        lengths = {n: len(sweep.params[n]) for n in group if n in sweep.params}
        if len(group) < 2:
            add(("zip", i), "a zip group names at least two parameters, e.g. [x, y]")
        elif len(set(lengths.values())) > 1:
            add(("zip", i), "parameters that vary together need as many values each, got "
                            + ", ".join(f"{n}: {c}" for n, c in lengths.items()))
    for i, entry in enumerate(sweep.exclude):
        for name in entry:
            if name not in sweep.params:
                add(("exclude", i, name), f"{name!r} is not a parameter (params: "
                                          f"{', '.join(sweep.params) or 'none'}): an exclude "
                                          "entry names parameter values, e.g. exclude: "
                                          "[{mesh: fine, re: 100}]")
        if not entry:
            add(("exclude", i), "an empty exclude entry would drop every job: name the "
                                "values to leave out, e.g. {mesh: fine}")
    nul = "holds a NUL byte (\\0), which no command line or environment can carry: remove it"
    for k, values in sweep.params.items():
        for v in values if isinstance(values, list) else ():
            if isinstance(v, str) and "\0" in v:
                add(("params", k), nul)
                break
    for j, job in enumerate(sweep.jobs):
        for k, v in job.params.items():
            if isinstance(v, str) and "\0" in v:
                add(("jobs", j, "params", k), nul)
    for k, v in sweep.run.env.items():
        if isinstance(v, str) and "\0" in v:
            add(("run", "env", k), nul)
    from ..slurm_options import option_problem

    for where, block in [(("slurm",), sweep.slurm)] + [
            (("jobs", j, "slurm"), job.slurm) for j, job in enumerate(sweep.jobs)]:
        for k, v in (block or {}).items():
            problem = option_problem(k, v)
            if problem:
                add(where + (k,), problem)
    _warn_nested_shells(sweep, source, fname)
    _warn_yaml_numbers(sweep, source, fname)
    if msgs:
        order = sorted(range(len(msgs)), key=lambda i: msgs[i][0])
        raise ConfigError([msgs[i][1] for i in order], path=fname,
                          line=msgs[order[0]][0] or None, key=keys[order[0]])
    try:
        expand(sweep)
    except PlanError as e:
        line = source.line(e.path) if source else None
        head = f"{fname}:{line}" if source else fname
        raise ConfigError(f"{head}: {e.message}", path=fname, line=line,
                          key=dotted(e.path)) from None


# A placeholder inside the quoted script of a second shell: sh -c '... {p} ...'.
_NESTED = re.compile(r"(?:\b(?:sh|bash|dash|zsh|ksh|su)\s+(?:-[a-z]+\s+)*-[a-z]*c\s+"
                     r"|\bssh\s+(?:-\S+\s+)*\S+\s+|\beval\s+)(['\"])[^'\"]*?"
                     r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _warn_nested_shells(sweep: Sweep, source: Source | None, fname: str) -> None:
    """dssh quotes a value for the shell that runs the command; a second shell inside it
    (sh -c '...', ssh host '...', eval) parses the value again. Said, with the fix."""
    import sys

    for m in _NESTED.finditer(sweep.run.command):
        name = m.group(2)
        if name not in sweep.params and not any(name in j.params for j in sweep.jobs):
            continue
        line = source.line(("run", "command")) if source else 0
        where = f"{fname}:{line}" if source else fname
        print(f"dssh: warning: {where}: run.command: {{{name}}} is inside the script of a "
              "second shell (sh -c '...', ssh, eval): dssh quotes the value for the first "
              "shell only, and the second one parses it again. Use the environment there: "
              f"\"$DSSH_PARAM_{name.upper()}\"", file=sys.stderr)


# YAML 1.1 reads these unquoted words as numbers or booleans: 12:30:00 is 45000, 0x1F is
# 31, 1_000 is 1000, yes and off are true and false.
_SURPRISING = re.compile(r"^[-+]?(?:\d[\d_]*(?::[0-5]?\d)+(?:\.\d*)?|0[xob][0-9a-fA-F_]+|"
                         r"\d+_[\d_]*(?:\.\d*)?)$|^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|"
                         r"off|Off|OFF)$")


def _warn_yaml_numbers(sweep: Sweep, source: Source | None, fname: str) -> None:
    """A parameter value that YAML turned into another value than the text written (it
    reaches the job as the number): said, with the fix (quote it)."""
    import sys

    if source is None:
        return
    from ..plan import value_text

    # Only values written in the file can need it, so look at the nodes written under each
    # parameter (one lookup per parameter), not at each value: a range or linspace of 100000
    # values has none, and a list of n literals n, whatever the number of jobs.
    for k, values in sweep.params.items():
        if not isinstance(values, list):
            continue
        nodes = source.items(("params", k))
        for i in sorted(nodes):
            node = nodes[i]
            if not 0 <= i < len(values) or not isinstance(node, yaml.ScalarNode):
                continue
            raw, v = node.value, values[i]
            if isinstance(v, str) or not _SURPRISING.match(raw):
                continue
            print(f"dssh: warning: {fname}:{source.line(('params', k, i))}: params.{k}: "
                  f"{raw} is read by YAML as {value_text(v)}, which is what the jobs get: "
                  f"write \"{raw}\" (quoted) to keep the text", file=sys.stderr)


# The Python API calls an explicit job a Job.
Job = JobSpec

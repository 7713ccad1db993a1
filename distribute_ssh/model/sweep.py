"""The sweep file: what to build, what to run, over which parameters (SPEC §3)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import attrs

from ..durations import parse_duration
from ..errors import ConfigError
from .yamlload import Duration, EnvText, FieldValueError, Scalar, Source, parse_yaml, structure

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def _name(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and (not NAME_RE.match(v) or v in (".", "..")):
        raise FieldValueError(a.name, f"{v!r} is not a valid name: use only letters, digits, "
                                      "'.', '_' and '-' (no spaces or slashes)")


def _non_negative(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v < 0:
        raise FieldValueError(a.name, f"must be 0 or more, got {v}")


def _positive(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None and v <= 0:
        raise FieldValueError(a.name, f"must be at least 1, got {v}")


def _duration(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if v is not None:
        try:
            if parse_duration(v) <= 0:
                raise ValueError(f"must be longer than zero, got {v!r}")
        except ValueError as e:
            raise FieldValueError(a.name, str(e)) from None


def _relative_inside(what: str):
    def check(inst: Any, a: attrs.Attribute, v: Any) -> None:
        if v is None:
            return
        p = Path(v)
        if p.is_absolute() or ".." in p.parts or v in ("", "."):
            raise FieldValueError(a.name, f"{what} {v!r} must be a plain relative name "
                                          "inside the job's input/ (no '..', not absolute)")

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


@attrs.frozen
class Container:
    image: str
    runtime: str = "apptainer"
    mounts: list[str] = attrs.Factory(list)


@attrs.frozen
class Run:
    command: str
    files: list[File] = attrs.Factory(list)
    cpus: int | None = attrs.field(default=None, validator=_positive)
    gpus: int = attrs.field(default=0, validator=_non_negative)
    timeout: Duration | None = attrs.field(default=None, validator=_duration)
    retries: int = attrs.field(default=0, validator=_non_negative)
    env: dict[str, EnvText] = attrs.Factory(dict)
    container: Container | None = None

    @property
    def timeout_seconds(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout is not None else None


@attrs.frozen
class JobSpec:
    """An explicit job from the ``jobs:`` list."""

    name: str = attrs.field(validator=_name)
    params: dict[str, Scalar] = attrs.Factory(dict)
    files: list[File] = attrs.Factory(list)


@attrs.frozen
class Outputs:
    collect: list[str] = attrs.Factory(lambda: ["**"])


@attrs.frozen
class Sweep:
    """One batch of jobs, as a sweep file describes it."""

    name: str = attrs.field(validator=_name)
    run: Run
    namespace: str = attrs.field(default="default", validator=_name)
    requires: list[str] = attrs.Factory(list)
    build: Build | None = None
    slurm: dict[str, Scalar] | None = None
    params: dict[str, list[Scalar]] = attrs.Factory(dict)
    job_name: str | None = None
    jobs: list[JobSpec] = attrs.Factory(list)
    outputs: Outputs = attrs.Factory(Outputs)
    # Where relative paths are resolved; not part of the file itself.
    base_dir: str = attrs.field(default=".", metadata={"internal": True}, eq=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


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
    for key in ("jobs", "params", "requires"):
        if key in data and data[key] is None:
            del data[key]
    return data


def parse_sweep(text: str, filename: str, base_dir: str | os.PathLike | None = None) -> Sweep:
    """Parse and fully validate a sweep file's text. Raises ConfigError."""
    data, source = parse_yaml(text, filename)
    if isinstance(data, dict) and "meta" in data and ("python" in data or "apptainer" in data):
        raise ConfigError(
            f"{filename}:1: this is a job file of the original 'distribute' tool (it has 'meta:'); "
            "this version of dssh reads only its own sweep format so far: write a dssh sweep "
            "(dssh template native)", path=filename)
    if isinstance(data, dict):
        data = _normalise(data)
    sweep = structure(data, Sweep, source, "the sweep file")
    base = str(base_dir if base_dir is not None else Path(filename).resolve().parent)
    sweep = attrs.evolve(sweep, base_dir=base)
    validate_sweep(sweep, source)
    return sweep


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read a sweep file; relative paths in it are relative to its directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: sweep file not found: check the path", path=str(p)) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory: give the sweep file inside it "
                          "(e.g. sweep.yaml)", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the sweep file: {e}", path=str(p)) from None
    return parse_sweep(text, str(p), p.resolve().parent)


def validate_sweep(sweep: Sweep, source: Source | None = None) -> None:
    """Checks that need more than types: files exist, placeholders known, names unique."""
    from ..plan import PlanError, expand

    fname = source.filename if source else f"sweep {sweep.name}"

    def where(*path: Any) -> str:
        return source.where(path) if source else fname

    msgs: list[str] = []
    base = Path(sweep.base_dir)

    def check_files(files: list[File], path: tuple) -> None:
        for i, f in enumerate(files):
            if "{" in f.path:
                continue  # chosen per job; checked when the job is expanded
            p = base / os.path.expanduser(f.path)
            if not p.exists():
                msgs.append(f"{where(*path, i)}: {'.'.join(map(str, path))}[{i}]: file "
                            f"{f.path!r} not found (looked in {base}): relative paths are "
                            "relative to the sweep file's directory")

    if sweep.build:
        check_files(sweep.build.files, ("build", "files"))
        if not sweep.build.command.strip():
            msgs.append(f"{where('build', 'command')}: build.command is empty: give the command "
                        "that builds the solver, or remove 'build:'")
    check_files(sweep.run.files, ("run", "files"))
    for j, job in enumerate(sweep.jobs):
        check_files(job.files, ("jobs", j, "files"))
    if not sweep.run.command.strip():
        msgs.append(f"{where('run', 'command')}: run.command is empty: give the command each "
                    "job runs")
    if sweep.run.container is not None:
        msgs.append(f"{where('run', 'container')}: run.container: containers are not supported "
                    "by this version of dssh yet: remove 'container:' and run the solver directly")
    for k, values in sweep.params.items():
        if not NAME_RE.match(k) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            msgs.append(f"{where('params', k)}: parameter name {k!r} must start with a letter "
                        "and use only letters, digits and '_'")
        elif not values:
            msgs.append(f"{where('params', k)}: params.{k} has no values: give at least one "
                        "or remove it")
    if msgs:
        raise ConfigError(msgs, path=fname)
    try:
        expand(sweep)
    except PlanError as e:
        raise ConfigError(f"{where(*e.path)}: {e.message}", path=fname, key=".".join(
            map(str, e.path))) from None


# The Python API calls an explicit job a Job.
Job = JobSpec

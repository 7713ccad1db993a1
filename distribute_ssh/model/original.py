"""Job files of the original ``distribute`` tool (SPEC §3.1), read as they are and turned
into a dssh sweep with the original's semantics.

Python mode: the build runs ``python3 BUILD_FILE`` in the build dir, whose ``input/`` and
``initial_files/`` hold the initialize files. Each job runs ``python3 FILE CPUS`` in its
own dir, which holds a copy of what the build left, ``input/`` (the initialize files and
the job's own, under their aliases) and an empty ``distribute_save/``: what the job saves
there is what is collected.

Apptainer mode: the ``.sif`` is uploaded once per host (it is the build's only file) and
each job runs ``apptainer run --app distribute --bind IN:/input:rw,SAVE:/distribute_save:rw
[,MNT:MOUNT:rw...] IMAGE CPUS``, with a fresh empty dir for every required mount.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError
from .sweep import Build, File, JobSpec, Notify, Run, Sweep, _name, is_original
from .yamlload import NAME_RE, FieldValueError, Source, dotted, structure, yaml_key

__all__ = ["is_original", "parse_original"]

SAVE = "distribute_save"


def _namespace(inst: Any, a: attrs.Attribute, v: Any) -> None:
    if not NAME_RE.match(v) or v in (".", ".."):
        raise FieldValueError(yaml_key(a), f"{v!r} is not a valid namespace: the original "
                              "tool and dssh both use it as a directory name, so no '/' or "
                              "spaces: use letters, digits, '.', '_' and '-'")


@attrs.frozen
class PathSpec:
    path: str


@attrs.frozen
class RequiredFile:
    path: str
    alias: str | None = None


@attrs.frozen
class Meta:
    batch_name: str = attrs.field(validator=_name)
    namespace: str = attrs.field(validator=_namespace)
    capabilities: list[str] = attrs.Factory(list)
    matrix: str | None = None  # a Matrix user to notify: becomes notify.matrix


@attrs.frozen
class PythonInit:
    build_file: PathSpec
    required_files: list[RequiredFile] = attrs.Factory(list)


@attrs.frozen
class PythonJob:
    name: str = attrs.field(validator=_name)
    file: PathSpec
    required_files: list[RequiredFile] = attrs.Factory(list)
    slurm: dict[str, Any] | None = None


@attrs.frozen
class PythonSection:
    initialize: PythonInit
    jobs: list[PythonJob] = attrs.Factory(list)


@attrs.frozen
class ApptainerInit:
    sif: PathSpec
    required_files: list[RequiredFile] = attrs.Factory(list)
    required_mounts: list[str] = attrs.Factory(list)


@attrs.frozen
class ApptainerJob:
    name: str = attrs.field(validator=_name)
    required_files: list[RequiredFile] = attrs.Factory(list)
    slurm: dict[str, Any] | None = None


@attrs.frozen
class ApptainerSection:
    initialize: ApptainerInit
    jobs: list[ApptainerJob] = attrs.Factory(list)


@attrs.frozen
class OriginalFile:
    meta: Meta
    python: PythonSection | None = None
    apptainer: ApptainerSection | None = None
    slurm: dict[str, Any] | None = None


def _normalise(data: Any) -> Any:
    """The original's spellings: a path as ``x`` or ``{path: x}``; ``~`` for an empty list
    or an absent value."""
    if not isinstance(data, dict):
        return data

    def path(v: Any) -> Any:
        return {"path": v} if isinstance(v, str) else v

    def files(v: Any) -> Any:
        if v is None:
            return []
        return [path(f) for f in v] if isinstance(v, list) else v

    def drop_nulls(d: dict) -> dict:
        return {k: v for k, v in d.items() if v is not None}

    out = drop_nulls(dict(data))
    if isinstance(out.get("meta"), dict):
        out["meta"] = drop_nulls(out["meta"])
        if out["meta"].get("capabilities") is None:
            out["meta"].pop("capabilities", None)
    for mode, key in (("python", "build_file"), ("apptainer", "sif")):
        sec = out.get(mode)
        if not isinstance(sec, dict):
            continue
        sec = out[mode] = drop_nulls(dict(sec))
        init = sec.get("initialize")
        if isinstance(init, dict):
            init = sec["initialize"] = drop_nulls(dict(init))
            if key in init:
                init[key] = path(init[key])
            if "required_files" in init:
                init["required_files"] = files(init["required_files"])
            if "required_mounts" in init and init["required_mounts"] is None:
                init["required_mounts"] = []
        jobs = sec.get("jobs")
        if jobs is None:
            sec.pop("jobs", None)
        elif isinstance(jobs, list):
            sec["jobs"] = [_job(j, path, files, drop_nulls) for j in jobs]
    return out


def _job(j: Any, path: Any, files: Any, drop_nulls: Any) -> Any:
    if not isinstance(j, dict):
        return j
    j = drop_nulls(dict(j))
    if "file" in j:
        j["file"] = path(j["file"])
    if "required_files" in j:
        j["required_files"] = files(j["required_files"])
    return j


def _target(f: RequiredFile) -> str:
    return f.alias or Path(f.path.rstrip("/")).name


def _files(fs: list[RequiredFile]) -> list[File]:
    return [File(f.path, as_=f.alias) if f.alias else File(f.path) for f in fs]


# The run command is a template (SPEC §3): literal braces are doubled, and the job's
# values come from the environment dssh gives every job.
_COPY_BUILD = (
    "# what the build left (not dssh's control dir, the build's input/ or save dir)\n"
    'for f in "$DSSH_BUILD"/* "$DSSH_BUILD"/.[!.]*; do\n'
    '  [ -e "$f" ] || continue\n'
    '  case ${{f##*/}} in .dssh|input|outputs|' + SAVE + ') continue ;; esac\n'
    '  cp -a "$f" .\n'
    'done\n')


def to_sweep(orig: OriginalFile, source: Source | None = None) -> Sweep:
    meta = orig.meta
    if orig.python is not None and orig.apptainer is not None:
        where = source.where(("apptainer",)) if source else "the job file"
        raise ConfigError(f"{where}: apptainer: a job file of the original tool has either "
                          "'python:' or 'apptainer:', not both: split it into two files, "
                          "one per mode", path=source.filename if source else None,
                          line=source.line(("apptainer",)) if source else None,
                          key="apptainer")
    if orig.python is not None:
        py = orig.python
        init = py.initialize
        build_name = Path(init.build_file.path).name
        names = [_target(f) for f in init.required_files]
        moves = "".join(f"cp -p {shlex.quote(n)} initial_files/ && mv {shlex.quote(n)} input/ "
                        "&& " for n in names)
        build = Build(
            command=(f"mkdir -p input initial_files {SAVE} && {moves}"
                     f'exec "${{{{DSSH_PYTHON:-python3}}}}" {shlex.quote(build_name)}'),
            files=[File(init.build_file.path), *_files(init.required_files)])
        command = ("set -e\n" + _COPY_BUILD
                   + f"rm -rf {SAVE} && ln -s outputs {SAVE}  # what is saved is collected\n"
                   + 'mv "input/$DSSH_PARAM_SCRIPT" . 2>/dev/null || true\n'
                   + 'exec "${{DSSH_PYTHON:-python3}}" "./$DSSH_PARAM_SCRIPT" "$DSSH_CPUS"\n')
        jobs = []
        for j in py.jobs:
            script = Path(j.file.path).name
            jobs.append(JobSpec(name=j.name, params={"script": script},
                                files=[*_files(j.required_files), File(j.file.path)],
                                slurm=j.slurm))
        run = Run(command=command, files=_files(init.required_files))
        requires = list(meta.capabilities)
    else:
        ap = orig.apptainer
        assert ap is not None
        init = ap.initialize
        image = Path(init.sif.path).name
        build = Build(command=f"test -f {shlex.quote(image)}",
                      files=[File(init.sif.path)])
        lines = ['binds="$PWD/input:/input:rw,$PWD/outputs:/' + SAVE + ':rw"\n']
        for i, m in enumerate(init.required_mounts):
            lines.append(f'mkdir -p mounts/{i} && binds="$binds,$PWD/mounts/{i}:'
                         + m.replace("{", "{{").replace("}", "}}").replace('"', '\\"')
                         + ':rw"\n')
        command = ("set -e\n" + "".join(lines)
                   + 'exec apptainer run --app distribute --bind "$binds" '
                     f'"$DSSH_BUILD"/{shlex.quote(image)} "$DSSH_CPUS"\n')
        jobs = [JobSpec(name=j.name, files=_files(j.required_files), slurm=j.slurm)
                for j in ap.jobs]
        run = Run(command=command, files=_files(init.required_files))
        requires = list(meta.capabilities)
        if "apptainer" not in requires:
            requires.append("apptainer")
    return Sweep(name=meta.batch_name, namespace=meta.namespace, requires=requires,
                 build=build, run=run, jobs=jobs, slurm=orig.slurm,
                 notify=Notify(matrix=meta.matrix) if meta.matrix else None)


def _check_paths(orig: OriginalFile, source: Source, base: str) -> None:
    """Every file the job file names must exist: said with the job file's own keys."""
    import os

    wanted: list[tuple[tuple, str]] = []
    for mode in ("python", "apptainer"):
        sec = getattr(orig, mode)
        if sec is None:
            continue
        init = sec.initialize
        first = ("build_file", init.build_file.path) if mode == "python" else \
            ("sif", init.sif.path)
        wanted.append(((mode, "initialize", first[0], "path"), first[1]))
        for i, f in enumerate(init.required_files):
            wanted.append(((mode, "initialize", "required_files", i, "path"), f.path))
        for j, job in enumerate(sec.jobs):
            if mode == "python":
                wanted.append(((mode, "jobs", j, "file", "path"), job.file.path))
            for i, f in enumerate(job.required_files):
                wanted.append(((mode, "jobs", j, "required_files", i, "path"), f.path))
    msgs, keys = [], []
    for path, p in wanted:
        if not (Path(base) / os.path.expanduser(p)).exists():
            msgs.append(f"{source.where(path)}: {dotted(path)}: file {p!r} not found (looked "
                        f"in {base}): fix the path (relative paths start at the job file's "
                        "directory) or create the file")
            keys.append(dotted(path))
    if msgs:
        raise ConfigError(msgs, path=source.filename, line=source.line(
            wanted[[dotted(w[0]) for w in wanted].index(keys[0])][0]), key=keys[0])


_KNOWN: dict[str, Any] = {
    "meta": {"batch_name": None, "namespace": None, "capabilities": None, "matrix": None},
    "python": {"initialize": {"build_file": None, "required_files": None},
               "jobs": {"name": None, "file": None, "required_files": None, "slurm": None}},
    "apptainer": {"initialize": {"sif": None, "required_files": None, "required_mounts": None},
                  "jobs": {"name": None, "required_files": None, "slurm": None}},
    "slurm": None,
}


def _drop_unknown(data: Any, known: Any, path: tuple, source: Source,
                  notes: list[str]) -> Any:
    """The original tool ignored keys it did not know: so does dssh, saying so."""
    if not isinstance(known, dict) or not isinstance(data, dict):
        if isinstance(known, dict) and isinstance(data, list):  # a list of jobs
            return [_drop_unknown(d, known, path + (i,), source, notes)
                    for i, d in enumerate(data)]
        return data
    out = {}
    for k, v in data.items():
        if k not in known:
            notes.append(f"{source.where(path + (k,))}: {dotted(path + (k,))}: not a key of "
                         "the original distribute's job files; ignored, as it did")
            continue
        out[k] = _drop_unknown(v, known[k], path + (k,), source, notes)
    return out


def parse_original(data: dict, source: Source, base: str) -> Sweep:
    import sys

    notes: list[str] = []
    data = _drop_unknown(data, _KNOWN, (), source, notes)
    for n in notes:
        print(f"dssh: warning: {n}", file=sys.stderr)
    orig = structure(_normalise(data), OriginalFile, source, "the job file")
    _check_paths(orig, source, base)
    _check_slurm(orig, source)
    return to_sweep(orig, source)


def _check_slurm(orig: OriginalFile, source: Source) -> None:
    """The sbatch options of the top-level and per-job ``slurm`` blocks (SPEC §10)."""
    from ..slurm_options import option_problem

    blocks: list[tuple[tuple, dict | None]] = [(("slurm",), orig.slurm)]
    for mode in ("python", "apptainer"):
        sec = getattr(orig, mode)
        if sec is not None:
            blocks += [((mode, "jobs", j, "slurm"), job.slurm) for j, job in enumerate(sec.jobs)]
    msgs, keys = [], []
    for where, block in blocks:
        for k, v in (block or {}).items():
            problem = option_problem(k, v)
            if problem:
                msgs.append(f"{source.where(where + (k,))}: {dotted(where + (k,))}: {problem}")
                keys.append(where + (k,))
    if msgs:
        raise ConfigError(msgs, path=source.filename, line=source.line(keys[0]),
                          key=dotted(keys[0]))

"""Sweep -> jobs: the parameter product, job names, files, and command templates. No I/O
beyond reading local files to hash them."""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
import re
import shlex
import string
from pathlib import Path
from typing import Any

import attrs

from .model.sweep import MAX_VALUES, File, Sweep

# Placeholders every command may use besides the sweep's parameters.
RUNTIME_FIELDS = ("job", "cpus", "gpus", "build", "input", "output", "attempt")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PlanError(Exception):
    """A sweep that cannot be expanded; ``path`` points at the key at fault."""

    def __init__(self, path: tuple, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@attrs.frozen
class PlannedJob:
    """One job of a sweep, fully expanded; the host-specific parts come at dispatch."""

    index: int
    name: str
    # Its parameters' names (one tuple shared by the jobs that have the same) and values:
    # a dict each would cost a sweep of 100,000 jobs some 15 MB more of the head's memory.
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    files: tuple[tuple[str, str], ...]  # (local path, name inside input/)
    definition: str  # hash of everything that defines the job's result
    priority: float = 0.0  # higher starts first (run.priority); not part of the definition

    @property
    def params(self) -> dict[str, Any]:
        """Its parameters, in the sweep's order (a new dict at each call)."""
        return dict(zip(self.keys, self.values, strict=True))


def _key(path: tuple) -> str:
    """``("jobs", 0, "files")`` -> ``jobs[0].files``, as the messages write keys."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else f".{k}"
    return out.lstrip(".")


def fields_of(template: str, where: tuple) -> list[str]:
    """The placeholder names in a template; raises PlanError on a malformed one."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise PlanError(where, f"{_key(where)}: malformed template {template!r}: {e}: "
                               "close every '{' with '}', and write {{ and }} for a literal "
                               "brace") from None
    names = []
    for _lit, field, spec, conv in parsed:
        if field is None:
            continue
        if field == "" or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field) or spec or conv:
            shown = "{" + (field or "") + (f"!{conv}" if conv else "") + \
                (f":{spec}" if spec else "") + "}"
            raise PlanError(where, f"{_key(where)}: placeholder {shown} in {template!r} is not "
                                   "a plain name: write {name} with a parameter or placeholder "
                                   "name, and {{ and }} for literal braces (e.g. in awk or "
                                   "shell ${VAR} code)")
        names.append(field)
    return names


def _scan(text: str, stack: list[str]) -> None:
    """Follow sh's quoting through ``text``: the top of ``stack`` is where the text ends.

    'N' plain, 'S' inside '...', 'D' inside "...", 'C' inside $(...) or `...` (plain
    again, whatever quotes surround it).
    """
    i = 0
    while i < len(text):
        c, top = text[i], stack[-1]
        if top == "S":
            if c == "'":
                stack.pop()
        elif c == "\\":
            i += 1  # the next character is escaped
        elif top == "D" and c == '"':
            stack.pop()
        elif text.startswith("$(", i):
            stack.append("C")
            i += 1
        elif c == "`":
            if top == "B":
                stack.pop()
            else:
                stack.append("B")
        elif top in ("N", "C", "B") and c == "'":
            stack.append("S")
        elif top in ("N", "C", "B") and c == '"':
            stack.append("D")
        elif top == "C" and c == ")":
            stack.pop()
        i += 1


def render(template: str, values: dict[str, Any], *, quote: bool = True) -> str:
    """Fill a template. With ``quote`` every value is shell-quoted: values cannot inject.

    A placeholder the template itself put inside quotes (``echo "v={v}"``) closes those
    quotes around the quoted value and reopens them, so the value stays literal there too.
    """
    out = []
    stack = ["N"]
    for lit, field, _spec, _conv in string.Formatter().parse(template):
        out.append(lit)
        _scan(lit, stack)
        if field is not None:
            v = value_text(values[field])
            if not quote:
                out.append(v)
                continue
            q = shlex.quote(v)
            for _ in range(stack.count("B")):  # `...` strips one level of \ before ` and \
                q = q.replace("\\", "\\\\").replace("`", "\\`")
            if stack[-1] == "S":
                q = "'" + q + "'"
            elif stack[-1] == "D":
                q = '"' + q + '"'
            out.append(q)
    return "".join(out)


def value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _safe_name(text: str) -> str:
    s = _NAME_SAFE.sub("_", text).strip("_") or "job"
    return "_" + s if s in (".", "..") else s


def default_job_name(params: dict[str, Any]) -> str:
    return _safe_name("_".join(f"{k}-{value_text(v)}" for k, v in params.items()))


def _hash_path(h: Any, p: Path) -> None:
    if p.is_dir():
        for root, dirs, files in os.walk(p):
            dirs.sort()
            for f in sorted(files):
                fp = Path(root, f)
                h.update(os.fsencode(fp.relative_to(p)) + b"\0")
                _hash_file(h, fp)
    elif p.exists():
        _hash_file(h, p)


_FILE_HASHES: dict[tuple[str, int, int, int], bytes] = {}


def _hash_file(h: Any, p: Path) -> None:
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _FILE_HASHES.get(key)
    if digest is None:
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                fh.update(chunk)
        digest = _FILE_HASHES[key] = fh.digest()
    h.update(digest)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """A file's SHA-256 (hex), from the same cache the job definitions use."""

    class _Take:
        digest = b""

        def update(self, b: bytes) -> None:
            self.digest = b

    t = _Take()
    _hash_file(t, Path(path))
    return t.digest.hex()


def files_digest(files: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for local, target in files:
        h.update(target.encode() + b"\0")
        _hash_path(h, Path(local))
    return h.hexdigest()


def build_id(sweep: Sweep) -> str | None:
    """The build's cache key: its command and the content of its files."""
    if sweep.build is None:
        return None
    files = [(str(Path(sweep.base_dir, os.path.expanduser(f.path))), f.target)
             for f in sweep.build.files]
    h = hashlib.sha256(json.dumps({"command": sweep.build.command}).encode())
    h.update(files_digest(files).encode())
    return h.hexdigest()[:16]


def escape_problem(base: str | os.PathLike[str], written: str) -> str | None:
    """A path written as inside the sweep's dir (relative, no '..') that leads outside it
    through a symlink: sent only when written as what it is (issue "hostile input")."""
    p = Path(os.path.expanduser(written))
    if p.is_absolute() or ".." in p.parts or written.startswith("~"):
        return None  # written as outside: the user said so, and --dry-run shows it
    root = Path(base).resolve()
    target = (Path(base) / p).resolve()
    if target == root or root in target.parents:
        return None
    return (f"file {written!r} leads outside the sweep's directory through a symlink (to "
            f"{target}): write that path itself if it is meant to be sent, e.g. "
            f"{{path: {target}, as: {p.name}}}")


def outside_inputs(sweep: Sweep, jobs: list[PlannedJob]) -> list[str]:
    """The local files a sweep sends from outside its own directory (for --dry-run)."""
    root = Path(sweep.base_dir).resolve()
    paths = [p for j in jobs for p, _ in j.files]
    if sweep.build is not None:
        paths += [str(Path(sweep.base_dir, os.path.expanduser(f.path)))
                  for f in sweep.build.files]
    out: list[str] = []
    for p in paths:
        r = Path(p).resolve()
        if r != root and root not in r.parents and str(r) not in out:
            out.append(str(r))
    return out


def _resolve_files(sweep: Sweep, files: list[File], params: dict[str, Any],
                   where: tuple) -> list[tuple[str, str]]:
    out = []
    for i, f in enumerate(files):
        path = f.path
        if "{" in path:
            unknown = [n for n in fields_of(path, where + (i,)) if n not in params]
            if unknown:
                raise PlanError(where + (i,), f"{_key(where + (i,))}: file {path!r} uses "
                                              f"{{{unknown[0]}}}, which is not a parameter of "
                                              f"this job (its parameters: "
                                              f"{', '.join(params) or 'none'}): fix the name or "
                                              "add the parameter")
            path = render(path, params, quote=False)
            written, made = Path(os.path.expanduser(f.path)), Path(os.path.expanduser(path))
            if not (written.is_absolute() or ".." in written.parts) and (
                    made.is_absolute() or ".." in made.parts or "\0" in path):
                raise PlanError(where + (i,), f"{_key(where + (i,))}: file {f.path!r} becomes "
                                              f"{path!r} for this job: a parameter's value may "
                                              "not lead a path out of the sweep's directory; "
                                              "write such a path in the sweep file itself")
        local = Path(sweep.base_dir, os.path.expanduser(path))
        if not local.exists():
            raise PlanError(where + (i,), f"{_key(where + (i,))}: file {path!r} not found "
                                          f"(looked in {sweep.base_dir}): fix the path "
                                          "(relative paths start at the sweep file's directory) "
                                          "or create the file")
        escapes = escape_problem(sweep.base_dir, path)
        if escapes:
            raise PlanError(where + (i,), f"{_key(where + (i,))}: {escapes}")
        target = f.as_ or Path(path.rstrip("/")).name
        out.append((str(local), target))
    return out


MAX_JOBS = MAX_VALUES
MAX_NAME = 200  # bytes of a job name: a directory name, with room for what dssh adds


def combinations(sweep: Sweep) -> list[dict[str, Any]]:
    """The parameter product, with each zip group varying as one (position by position),
    in the order the parameters are written."""
    count, counted = 1, set()
    for k, vs in sweep.params.items():  # a zip group is one axis
        if k not in counted:
            counted |= next((set(g) for g in sweep.zip if k in g), {k})
            count *= len(vs)
    if count > MAX_JOBS:
        raise PlanError(("params",), f"params: the parameters make {count} combinations, "
                                     f"more than {MAX_JOBS} jobs: split the sweep, or vary "
                                     "some parameters together with zip")
    axes: list[list[dict[str, Any]]] = []
    done: set[str] = set()
    for k in sweep.params:
        if k in done:
            continue
        group = next((g for g in sweep.zip if k in g), None)
        if group is None:
            axes.append([{k: v} for v in sweep.params[k]])
            done.add(k)
            continue
        members = [n for n in sweep.params if n in group]
        axes.append([dict(zip(members, vals, strict=True))
                     for vals in zip(*(sweep.params[n] for n in members), strict=True)])
        done.update(members)
    out = []
    for combo in itertools.product(*axes):
        params: dict[str, Any] = {}
        for part in combo:
            params.update(part)
        out.append({k: params[k] for k in sweep.params})
    return out


def _origin(where: tuple, params: dict[str, Any]) -> str:
    """Where a job comes from, as messages say it: ``jobs[3]``, or ``params a=1 b=x``."""
    if where[:1] == ("jobs",):
        return _key(where[:2])
    return "params " + " ".join(f"{k}={value_text(v)}" for k, v in params.items())


def _priority(sweep: Sweep, name: str, params: dict[str, Any], where: tuple) -> float:
    """A job's priority: its own (jobs:), else run.priority, a number or a template."""
    if where[:1] == ("jobs",) and sweep.jobs[where[1]].priority is not None:
        return float(sweep.jobs[where[1]].priority)
    prio = sweep.run.priority
    if prio is None:
        return 0.0
    if not isinstance(prio, str):
        return float(prio)
    missing = [f for f in fields_of(prio, ("run", "priority")) if f not in params]
    if missing:
        raise PlanError(("run", "priority"),
                        f"run.priority uses {{{missing[0]}}}, which job {name!r} "
                        f"({_origin(where, params)}) "
                        f"does not set: give it a value, or use another parameter")
    text = render(prio, params, quote=False)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or abs(value) == float("inf"):
        raise PlanError(("run", "priority"),
                        f"run.priority gives {text!r} for job {name!r} "
                        f"({_origin(where, params)}), which is not a number: use parameters "
                        "whose values are numbers")
    return value


_last: tuple[Sweep, list[PlannedJob]] | None = None
# What json.dumps(..., sort_keys=True) does, without making an encoder for each job. The
# bytes it gives are hashed into each job's definition: they must never change.
_DEFINITION_JSON = json.JSONEncoder(sort_keys=True)


def expand(sweep: Sweep) -> list[PlannedJob]:
    """All jobs of the sweep: the parameter product, then the explicit jobs.

    The same sweep object is expanded once (loading checks it, then the run uses it): a
    sweep of 100,000 jobs takes a second to expand. The result is not to be changed."""
    global _last
    if _last is not None and _last[0] is sweep:
        return _last[1]
    jobs = _expand(sweep)
    _last = (sweep, jobs)
    return jobs


def _expand(sweep: Sweep) -> list[PlannedJob]:
    cmd_fields = fields_of(sweep.run.command, ("run", "command"))
    if sweep.build:
        for f in fields_of(sweep.build.command, ("build", "command")):
            raise PlanError(("build", "command"),
                            f"build.command uses {{{f}}}: a build is shared by every job, so it "
                            "cannot use placeholders: move the per-job part to run.command, and "
                            "write {{ and }} for a literal brace")
    param_names = list(sweep.params)
    allowed = set(param_names) | set(RUNTIME_FIELDS)
    for job in sweep.jobs:
        allowed |= set(job.params)
    for f in cmd_fields:
        if f not in allowed:
            close = difflib.get_close_matches(f, sorted(allowed), n=1)
            fix = f"fix the name or add {f} to params"
            if close:
                fix = f"did you mean {{{close[0]}}}? Otherwise {fix}"
            raise PlanError(("run", "command"),
                            f"run.command uses {{{f}}}, which is neither a parameter nor one of "
                            f"dssh's placeholders (known: {', '.join(sorted(allowed))}): "
                            f"{fix}; write {{{{ and }}}} for a literal brace")
    prio = sweep.run.priority
    if isinstance(prio, str):
        for f in fields_of(prio, ("run", "priority")):
            if f not in allowed or f in RUNTIME_FIELDS:
                raise PlanError(("run", "priority"),
                                f"run.priority uses {{{f}}}, which is not a parameter: it may "
                                f"use only the sweep's parameters ({', '.join(param_names) or 'none'})")
    if sweep.job_name is not None:
        for f in fields_of(sweep.job_name, ("job_name",)):
            if f not in param_names:
                what = "one of dssh's run-time placeholders" if f in RUNTIME_FIELDS else \
                    "not a parameter"
                raise PlanError(("job_name",), f"job_name uses {{{f}}}, which is {what}: "
                                               "job_name may use only the sweep's parameters "
                                               f"({', '.join(param_names) or 'none'}): remove "
                                               f"{{{f}}} from it")

    common = _resolve_files(sweep, sweep.run.files, {}, ("run", "files")) \
        if all("{" not in f.path for f in sweep.run.files) else None
    run_def = {
        "command": sweep.run.command, "env": dict(sweep.run.env), "cpus": sweep.run.cpus,
        "gpus": sweep.run.gpus, "build": build_id(sweep),
    }
    common_digest = files_digest(common) if common is not None else ""
    common_files = tuple(common) if common is not None else ()  # (one tuple for every job)
    jobs: list[PlannedJob] = []
    # each name's job, for the message should another take the name: where it is written
    # (jobs:), or its index in ``jobs`` (params:)
    seen: dict[str, tuple | int] = {}
    keysets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(name: str, params: dict[str, Any], extra: list[tuple[str, str]], where: tuple,
            extra_where: tuple | None = None) -> None:
        explicit = where[:1] == ("jobs",)
        if name in seen:
            if explicit:
                fix = "rename one of them"
            elif sweep.job_name is not None:
                used = fields_of(sweep.job_name, ("job_name",))
                varying = [k for k, vs in sweep.params.items() if len(vs) > 1 and k not in used]
                fix = ("put every parameter that varies in job_name, e.g. add "
                       + " ".join(f"{{{k}}}" for k in varying)) if varying else \
                    "make job_name tell them apart"
            else:
                fix = "set job_name to tell them apart"
            at = ("job_name",) if (not explicit and sweep.job_name is not None) else where
            first = seen[name]
            was = _origin(first, {}) if isinstance(first, tuple) else \
                _origin(("params",), jobs[first].params)
            raise PlanError(at, f"{_key(at)}: job name {name!r} is used twice ({was} "
                                f"and {_origin(where, params)}): job names must be unique: "
                                f"{fix}")
        seen[name] = where if explicit else len(jobs)
        if len(name.encode()) > MAX_NAME:
            at = ("job_name",) if (not explicit and sweep.job_name is not None) else \
                where if explicit else ("params",)
            raise PlanError(at, f"{_key(at)}: job name {name[:40]!r}... "
                                f"({_origin(where, params)[:60]}) is "
                                f"{len(name.encode())} bytes long: at most {MAX_NAME} (it names "
                                "directories on the hosts and in the results): set a shorter "
                                "job_name from parameters with short values (e.g. an index "
                                "parameter zipped with the long one: zip: [[i, long]], "
                                "job_name: \"run-{i}\")")
        missing = [f for f in cmd_fields if f not in params and f not in RUNTIME_FIELDS]
        if missing:
            if explicit:
                at = where[:2] + ("params",) if sweep.jobs[where[1]].params else where[:2]
                raise PlanError(at, f"{_key(at)}: job {name!r} has no value for "
                                    f"{{{missing[0]}}}, which run.command uses: add "
                                    f"{missing[0]}: <value> to its params")
            raise PlanError(("run", "command"),
                            f"run.command uses {{{missing[0]}}}, which only some explicit jobs "
                            f"set, so job {name!r} ({_origin(where, params)}) has no value for "
                            f"it: add {missing[0]} to params, or remove it from run.command")
        run_files = common if common is not None else _resolve_files(
            sweep, sweep.run.files, params, ("run", "files"))
        # (files the same for every job are checked with the first job only)
        groups = ((run_files, ("run", "files")),) if common is None or not jobs else ()
        if extra:
            groups += ((extra, extra_where or where),)
        for group, at in groups:
            targets = [t for _, t in group]
            dup = next((i for i, t in enumerate(targets) if targets.index(t) != i), None)
            if dup is not None:
                first = targets.index(targets[dup])
                raise PlanError(at + (dup,), f"{_key(at + (dup,))}: job {name!r} gets two input "
                                             f"files named {targets[dup]!r} (the other is "
                                             f"{_key(at + (first,))}): give one of them another "
                                             "name with 'as:', e.g. {path: ..., as: other.cfg}")
        # A job's own file replaces a run file of the same name (SPEC §3: `as: base.cfg`).
        if extra:
            own = {t for _, t in extra}
            files = tuple((p, t) for p, t in run_files if t not in own) + tuple(extra)
        else:
            files = common_files if common is not None else tuple(run_files)
        h = hashlib.sha256(_DEFINITION_JSON.encode({"run": run_def, "params": {
            k: [type(v).__name__, value_text(v)] for k, v in params.items()}}).encode())
        h.update((common_digest if common is not None else files_digest(list(run_files))).encode())
        if extra:
            h.update(files_digest(list(extra)).encode())
        keys = tuple(params)
        jobs.append(PlannedJob(len(jobs), name, keysets.setdefault(keys, keys),
                               tuple(params.values()), files, h.hexdigest()[:16],
                               _priority(sweep, name, params, where)))

    if sweep.params:
        used = [False] * len(sweep.exclude)
        for params in combinations(sweep):
            hit = [i for i, e in enumerate(sweep.exclude)
                   if all(k in params and params[k] == v for k, v in e.items())]
            for i in hit:
                used[i] = True
            if hit:
                continue
            name = (_safe_name(render(sweep.job_name, params, quote=False))
                    if sweep.job_name else default_job_name(params))
            add(name, params, [], ("params",))
        for i, u in enumerate(used):
            if not u:
                what = ", ".join(f"{k}={value_text(v)}" for k, v in sweep.exclude[i].items())
                raise PlanError(("exclude", i), f"exclude[{i}] ({what}) matches no job: check "
                                                "its values against params")
    for j, spec in enumerate(sweep.jobs):
        extra = _resolve_files(sweep, spec.files, spec.params, ("jobs", j, "files"))
        add(spec.name, dict(spec.params), extra, ("jobs", j, "name"), ("jobs", j, "files"))
    if not sweep.params and not sweep.jobs:
        add(sweep.name, {}, [], ("name",))
    return jobs


def job_command(sweep: Sweep, job: PlannedJob, *, cpus: int, gpus: tuple[int, ...], build: str,
                input_dir: str, output_dir: str, attempt: int) -> str:
    values = dict(job.params)
    values.update(job=job.name, cpus=cpus, gpus=",".join(map(str, gpus)), build=build,
                  input=input_dir, output=output_dir, attempt=attempt)
    return render(sweep.run.command, values)


def job_env(sweep: Sweep, job: PlannedJob, *, host_env: dict[str, str], cpus: int,
            gpus: tuple[int, ...], build: str, input_dir: str, output_dir: str,
            attempt: int) -> dict[str, str]:
    """The environment of one job (SPEC §3): dssh's variables, then the host's, then the sweep's."""
    env = {
        "DSSH_SWEEP": sweep.name, "DSSH_NAMESPACE": sweep.namespace, "DSSH_JOB": job.name,
        "DSSH_ATTEMPT": str(attempt), "DSSH_CPUS": str(cpus), "DSSH_BUILD": build,
        "DSSH_INPUT": input_dir, "DSSH_OUTPUT": output_dir,
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)), "OMP_NUM_THREADS": str(cpus),
    }
    for k, v in job.params.items():
        env[f"DSSH_PARAM_{k.upper()}"] = value_text(v)
    env.update(host_env)
    env.update(sweep.run.env)
    return env

"""The same sweep on a Slurm cluster (SPEC §10): ``dssh slurm SWEEP -o DIR`` writes a
self-contained directory of job arrays, and ``dssh slurm collect DIR`` brings what they
produced into the usual ``results/<namespace>/<sweep>/`` layout.

The directory (docs/slurm.md):

    submit.sh              sbatch the setup job, then each array with afterok on it
    setup.sbatch           the build (and an image to unpack), once; only when there is one
    array-N.sbatch         one job array per distinct set of sbatch options
    build/                 the build's files; the build runs here
    image/                 the container image, when the sweep has one
    jobs/<job>/input/      each job's input files, laid out as on the lab (read-only)
    jobs/<job>/outputs/    empty; what the job writes there is collected
    jobs/<job>/.dssh/      the job's command and environment, then what the task records
    dssh/                  the task runner, the task lists, the manifest, the job ids
    logs/                  Slurm's own output files

Commands are rendered here, with dssh's run-time placeholders ({cpus}, {input}, ...)
turned into quoted references to the variables the task sets (``"$DSSH_CPUS"``), so the
directory can live at any path on the cluster.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError, DsshError
from .model.sweep import Sweep
from .plan import PlannedJob, expand, render, value_text
from .slurm_options import GPU_OPTIONS, options
from .summary import epoch as _epoch
from .summary import iso as _iso

MANIFEST = "dssh/manifest.json"
FORMAT = 1
def sbatch_lines(opts: dict[str, Any]) -> list[str]:
    out = []
    for k, v in opts.items():
        if v is False:
            continue
        out.append(f"#SBATCH --{k}" if v is True else f"#SBATCH --{k}={value_text(v)}")
    return out


def _duration_text(seconds: float) -> str:
    """Seconds as Slurm's D-HH:MM:SS, rounded up to the minute."""
    m = max(1, math.ceil(seconds / 60))
    d, m = divmod(m, 24 * 60)
    h, m = divmod(m, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def job_options(sweep: Sweep, spec_slurm: dict[str, Any] | None,
                cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sbatch options of one job's array: the cluster's (an inventory host's), the
    sweep's over them, the job's over those, then what dssh derives from the run section
    where none of them said."""
    opts = ({"job-name": sweep.name} | options(cluster) | options(sweep.slurm)
            | options(spec_slurm))
    if sweep.run.cpus and "cpus-per-task" not in opts and "c" not in opts:
        opts["cpus-per-task"] = sweep.run.cpus
    if sweep.run.gpus and not any(k in opts for k in GPU_OPTIONS):
        opts["gres"] = f"gpu:{sweep.run.gpus}"
    t = sweep.run.timeout_seconds
    if t and "time" not in opts:
        # each attempt has its own timeout inside the allocation; a little slack on top
        opts["time"] = _duration_text(t * (sweep.run.retries + 1) + 300)
    opts.setdefault("output", "logs/%x-%A_%a.out")
    return opts


def setup_options(sweep: Sweep, cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The setup job takes what one job takes (as a build does on the lab)."""
    opts = {"job-name": f"{sweep.name}-build"} | options(cluster) | options(sweep.slurm)
    opts.pop("output", None)
    opts.pop("error", None)
    if sweep.run.cpus and "cpus-per-task" not in opts:
        opts["cpus-per-task"] = sweep.run.cpus
    opts["output"] = "logs/%x-%j.out"
    return opts


@attrs.frozen
class Exported:
    out_dir: Path
    jobs: int
    arrays: list[tuple[str, int]]  # (script name, tasks)
    setup: bool
    notes: list[str]


class _Sentinels:
    """Unguessable stand-ins for run-time values, replaced by quoted variable references
    once the template is rendered (each appears as a bare word, whatever its quoting)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(8)
        self.map = {f"DSSHRT{tag}{var}": var for var in (
            "DSSH_CPUS", "CUDA_VISIBLE_DEVICES", "DSSH_BUILD", "DSSH_INPUT", "DSSH_OUTPUT",
            "DSSH_ATTEMPT", "DSSH_IMAGE", "DSSH_HOST_BUILD")}
        self.of = {v: k for k, v in self.map.items()}

    def resolve(self, text: str) -> str:
        for s, var in self.map.items():
            text = text.replace(s, f'"${var}"')
        return text


# What the task runner exports for every job, besides the job's env file.
TASK_ENV = ("DSSH_ATTEMPT", "DSSH_CPUS", "OMP_NUM_THREADS", "DSSH_BUILD", "DSSH_INPUT",
            "DSSH_OUTPUT", "CUDA_VISIBLE_DEVICES", "DSSH_PYTHON")


def _image_ref(local: Path, c: Any) -> str:
    """The name podman knows the sweep's image by (as on the lab: by content)."""
    import hashlib

    from .plan import files_digest

    key = json.dumps([files_digest([(str(local), local.name)]), c.runtime, c.mounts])
    return f"localhost/dssh-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _command(sweep: Sweep, job: PlannedJob, s: _Sentinels, env_names: list[str]) -> str:
    c = sweep.run.container
    values: dict[str, Any] = dict(job.params)
    values.update(job=job.name, cpus=s.of["DSSH_CPUS"], gpus=s.of["CUDA_VISIBLE_DEVICES"],
                  attempt=s.of["DSSH_ATTEMPT"])
    if c is None:
        values.update(build=s.of["DSSH_BUILD"], input=s.of["DSSH_INPUT"],
                      output=s.of["DSSH_OUTPUT"])
    else:  # the paths the job sees inside its image
        values.update(build="/build", input="/input", output="/outputs")
    command = s.resolve(render(sweep.run.command, values))
    if c is not None:
        from .remote import in_container

        build = s.of["DSSH_HOST_BUILD"] if sweep.build else None
        if c.runtime == "podman":  # each node's podman imports the image on first use
            from .remote import podman_image

            ref = _image_ref(Path(sweep.base_dir, os.path.expanduser(c.image)), c)
            command = (podman_image(s.of["DSSH_IMAGE"], ref)
                       + in_container(c.runtime, ref, command, c.mounts, build, env_names))
        else:
            command = in_container(c.runtime, s.of["DSSH_IMAGE"], command, c.mounts, build)
        command = s.resolve(command)
    return command


def _env(sweep: Sweep, job: PlannedJob | None, host_env: dict[str, str]) -> dict[str, str]:
    """A job's (or the build's) environment beyond what the task runner sets: after it,
    the host's and then the sweep's, as on the lab (SPEC §3)."""
    env = {"DSSH_SWEEP": sweep.name, "DSSH_NAMESPACE": sweep.namespace}
    if job is not None:
        env["DSSH_JOB"] = job.name
        if sweep.run.container is not None:  # the paths the job sees inside its image
            env.update(DSSH_BUILD="/build", DSSH_INPUT="/input", DSSH_OUTPUT="/outputs")
        for k, v in job.params.items():
            env[f"DSSH_PARAM_{k.upper()}"] = value_text(v)
    env.update(host_env)
    env.update(sweep.run.env)
    return env


def _env_file(env: dict[str, str]) -> str:
    return "# written by dssh slurm\n" + "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def _copy_in(src: Path, dst: Path, store: Path, seen: dict[str, Path]) -> None:
    """``src`` (a file or a dir) at ``dst``: each distinct file once in ``store``, read-only,
    hard-linked where it is used (copied where links cannot be made)."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            _copy_in(child, dst / child.name, store, seen)
        return
    from .plan import file_sha256

    digest = file_sha256(src)
    exe = os.access(src, os.X_OK)
    key = digest + ("x" if exe else "")
    kept = seen.get(key)
    if kept is None:
        kept = store / key
        if not kept.exists():
            tmp = store / f".{key}.tmp"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o555 if exe else 0o444)
            os.replace(tmp, kept)
        seen[key] = kept
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(kept, dst)
    except OSError:
        shutil.copy2(kept, dst)


def _script(name: str) -> bytes:
    return resources.files("distribute_ssh.remote").joinpath(name).read_bytes()


def export(sweep: Sweep, out_dir: str | os.PathLike, *, max_parallel: int | None = None,
           force: bool = False, sweep_file: str | None = None,
           host_env: dict[str, str] | None = None, python: str | None = None,
           cluster: dict[str, Any] | None = None, only: set[str] | None = None) -> Exported:
    """Write the sweep as Slurm job arrays into ``out_dir`` (see the module's doc): only
    the jobs named in ``only`` when given; ``cluster``, ``host_env`` and ``python`` are an
    inventory host's (kind: slurm) sbatch options, environment and interpreter."""
    out = Path(out_dir)
    c = sweep.run.container
    if out.exists() and any(out.iterdir()):
        if not force and not (out / MANIFEST).is_file():
            raise ConfigError(f"{out}: not empty and not a dssh slurm directory: give a new "
                            "or empty directory with -o")
        if not force:
            raise ConfigError(f"{out}: holds an earlier export (and maybe its results): give "
                            "another directory, or --force to replace it")
        shutil.rmtree(out)
    jobs = expand(sweep)
    if only is not None:
        jobs = [j for j in jobs if j.name in only]
    notes: list[str] = []
    given = options(cluster) | options(sweep.slurm)
    if not sweep.run.cpus and "cpus-per-task" not in given and "ntasks" not in given:
        notes.append("run.cpus is not set: each task gets Slurm's default (usually 1 cpu); "
                     "set run.cpus or slurm.cpus-per-task")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "dssh" / "store").mkdir(parents=True)
    (tmp / "logs").mkdir()
    store = tmp / "dssh" / "store"
    seen: dict[str, Path] = {}
    sent = _Sentinels()
    host_env = dict(host_env or {})
    if python:
        host_env.setdefault("DSSH_PYTHON", python)

    # the build and the image, set up once by the setup job
    setup = sweep.build is not None or c is not None
    image = ""
    if sweep.build is not None:
        b = tmp / "build"
        (b / ".dssh").mkdir(parents=True)
        for f in sweep.build.files:
            src = Path(sweep.base_dir, os.path.expanduser(f.path))
            if src.is_dir():
                shutil.copytree(src, b / f.target, symlinks=True)
            else:
                shutil.copy2(src, b / f.target)
        (b / ".dssh" / "command").write_text(render(sweep.build.command, {}, quote=False))
        (b / ".dssh" / "env").write_text(_env_file(_env(sweep, None, host_env)))
    if c is not None:
        from .remote import prepare_image

        local = Path(sweep.base_dir, os.path.expanduser(c.image))
        name = local.name if c.runtime == "apptainer" else "rootfs.tar"
        image = {"apptainer": name, "bwrap": "rootfs", "podman": "image.tar"}[c.runtime]
        staged = tmp / "image.tmp"
        staged.mkdir()
        if c.runtime != "apptainer" and local.is_dir():
            with tarfile.open(staged / name, "w") as tf:
                tf.add(local, arcname=".")
        else:
            shutil.copyfile(local, staged / name)
        (tmp / "dssh" / "image.sh").write_text(
            'cd "$(dirname "$0")/.." || exit 3\n'
            + prepare_image("image.tmp", "image", c.runtime, name, c.mounts))

    # the jobs, grouped into one array per distinct set of options
    spec_slurm = {j.name: j.slurm for j in sweep.jobs}
    groups: list[tuple[dict[str, Any], list[PlannedJob]]] = []
    for job in jobs:
        opts = job_options(sweep, spec_slurm.get(job.name), cluster)
        for g_opts, members in groups:
            if g_opts == opts:
                members.append(job)
                break
        else:
            groups.append((opts, [job]))
    manifest_jobs = []
    for g, (_opts, members) in enumerate(groups):
        for t, job in enumerate(members):
            d = tmp / "jobs" / job.name
            (d / ".dssh").mkdir(parents=True)
            (d / "outputs").mkdir()
            (d / "input").mkdir()
            for local, target in job.files:
                _copy_in(Path(local), d / "input" / target, store, seen)
            env = _env(sweep, job, host_env)
            (d / ".dssh" / "command").write_text(
                _command(sweep, job, sent, sorted({*TASK_ENV, *env})))
            (d / ".dssh" / "env").write_text(_env_file(env))
            manifest_jobs.append({"name": job.name, "params": job.params, "array": g,
                                  "task": t, "definition": job.definition})
        (tmp / "dssh" / f"tasks-{g}").write_text("".join(f"{j.name}\n" for j in members))

    timeout = int(math.ceil(sweep.run.timeout_seconds or 0))
    (tmp / "dssh" / "sweep.conf").write_text(
        f"timeout={timeout}\nretries={sweep.run.retries}\nimage={shlex.quote(image)}\n"
        f"build={1 if sweep.build else 0}\n")
    (tmp / "dssh" / "task.sh").write_bytes(_script("slurm_task.sh"))
    arrays = []
    for g, (opts, members) in enumerate(groups):
        n = len(members)
        spec = f"0-{n - 1}" + (f"%{max_parallel}" if max_parallel else "")
        lines = ["#!/bin/sh", f"# dssh slurm: {sweep.key}, array {g}: {n} job(s)",
                 f"#SBATCH --array={spec}", *sbatch_lines(opts),
                 'exec sh "${DSSH_SLURM_DIR:-$SLURM_SUBMIT_DIR}/dssh/task.sh" ' + str(g), ""]
        (tmp / f"array-{g}.sbatch").write_text("\n".join(lines))
        arrays.append((f"array-{g}.sbatch", n))
    if setup:
        lines = ["#!/bin/sh", f"# dssh slurm: {sweep.key}, the build and image, once",
                 *sbatch_lines(setup_options(sweep, cluster)),
                 'exec sh "${DSSH_SLURM_DIR:-$SLURM_SUBMIT_DIR}/dssh/task.sh" --setup', ""]
        (tmp / "setup.sbatch").write_text("\n".join(lines))
    (tmp / "submit.sh").write_text(_submit_script(sweep, arrays, setup))
    os.chmod(tmp / "submit.sh", 0o755)
    manifest = {
        "format": FORMAT, "namespace": sweep.namespace, "sweep": sweep.name,
        "sweep_file": str(Path(sweep_file).resolve()) if sweep_file else None,
        "created": time.time(), "params": _param_names(sweep),
        "collect": list(sweep.outputs.collect), "exclude": list(sweep.outputs.exclude),
        "retries": sweep.run.retries, "cpus": sweep.run.cpus, "gpus": sweep.run.gpus,
        "build": sweep.build is not None, "image": image,
        "arrays": [{"script": s, "tasks": n} for s, n in arrays], "jobs": manifest_jobs,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (tmp / "README.txt").write_text(_readme(sweep, len(jobs), arrays, setup))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return Exported(out, len(jobs), arrays, setup, notes)


def _param_names(sweep: Sweep) -> list[str]:
    names = list(sweep.params)
    for j in sweep.jobs:
        names += [k for k in j.params if k not in names]
    return names


def _submit_script(sweep: Sweep, arrays: list[tuple[str, int]], setup: bool) -> str:
    lines = [
        "#!/bin/sh",
        f"# Submit the sweep {sweep.key} to Slurm: run 'sh submit.sh' on the cluster's login",
        "# node, from anywhere. Jobs that succeeded before are not run again, so submitting",
        "# again reruns only the rest. Bring the results home with 'dssh slurm collect DIR'.",
        "set -e",
        'cd "$(dirname "$0")"',
        "DSSH_SLURM_DIR=$(pwd -P)",
        "export DSSH_SLURM_DIR",
        "ids=dssh/jobids",
        ': > "$ids.tmp"',
        "dep=",
    ]
    if setup:
        lines += [
            "id=$(sbatch --parsable setup.sbatch)",
            "id=${id%%;*}",
            'echo "setup $id" >> "$ids.tmp"',
            'dep="--dependency=afterok:$id --kill-on-invalid-dep=yes"',
            'echo "setup: Slurm job $id"',
        ]
    for script, n in arrays:
        lines += [
            f"id=$(sbatch --parsable $dep {script})",
            "id=${id%%;*}",
            f'echo "{script[:-7]} $id" >> "$ids.tmp"',
            f'echo "{script[:-7]}: Slurm job $id ({n} task(s))"',
        ]
    lines += ['mv -f "$ids.tmp" "$ids"', ""]
    return "\n".join(lines)


def _readme(sweep: Sweep, n: int, arrays: list[tuple[str, int]], setup: bool) -> str:
    return (f"The sweep {sweep.key} as Slurm job arrays, written by dssh slurm: {n} job(s) "
            f"in {len(arrays)} array(s){', after a setup job (the build)' if setup else ''}.\n"
            "\n"
            "1. Copy this directory to the cluster, keeping hard links: rsync -aH DIR "
            "cluster:path/ (or tar).\n"
            "2. On the login node: sh DIR/submit.sh\n"
            "3. Copy it back (rsync -aH cluster:path/DIR .) and run: dssh slurm collect DIR\n"
            "   (or run dssh slurm collect on the cluster itself).\n"
            "\n"
            "Submitting again reruns only the jobs that did not succeed.\n")


# -- collect --------------------------------------------------------------------------------
@attrs.frozen
class Collected:
    results_dir: Path
    rows: list[dict[str, Any]]
    unfinished: int
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if all(r["status"] == "COMPLETED" for r in self.rows) else 1


def read_manifest(d: Path) -> dict[str, Any]:
    try:
        m = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{d}: not a directory written by dssh slurm (no {MANIFEST}): give "
                        "the directory you passed to 'dssh slurm -o'") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{d / MANIFEST}: cannot read it: {e}") from None
    if m.get("format") != FORMAT:
        raise ConfigError(f"{d / MANIFEST}: written by another version of dssh (format "
                        f"{m.get('format')}); export the sweep again")
    return m


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def states_script(ids: list[str]) -> str:
    """A script printing what Slurm knows of these jobs: ``sacct`` where the cluster keeps
    accounting, and ``scontrol`` (which knows a finished job for a few minutes)."""
    qids = " ".join(shlex.quote(i) for i in ids)
    return (f"for id in {qids}; do\n"
            "  echo '-- sacct'\n"
            "  sacct -n -P -X -o JobID,State,ExitCode -j \"$id\" 2>/dev/null\n"
            "  echo '-- scontrol'\n"
            "  scontrol show job -o \"$id\" 2>/dev/null\n"
            "done\nexit 0\n")


def parse_states(text: str) -> dict[str, tuple[str, int | None]]:
    """``states_script``'s output as ``"<array id>_<task>" -> (STATE, exit code)``; sacct's
    word wins over scontrol's."""
    out: dict[str, tuple[str, int | None]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("-- "):
            section = line[3:]
            continue
        if section == "sacct":
            parts = line.split("|")
            if len(parts) == 3 and "_" in parts[0]:
                jid, _, task = parts[0].partition("_")
                code = parts[2].split(":")[0]
                for t in task_ids(task.strip("[]")):
                    out[f"{jid}_{t}"] = (parts[1].split()[0] if parts[1] else "",
                                         int(code) if code.isdigit() else None)
        elif section == "scontrol":
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            code = f.get("ExitCode", "").split(":")[0]
            # one record per task once it started; one for the tasks still together
            # (pending, or cancelled before they ran), e.g. ArrayTaskId=2-7%4
            for task in task_ids(f.get("ArrayTaskId", "")):
                key = f"{f.get('ArrayJobId', '')}_{task}"
                out.setdefault(key, (f.get("JobState", ""),
                                     int(code) if code.isdigit() else None))
    return out


def slurm_states(ids: list[str]) -> dict[str, tuple[str, int | None]]:
    """What this machine's Slurm knows of these jobs; empty where it has no Slurm."""
    if not ids or shutil.which("scontrol") is None:
        return {}
    try:
        r = subprocess.run(["sh", "-c", states_script(ids)], capture_output=True, text=True,
                           timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_states(r.stdout)


def task_ids(spec: str) -> list[int]:
    """Slurm's ``1,3-5%2`` as [1, 3, 4, 5]; [] for anything else."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        a, _, b = part.partition("-")
        if a.isdigit() and (not b or b.isdigit()):
            out += range(int(a), int(b or a) + 1)
    return out


_SLURM_TO_DSSH = {
    "PENDING": "PENDING", "CONFIGURING": "PENDING", "REQUEUED": "PENDING",
    "RUNNING": "RUNNING", "COMPLETING": "RUNNING", "SUSPENDED": "SUSPENDED",
    "COMPLETED": "COMPLETED", "CANCELLED": "CANCELLED", "TIMEOUT": "TIMEOUT",
    "DEADLINE": "TIMEOUT", "FAILED": "FAILED", "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED", "PREEMPTED": "CANCELLED",
}


def job_status(d: Path, slurm: tuple[str, int | None] | None) -> tuple[str, int | None, str]:
    """(dssh state, exit code, reason) of one job dir, from what its task wrote; Slurm's
    word decides where the task could not write (cancelled, killed at its time limit)."""
    c = d / ".dssh"
    rc = _read(c / "exit_code")
    if rc is not None and rc.lstrip("-").isdigit():
        code = int(rc)
        if code == 0:
            return "COMPLETED", 0, ""
        if (c / "timed_out").exists():
            return "TIMEOUT", code, "timed out (run.timeout)"
        return "FAILED", code, ""
    word = (slurm[0] if slurm else "").split("+")[0]
    state = _SLURM_TO_DSSH.get(word)
    if state in ("PENDING", "RUNNING", "SUSPENDED"):
        return state, None, f"Slurm says {word}"
    if state is not None:
        reason = {"TIMEOUT": "Slurm's time limit", "OUT_OF_MEMORY": "out of memory",
                  "NODE_FAIL": "its node failed"}.get(word, f"Slurm says {word}")
        return state, slurm[1] if slurm else None, reason
    if (c / "signalled").exists():
        return "CANCELLED", None, "stopped by a signal (scancel, or Slurm's time limit)"
    if (c / "started").exists():
        return "RUNNING", None, "started; no exit code yet"
    return "PENDING", None, "not run yet"


def _walk(root: Path) -> list[Any]:
    from .hosts.base import RemoteEntry

    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in list(dirnames):
            p = Path(dirpath, n)
            if p.is_symlink():
                dirnames.remove(n)
                out.append(RemoteEntry(os.path.normpath(os.path.join(rel, n)), 0, "link"))
        for n in filenames:
            p = Path(dirpath, n)
            st = p.lstat()
            kind = "link" if p.is_symlink() else "file" if p.is_file() else "other"
            out.append(RemoteEntry(os.path.normpath(os.path.join(rel, n)), st.st_size, kind))
    return out


def collect(out_dir: str | os.PathLike, results: str | os.PathLike | None = None,
            cluster: str = "slurm") -> Collected:
    """Bring the exported directory's finished jobs into ``results/<ns>/<sweep>/``."""
    from .collect import RESERVED as OWN
    from .collect import place, select, write_json

    d = Path(out_dir)
    m = read_manifest(d)
    if results is None:
        sf = m.get("sweep_file")
        base = Path(sf).parent if sf and Path(sf).parent.is_dir() else d
        results = base / "results"
    rdir = Path(results) / m["namespace"] / m["sweep"]
    rdir.mkdir(parents=True, exist_ok=True)
    ids = dict(line.split()[:2] for line in (_read(d / "dssh" / "jobids") or "").splitlines()
               if len(line.split()) >= 2)
    states = slurm_states(sorted(set(ids.values())))
    notes: list[str] = []
    rows = []
    unfinished = 0
    for j in m["jobs"]:
        jd = d / "jobs" / j["name"]
        array_id = ids.get("array-" + str(j["array"]))
        tid = f"{array_id}_{j['task']}" if array_id else None
        status, code, reason = job_status(jd, states.get(tid) if tid else None)
        c = jd / ".dssh"
        started, finished = _epoch(_read(c / "started")), _epoch(_read(c / "finished"))
        host = _read(c / "host") or ""
        earlier = len(list((jd / ".attempts").glob("*"))) if jd.is_dir() else 0
        attempts = earlier + (1 if (c / "started").exists() else 0)
        row = {"job": j["name"], "status": status, "host": host, "attempts": attempts,
               "exit_code": code, "started": started, "finished": finished,
               "params": j["params"]}
        rows.append(row)
        if status in ("PENDING", "RUNNING", "SUSPENDED"):
            unfinished += 1
            continue
        entries = _walk(jd / "outputs") if (jd / "outputs").is_dir() else []
        files, left, skipped = select(entries, m["collect"], m["exclude"])
        clash = [e for e in files if e.path.split("/", 1)[0] in OWN]
        skipped += [f"{e.path}: an output with this name would hide dssh's own file; not "
                    "collected (write it into a subdirectory)" for e in clash]
        files = [e for e in files if e not in clash]
        staging = rdir / ".incoming" / j["name"]
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("stdout.txt", "stderr.txt"):
            if (c / name).is_file():
                shutil.copyfile(c / name, staging / name)
        if (jd / ".attempts").is_dir():
            for a in sorted((jd / ".attempts").iterdir()):
                for name in ("stdout.txt", "stderr.txt"):
                    if (a / name).is_file():
                        (staging / ".attempts" / a.name).mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(a / name, staging / ".attempts" / a.name / name)
        for e in files:
            target = staging / e.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(jd / "outputs" / e.path, target)
            if target.stat().st_size != e.size:
                raise DsshError(f"{jd / 'outputs' / e.path}: changed while it was copied; "
                                "collect again")
        write_json(staging / "job.json", {
            "sweep": m["sweep"], "namespace": m["namespace"], "job": j["name"],
            "status": status, "params": j["params"], "host": host, "cluster": cluster,
            "slurm_job": _read(c / "slurm_job") or tid, "attempts": attempts,
            "exit_code": code, "timed_out": status == "TIMEOUT", "reason": reason or None,
            "started": _iso(started), "finished": _iso(finished),
            "seconds": round(finished - started, 3) if started and finished else None,
            "cpus": m.get("cpus"), "gpus": m.get("gpus"), "remote_dir": str(jd.resolve()),
            "outputs": [e.path for e in files], "skipped": skipped,
            "left_on_host": [{"path": e.path, "size": e.size} for e in left],
        })
        place(staging, rdir / j["name"])
        notes += [f"{j['name']}: {n}" for n in skipped]
    with contextlib.suppress(OSError):
        (rdir / ".incoming").rmdir()
    build_log = d / "build" / ".dssh" / "build.log"
    if build_log.is_file():
        shutil.copyfile(build_log, rdir / f"build-{cluster}.log")
    _write_summary(rdir, rows, m["params"])
    return Collected(rdir, rows, unfinished, notes)


def _write_summary(rdir: Path, rows: list[dict[str, Any]], pnames: list[str]) -> None:
    from .summary import write_summary

    write_summary(rdir / "summary.csv", rows, pnames)

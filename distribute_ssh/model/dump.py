"""A sweep written back as a sweep file (``dssh convert``): only what differs from the
defaults, in the order a person would write it, commands as literal blocks."""

from __future__ import annotations

from typing import Any

import attrs

from .sweep import Build, File, JobSpec, Outputs, Run, Sweep


def _files(files: list[File]) -> list[Any]:
    return [f.path if f.as_ is None else {"path": f.path, "as": f.as_} for f in files]


def _non_default(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in attrs.fields(type(obj)):
        if a.name in skip or a.metadata.get("internal"):
            continue
        v = getattr(obj, a.name)
        default = a.default.factory() if isinstance(a.default, attrs.Factory) else a.default
        if v == default and a.default is not attrs.NOTHING:
            continue
        key = a.metadata.get("yaml_key", a.name)
        if isinstance(v, list) and v and isinstance(v[0], File):
            v = _files(v)
        elif attrs.has(type(v)):
            v = _non_default(v)
        out[key] = v
    return out


def sweep_to_dict(sweep: Sweep) -> dict[str, Any]:
    d: dict[str, Any] = {"name": sweep.name}
    if sweep.namespace != "default":
        d["namespace"] = sweep.namespace
    if sweep.requires:
        d["requires"] = list(sweep.requires)
    if sweep.build is not None:
        d["build"] = _non_default(sweep.build)
        d["build"].setdefault("command", sweep.build.command)
    d["run"] = _non_default(sweep.run)
    d["run"].setdefault("command", sweep.run.command)
    if sweep.params:
        d["params"] = {k: list(v) for k, v in sweep.params.items()}
    if sweep.zip:
        d["zip"] = [list(g) for g in sweep.zip]
    if sweep.exclude:
        d["exclude"] = [dict(e) for e in sweep.exclude]
    if sweep.job_name:
        d["job_name"] = sweep.job_name
    if sweep.jobs:
        d["jobs"] = [_non_default(j) | {"name": j.name} for j in sweep.jobs]
        d["jobs"] = [{"name": j.pop("name"), **j} for j in d["jobs"]]
    if sweep.outputs != Outputs():
        d["outputs"] = _non_default(sweep.outputs)
    if sweep.notify is not None:
        d["notify"] = _non_default(sweep.notify)
    if sweep.max_failures is not None:
        d["max_failures"] = sweep.max_failures
    if sweep.slurm:
        d["slurm"] = dict(sweep.slurm)
    return d


def to_yaml(sweep: Sweep) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, v: str) -> yaml.ScalarNode:
        style = "|" if "\n" in v else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", v, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(sweep_to_dict(sweep), Dumper=Dumper, sort_keys=False,
                     allow_unicode=True, width=100)


__all__ = ["Build", "JobSpec", "Run", "sweep_to_dict", "to_yaml"]

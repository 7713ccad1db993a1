"""distribute_ssh/plan.py: a sweep expanded into jobs, templates, job environment, hashes.

Pure tests: no hosts. The shell-quoting tests run the rendered command with ``sh -c`` in a
tmp dir (with HOME pointing into that dir) to show that values arrive as one literal
argument and that nothing in them is executed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from distribute_ssh.errors import ConfigError
from distribute_ssh.model.sweep import Build, File, JobSpec, Run, Sweep, parse_sweep
from distribute_ssh.plan import (
    PlanError,
    build_id,
    default_job_name,
    expand,
    job_command,
    job_env,
    render,
)


def sweep_from(base: Path, text: str) -> Sweep:
    """Parse (and fully validate) a sweep file whose relative paths are relative to ``base``."""
    return parse_sweep(text, str(base / "sweep.yaml"), base)


def names(sweep: Sweep) -> list[str]:
    return [j.name for j in expand(sweep)]


def by_name(sweep: Sweep) -> dict[str, str]:
    return {j.name: j.definition for j in expand(sweep)}


def command_for(sweep: Sweep, job_index: int = 0, **kw) -> str:
    job = expand(sweep)[job_index]
    args = dict(cpus=4, gpus=(), build="/b", input_dir="/in", output_dir="/out", attempt=1)
    args.update(kw)
    return job_command(sweep, job, **args)


# -- expansion: order and names --------------------------------------------------------------

def test_cartesian_product_in_file_order_last_key_fastest(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: cavity-re
run: {command: "solver --re {re} --mesh {mesh}"}
params:
  re: [100, 400, 1000]
  mesh: [coarse, fine]
""")
    jobs = expand(s)
    assert [j.params for j in jobs] == [
        {"re": 100, "mesh": "coarse"}, {"re": 100, "mesh": "fine"},
        {"re": 400, "mesh": "coarse"}, {"re": 400, "mesh": "fine"},
        {"re": 1000, "mesh": "coarse"}, {"re": 1000, "mesh": "fine"},
    ]
    assert [j.index for j in jobs] == list(range(6))
    assert [j.name for j in jobs] == [
        "re-100_mesh-coarse", "re-100_mesh-fine", "re-400_mesh-coarse",
        "re-400_mesh-fine", "re-1000_mesh-coarse", "re-1000_mesh-fine",
    ]
    # parameter values keep their YAML types
    assert isinstance(jobs[0].params["re"], int)


def test_key_order_decides_product_order(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "true {a} {b}"}
params: {b: [1, 2], a: [x, y]}
""")
    assert names(s) == ["b-1_a-x", "b-1_a-y", "b-2_a-x", "b-2_a-y"]


def test_default_names_of_floats_bools_and_unsafe_text() -> None:
    assert default_job_name({"alpha": 0.1, "flag": True}) == "alpha-0.1_flag-true"
    assert default_job_name({"x": False}) == "x-false"
    # characters outside [A-Za-z0-9._-] never reach a directory name
    name = default_job_name({"case": "a b/../c"})
    assert "/" not in name and " " not in name
    assert name == "case-a_b_.._c"


def test_single_scalar_param_is_one_value(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "true {re} {mesh}"}
params: {re: [1, 2], mesh: fine}
""")
    assert names(s) == ["re-1_mesh-fine", "re-2_mesh-fine"]


def test_job_name_template(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver {re} {mesh}"}
params: {re: [100, 400], mesh: [coarse, fine]}
job_name: "re{re}-{mesh}"
""")
    assert names(s) == ["re100-coarse", "re100-fine", "re400-coarse", "re400-fine"]


def test_job_name_template_values_are_not_shell_quoted_but_made_safe(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver {case}"}
params: {case: ["two words", "a/b"]}
job_name: "c-{case}"
""")
    assert names(s) == ["c-two_words", "c-a_b"]


def test_job_name_template_with_unknown_placeholder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"job_name uses \{nope\}"):
        sweep_from(tmp_path, """
name: s
run: {command: "solver {re}"}
params: {re: [1]}
job_name: "r{nope}"
""")


def test_job_name_template_that_collapses_names_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        sweep_from(tmp_path, """
name: s
run: {command: "solver {re} {mesh}"}
params: {re: [1, 2], mesh: [a]}
job_name: "m{mesh}"
""")


def test_no_params_no_jobs_is_one_job_named_after_the_sweep(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, "name: lonely.run-1\nrun: {command: ./go}\n")
    jobs = expand(s)
    assert len(jobs) == 1
    assert jobs[0].name == "lonely.run-1"
    assert jobs[0].params == {}
    assert command_for(s) == "./go"


def test_only_explicit_jobs_gives_just_those(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver {re}"}
jobs:
  - {name: one, params: {re: 1}}
  - {name: two, params: {re: 2}}
""")
    assert names(s) == ["one", "two"]


def test_explicit_jobs_come_after_the_product_with_files_and_as(tmp_path: Path) -> None:
    (tmp_path / "base.cfg").write_text("base\n")
    (tmp_path / "special.cfg").write_text("special\n")
    (tmp_path / "extra.dat").write_text("extra\n")
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver --re {re} --mesh {mesh}", files: [base.cfg]}
params: {re: [100], mesh: [coarse, fine]}
jobs:
  - name: special
    params: {re: 5000, mesh: fine}
    files: [extra.dat, {path: special.cfg, as: renamed.cfg}]
""")
    jobs = expand(s)
    assert [j.name for j in jobs] == ["re-100_mesh-coarse", "re-100_mesh-fine", "special"]
    assert jobs[2].index == 2
    assert jobs[2].params == {"re": 5000, "mesh": "fine"}
    assert jobs[0].files == ((str(tmp_path / "base.cfg"), "base.cfg"),)
    assert jobs[2].files == (
        (str(tmp_path / "base.cfg"), "base.cfg"),
        (str(tmp_path / "extra.dat"), "extra.dat"),
        (str(tmp_path / "special.cfg"), "renamed.cfg"),
    )
    assert command_for(s, 2) == "solver --re 5000 --mesh fine"


def test_spec_example_job_file_as_replaces_a_run_file(tmp_path: Path) -> None:
    (tmp_path / "base.cfg").write_text("base\n")
    (tmp_path / "special.cfg").write_text("special\n")
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver --re {re} --mesh {mesh}", files: [base.cfg]}
params: {re: [100], mesh: [coarse]}
jobs:
  - name: special
    params: {re: 5000, mesh: fine}
    files: [{path: special.cfg, as: base.cfg}]   # `as` renames inside input/
""")
    product, special = expand(s)
    assert product.files == ((str(tmp_path / "base.cfg"), "base.cfg"),)
    # input/base.cfg of this job is special.cfg: exactly one file arrives under that name
    assert special.files == ((str(tmp_path / "special.cfg"), "base.cfg"),)


def test_two_job_files_with_the_same_name_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_text("a")
    (tmp_path / "b.cfg").write_text("b")
    with pytest.raises(ConfigError, match="two input files named 'x.cfg'"):
        sweep_from(tmp_path, """
name: s
run: {command: go}
jobs:
  - name: j
    files: [{path: a.cfg, as: x.cfg}, {path: b.cfg, as: x.cfg}]
""")


def test_templated_run_file_is_chosen_per_job(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "coarse.cfg").write_text("c")
    (tmp_path / "cfg" / "fine.cfg").write_text("f")
    s = sweep_from(tmp_path, """
name: s
run: {command: "solver {mesh}", files: [{path: "cfg/{mesh}.cfg", as: mesh.cfg}]}
params: {mesh: [coarse, fine]}
""")
    jobs = expand(s)
    assert jobs[0].files == ((str(tmp_path / "cfg" / "coarse.cfg"), "mesh.cfg"),)
    assert jobs[1].files == ((str(tmp_path / "cfg" / "fine.cfg"), "mesh.cfg"),)


def test_duplicate_explicit_job_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        sweep_from(tmp_path, """
name: s
run: {command: "solver {re}"}
params: {re: [1]}
jobs:
  - {name: re-1, params: {re: 9}}
""")


def test_unknown_placeholder_in_command_is_an_error_before_anything_starts(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\{mesh\}, which is neither a parameter"):
        sweep_from(tmp_path, "name: s\nrun: {command: 'solver {re} {mesh}'}\nparams: {re: [1]}\n")
    # expand() itself says so too, for sweeps built in Python
    s = Sweep(name="s", run=Run(command="solver {nope}"))
    with pytest.raises(PlanError) as e:
        expand(s)
    assert e.value.path == ("run", "command")


def test_explicit_job_missing_a_value_used_by_the_command_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no value for \{mesh\}"):
        sweep_from(tmp_path, """
name: s
run: {command: "solver {re} {mesh}"}
params: {re: [1], mesh: [a]}
jobs:
  - {name: special, params: {re: 2}}
""")


@pytest.mark.parametrize("command", ["solver {re!r}", "solver {re:>5}", "solver {0}",
                                     "solver {a.b}", "solver {", "solver }"])
def test_malformed_placeholders_are_errors(command: str) -> None:
    s = Sweep(name="s", run=Run(command=command), params={"re": [1]})
    with pytest.raises(PlanError, match=r"\{\{ and \}\}"):
        expand(s)


def test_build_command_cannot_use_placeholders() -> None:
    s = Sweep(name="s", run=Run(command="true"), build=Build(command="make {re}"),
              params={"re": [1]})
    with pytest.raises(PlanError, match="build.command uses"):
        expand(s)


# -- templates ---------------------------------------------------------------------------

def test_runtime_placeholders_are_filled(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run:
  command: "{build}/solver {re} -j {cpus} -g {gpus} -i {input} -o {output} -a {attempt} -n {job}"
params: {re: [7]}
""")
    cmd = command_for(s, cpus=3, gpus=(0, 2), build="/h/.dssh/build/abc", input_dir="/j/input",
                      output_dir="/j/outputs", attempt=2)
    assert cmd == ("/h/.dssh/build/abc/solver 7 -j 3 -g 0,2 -i /j/input -o /j/outputs -a 2 "
                   "-n re-7")


def test_double_braces_are_literal(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: "awk '{{print $1}}' {f} && echo {{re}}={re} }}{{"}
params: {re: [5], f: [data.txt]}
""")
    assert command_for(s) == "awk '{print $1}' data.txt && echo {re}=5 }{"
    assert render("{{x}} {{{x}}}", {"x": 1}) == "{x} {1}"


def test_render_quotes_only_what_needs_it() -> None:
    assert render("a {x} {y} {z} {e}", {"x": "plain-1.0", "y": "two words", "z": True, "e": ""}) \
        == "a plain-1.0 'two words' true ''"
    assert render("a {y}", {"y": "two words"}, quote=False) == "a two words"


NASTY = [
    "; rm -rf ~ #",
    "$(touch pwned)",
    "`touch pwned`",
    "&& touch pwned",
    "| touch pwned",
    "> pwned",
    "it's",
    'say "hi"',
    "back\\slash\\",
    "line1\nline2; touch pwned",
    "*",
    "~",
    "$HOME",
    "${HOME:?x}",
    "-n",
    "",
    "  spaces  ",
    "'; touch pwned; '",
    "\"; touch pwned; \"",
    "{re}",
    "\t",
]


def _run_sh(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    (home / "canary").write_text("still here")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    return subprocess.run(["sh", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30)


def _argv_printer() -> str:
    # a command that prints its arguments as JSON (no braces: it goes into a template)
    return (f"{shlex.quote(sys.executable)} -c "
            "'import json,sys; sys.stdout.write(json.dumps(sys.argv[1:]))'")


@pytest.mark.parametrize("value", NASTY, ids=[f"v{i}" for i in range(len(NASTY))])
def test_rendered_value_arrives_as_one_literal_argument(tmp_path: Path, value: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "a_file").write_text("x")  # so that an unquoted * would expand to something
    s = Sweep(name="s", run=Run(command=_argv_printer() + " {v} {job} end"),
              params={"v": [value]}, job_name="j")
    cmd = command_for(s)
    res = _run_sh(cmd, work)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [value, "j", "end"]
    assert sorted(p.name for p in work.iterdir()) == ["a_file", "home"], "something was executed"
    assert (work / "home" / "canary").read_text() == "still here"


def test_runtime_paths_with_spaces_and_quotes_stay_one_argument(tmp_path: Path) -> None:
    s = Sweep(name="s", run=Run(command=_argv_printer() + " {input} {output} {build}"))
    cmd = command_for(s, input_dir="/x/my input", output_dir="/x/it's out",
                      build="/x/$(touch pwned)")
    res = _run_sh(cmd, tmp_path)
    assert json.loads(res.stdout) == ["/x/my input", "/x/it's out", "/x/$(touch pwned)"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("template", ['echo "v={v}"', "echo 'v={v}'", 'echo "$(echo "v={v}")"',
                                      "echo `echo v={v}`", 'echo "`echo \'v={v}\'`"'],
                         ids=["dq", "sq", "subst-dq", "backtick", "backtick-sq"])
def test_value_cannot_inject_even_inside_template_quotes(tmp_path: Path, template: str) -> None:
    s = sweep_from(tmp_path, f"name: s\nrun: {{command: {json.dumps(template)}}}\n"
                             "params: {v: ['$(touch pwned)']}\njob_name: j\n")
    res = _run_sh(command_for(s), tmp_path)
    assert not (tmp_path / "pwned").exists(), "the parameter value was executed"
    assert "$(touch pwned)" in res.stdout


# -- job environment ---------------------------------------------------------------------

def _env(sweep: Sweep, *, host_env: dict[str, str] | None = None, gpus: tuple[int, ...] = (),
         cpus: int = 4, attempt: int = 1) -> dict[str, str]:
    job = expand(sweep)[0]
    return job_env(sweep, job, host_env=host_env or {}, cpus=cpus, gpus=gpus,
                   build="/h/build/abc", input_dir="/h/j/input", output_dir="/h/j/outputs",
                   attempt=attempt)


def test_job_env_has_dssh_variables(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: cavity
namespace: cfd
run: {command: "solver {re}"}
params: {re: [100], mesh_size: [0.5], use_gpu: [false]}
""")
    env = _env(s, cpus=6, attempt=3)
    expected = {
        "DSSH_SWEEP": "cavity", "DSSH_NAMESPACE": "cfd",
        "DSSH_JOB": "re-100_mesh_size-0.5_use_gpu-false", "DSSH_ATTEMPT": "3",
        "DSSH_CPUS": "6", "DSSH_BUILD": "/h/build/abc", "DSSH_INPUT": "/h/j/input",
        "DSSH_OUTPUT": "/h/j/outputs", "DSSH_PARAM_RE": "100", "DSSH_PARAM_MESH_SIZE": "0.5",
        "DSSH_PARAM_USE_GPU": "false", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "6",
    }
    assert env == expected
    assert all(isinstance(v, str) for v in env.values())


def test_job_env_default_namespace_and_gpus(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, "name: s\nrun: {command: go, gpus: 2}\n")
    env = _env(s, gpus=(1, 3))
    assert env["DSSH_NAMESPACE"] == "default"
    assert env["DSSH_JOB"] == "s"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert not any(k.startswith("DSSH_PARAM_") for k in env)


def test_job_env_cuda_visible_devices_is_empty_not_missing_without_gpus(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, "name: s\nrun: {command: go}\n")
    env = _env(s, gpus=())
    assert "CUDA_VISIBLE_DEVICES" in env and env["CUDA_VISIBLE_DEVICES"] == ""


def test_job_env_sweep_env_sets_omp_and_wins_over_host_env(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: s
run: {command: go, env: {OMP_NUM_THREADS: 1, OMP_PROC_BIND: close, SHARED: from-sweep}}
""")
    env = _env(s, cpus=8, host_env={"SCRATCH": "/scratch", "SHARED": "from-host"})
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["OMP_PROC_BIND"] == "close"
    assert env["SCRATCH"] == "/scratch"
    assert env["SHARED"] == "from-sweep"
    assert env["DSSH_CPUS"] == "8"


def test_job_env_omp_follows_cpus_when_the_sweep_does_not_set_it(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, "name: s\nrun: {command: go, env: {OTHER: x}}\n")
    assert _env(s, cpus=2)["OMP_NUM_THREADS"] == "2"
    assert _env(s, cpus=16)["OMP_NUM_THREADS"] == "16"


# -- definition hash -----------------------------------------------------------------------

SWEEP = """
name: s
run: {{command: "{command}", files: [base.cfg, data/]}}
params: {{re: [100, 400]}}
jobs:
  - name: special
    params: {{re: {special_re}}}
    files: [{{path: special.cfg, as: {special_as}}}]
"""


def _write_inputs(d: Path) -> None:
    (d / "data").mkdir(exist_ok=True)
    (d / "base.cfg").write_text("nu = 0.01\n")
    (d / "data" / "mesh.dat").write_text("1 2 3\n")
    (d / "special.cfg").write_text("special = 1\n")


def _defs(d: Path, command: str = "solver {re}", special_re: int = 5000,
          special_as: str = "special.cfg") -> dict[str, str]:
    return by_name(sweep_from(d, SWEEP.format(command=command, special_re=special_re,
                                              special_as=special_as)))


def _bump_mtime(p: Path) -> None:
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_definition_is_stable(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    first = _defs(tmp_path)
    assert set(first) == {"re-100", "re-400", "special"}
    assert len(set(first.values())) == 3
    assert _defs(tmp_path) == first
    # rewriting a file with the same content (new mtime) changes nothing
    (tmp_path / "base.cfg").write_text("nu = 0.01\n")
    _bump_mtime(tmp_path / "base.cfg")
    (tmp_path / "special.cfg").write_text("special = 1\n")
    _bump_mtime(tmp_path / "special.cfg")
    assert _defs(tmp_path) == first


def test_definition_is_the_same_in_every_version_of_dssh(tmp_path: Path) -> None:
    """A state file outlives the dssh that wrote it: should the hash of the same job change
    with a new version, resuming a sweep would run every finished job again. These values
    were written by the dssh of 2026-11-27; a change that moves them needs a migration."""
    _write_inputs(tmp_path)
    assert _defs(tmp_path) == {"re-100": "d49a428e44a925bd", "re-400": "26ab5a86c6945f6c",
                               "special": "1c7db70e24c4368e"}


def test_definition_changes_with_the_command(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    after = _defs(tmp_path, command="solver --re {re}")
    assert all(before[n] != after[n] for n in before)


def test_definition_changes_with_a_param_and_only_for_that_job(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    after = _defs(tmp_path, special_re=5001)
    assert after["special"] != before["special"]
    assert after["re-100"] == before["re-100"] and after["re-400"] == before["re-400"]


def test_adding_a_param_value_keeps_the_existing_jobs_definitions(tmp_path: Path) -> None:
    a = by_name(sweep_from(tmp_path, "name: s\nrun: {command: 'go {re}'}\nparams: {re: [1, 2]}\n"))
    b = by_name(sweep_from(tmp_path,
                           "name: s\nrun: {command: 'go {re}'}\nparams: {re: [1, 2, 3]}\n"))
    assert {n: b[n] for n in a} == a
    assert b["re-3"] not in a.values()


def test_definition_changes_with_a_run_file_content(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    (tmp_path / "base.cfg").write_text("nu = 0.02 # changed\n")
    _bump_mtime(tmp_path / "base.cfg")
    after = _defs(tmp_path)
    assert all(before[n] != after[n] for n in before)


def test_definition_changes_with_a_file_inside_a_run_dir(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    (tmp_path / "data" / "more.dat").write_text("4\n")
    added = _defs(tmp_path)
    assert all(before[n] != added[n] for n in before)
    (tmp_path / "data" / "more.dat").unlink()
    assert _defs(tmp_path) == before


def test_definition_changes_with_a_job_file_content_only_for_that_job(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    (tmp_path / "special.cfg").write_text("special = 2 and longer\n")
    _bump_mtime(tmp_path / "special.cfg")
    after = _defs(tmp_path)
    assert after["special"] != before["special"]
    assert after["re-100"] == before["re-100"]


def test_definition_changes_with_the_name_a_file_gets_in_input(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    assert _defs(tmp_path, special_as="other.cfg")["special"] != _defs(tmp_path)["special"]


def test_definition_changes_with_env_and_build(tmp_path: Path) -> None:
    (tmp_path / "build.sh").write_text("make\n")
    base = "name: s\nrun: {command: go, %s}\n%s"
    plain = by_name(sweep_from(tmp_path, base % ("cpus: 1", "")))["s"]
    env = by_name(sweep_from(tmp_path, base % ("env: {A: b}", "")))["s"]
    built = by_name(sweep_from(tmp_path, base % ("cpus: 1", "build: {command: sh build.sh, "
                                                 "files: [build.sh]}\n")))["s"]
    assert len({plain, env, built}) == 3


def test_definition_sees_a_same_size_edit_that_keeps_the_mtime(tmp_path: Path) -> None:
    _write_inputs(tmp_path)
    before = _defs(tmp_path)
    cfg = tmp_path / "base.cfg"
    st = cfg.stat()
    cfg.write_text("nu = 0.09\n")  # same size
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _defs(tmp_path)["re-100"] != before["re-100"]


# -- build id --------------------------------------------------------------------------------

def _build_sweep(d: Path, command: str = "sh build.sh", run: str = "go") -> Sweep:
    return sweep_from(d, f"""
name: s
build: {{command: {command}, files: [build.sh, src/]}}
run: {{command: {run}}}
""")


def _write_build(d: Path) -> None:
    (d / "src").mkdir(exist_ok=True)
    (d / "build.sh").write_text("cc -o solver src/main.c\n")
    (d / "src" / "main.c").write_text("int main(void) { return 0; }\n")


def test_build_id_none_without_build(tmp_path: Path) -> None:
    assert build_id(sweep_from(tmp_path, "name: s\nrun: {command: go}\n")) is None


def test_build_id_is_stable_and_ignores_the_run_command(tmp_path: Path) -> None:
    _write_build(tmp_path)
    a = build_id(_build_sweep(tmp_path))
    assert a and len(a) == 16
    assert build_id(_build_sweep(tmp_path)) == a
    assert build_id(_build_sweep(tmp_path, run="other")) == a
    (tmp_path / "build.sh").write_text("cc -o solver src/main.c\n")  # same content
    _bump_mtime(tmp_path / "build.sh")
    assert build_id(_build_sweep(tmp_path)) == a


def test_build_id_changes_with_the_command(tmp_path: Path) -> None:
    _write_build(tmp_path)
    assert build_id(_build_sweep(tmp_path, command="bash build.sh")) != \
        build_id(_build_sweep(tmp_path))


def test_build_id_changes_with_a_build_file_content(tmp_path: Path) -> None:
    _write_build(tmp_path)
    a = build_id(_build_sweep(tmp_path))
    (tmp_path / "build.sh").write_text("cc -O2 -o solver src/main.c\n")
    b = build_id(_build_sweep(tmp_path))
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 1 + 0; }\n")
    c = build_id(_build_sweep(tmp_path))
    (tmp_path / "src" / "util.h").write_text("\n")
    d = build_id(_build_sweep(tmp_path))
    assert len({a, b, c, d}) == 4


def test_build_id_from_a_python_built_sweep(tmp_path: Path) -> None:
    _write_build(tmp_path)
    s = Sweep(name="s", run=Run(command="go"), base_dir=str(tmp_path),
              build=Build(command="sh build.sh", files=[File("build.sh"), File("src/")]),
              jobs=[JobSpec(name="only")])
    assert build_id(s) == build_id(_build_sweep(tmp_path))
    assert [j.name for j in expand(s)] == ["only"]


# -- richer parameters: ranges, zip groups, exclude, files chosen by parameter -------------

def test_a_range_may_hold_more_than_100000_values(tmp_path: Path) -> None:
    """One range may make as many jobs as a whole sweep (a seed swept 1..150000, say)."""
    sweep = sweep_from(tmp_path, "name: big\nrun: {command: echo}\n"
                                 "params: {seed: {start: 1, stop: 150000}}\n")
    assert len(sweep.params["seed"]) == 150000
    assert sweep.params["seed"][-1] == 150000


def test_ranges_and_linspace_become_lists(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: r
run: {command: "solve {re} {aoa} {t}"}
params:
  re: {start: 100, stop: 1000, step: 300}
  aoa: {linspace: [-1.0, 1.0, 5]}
  t: {start: 0.1, stop: 0.3, step: 0.1}
""")
    assert s.params["re"] == [100, 400, 700, 1000]
    assert s.params["aoa"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert s.params["t"] == [0.1, 0.2, 0.3]
    assert len(expand(s)) == 4 * 5 * 3


def test_zip_groups_vary_together_and_exclude_drops_combinations(tmp_path: Path) -> None:
    s = sweep_from(tmp_path, """
name: z
run: {command: "solve {mesh} {res} {re}"}
params:
  mesh: [coarse, fine]
  re: [1, 2, 3]
  res: [8, 64]
zip: [[mesh, res]]
exclude:
  - {mesh: fine, re: 1}
  - {re: 3, res: 8}
""")
    got = [(j.params["mesh"], j.params["res"], j.params["re"]) for j in expand(s)]
    assert got == [("coarse", 8, 1), ("coarse", 8, 2), ("fine", 64, 2), ("fine", 64, 3)]
    assert [list(j.params) for j in expand(s)][0] == ["mesh", "re", "res"]


def test_files_chosen_by_parameter(tmp_path: Path) -> None:
    (tmp_path / "meshes").mkdir()
    for m in ("coarse", "fine"):
        (tmp_path / "meshes" / f"{m}.msh").write_text(m)
    s = sweep_from(tmp_path, """
name: f
run:
  command: "solve input/mesh.msh"
  files: [{path: "meshes/{mesh}.msh", as: mesh.msh}]
params: {mesh: [coarse, fine]}
""")
    files = {j.name: j.files for j in expand(s)}
    assert files == {"mesh-coarse": ((str(tmp_path / "meshes/coarse.msh"), "mesh.msh"),),
                     "mesh-fine": ((str(tmp_path / "meshes/fine.msh"), "mesh.msh"),)}


@pytest.mark.parametrize(("text", "words"), [
    ("params: {re: {start: 10, stop: 1, step: 1}}", ["sweep.yaml:3", "params.re",
                                                     "stop not below start"]),
    ("params: {re: {start: 1, stop: 5, step: 0}}", ["params.re", "step more than 0"]),
    ("params: {re: {linspace: [0, 1]}}", ["params.re", "[first, last, count]"]),
    ("params: {re: {start: 1, stop: 1000001}}", ["sweep.yaml:3", "params.re",
                                                 "range has 1000001 values",
                                                 "1000000 jobs", "use a larger step"]),
    ("params: {re: {linspace: [0, 1, 2000000]}}", ["sweep.yaml:3", "params.re",
                                                   "linspace has 2000000 values", "use fewer"]),
    ("params: {re: {from: 1, to: 2}}", ["params.re", "got the keys from, to"]),
    ("params: {a: [1, 2], b: [1]}\nzip: [[a, b]]", ["zip[0]", "as many values each",
                                                   "a: 2, b: 1"]),
    ("params: {a: [1, 2]}\nzip: [[a, c]]", ["zip[0]", "'c' is not a parameter"]),
    ("params: {a: [1, 2]}\nexclude: [{b: 1}]", ["exclude[0].b", "'b' is not a parameter"]),
    ("params: {a: [1, 2]}\nexclude: [{a: 3}]", ["exclude[0]", "matches no job"]),
])
def test_bad_ranges_zip_and_exclude_are_clear_errors(tmp_path: Path, text: str,
                                                     words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        sweep_from(tmp_path, "name: bad\nrun: {command: echo}\n" + text + "\n")
    for w in words:
        assert w in str(e.value), str(e.value)


def test_zip_and_exclude_round_trip_through_yaml(tmp_path: Path) -> None:
    s = Sweep(name="rt", run=Run(command="echo {a} {b}"), params={"a": [1, 2], "b": [3, 4]},
              zip=[["a", "b"]], exclude=[{"a": 2}])
    assert Sweep.from_yaml(s.to_yaml(), base_dir=tmp_path) == s
    assert len(expand(s)) == 1


def test_a_sweep_is_expanded_once_a_changed_one_again() -> None:
    """Loading checks a sweep by expanding it and the run expands it again: the same object
    gives the same expansion without redoing it; any other sweep is expanded afresh."""
    import attrs

    from distribute_ssh import plan

    s = Sweep(name="e", run=Run(command="echo {i}"), params={"i": list(range(3))})
    first = plan.expand(s)
    assert plan.expand(s) is first
    other = attrs.evolve(s, params={"i": [7]})
    assert [j.params for j in plan.expand(other)] == [{"i": 7}]
    assert [j.params["i"] for j in plan.expand(s)] == [0, 1, 2]

"""YAML 1.1 reads some unquoted words as numbers or booleans (12:30:00 is 45000, 0x1F is
31, 1_000 is 1000, yes is true): the jobs get those values. dssh says so, with the fix;
quoted, the text stays text."""

from __future__ import annotations

from pathlib import Path

from helpers import dssh, explain, write


def test_surprising_yaml_numbers_are_pointed_out(tmp_path: Path) -> None:
    write(tmp_path / "sweep.yaml", 'name: n\nrun: {command: "true"}\n'
                                   'params:\n  t: [12:30:00, "12:30:00", 0x1F, 1_000, yes, 3, '
                                   '1.5, "yes"]\n')
    r = dssh("run", "sweep.yaml", "--dry-run", "--json", cwd=tmp_path)
    assert r.returncode == 0, explain(r)
    warned = [ln for ln in r.stderr.splitlines() if ln.startswith("dssh: warning:")]
    assert warned == [
        f"dssh: warning: sweep.yaml:4: params.t: {raw} is read by YAML as {val}, which is "
        f'what the jobs get: write "{raw}" (quoted) to keep the text'
        for raw, val in (("12:30:00", "45000"), ("0x1F", "31"), ("1_000", "1000"),
                         ("yes", "true"))]
    assert "t-12:30:00" not in r.stdout and "t-45000" in r.stdout  # the job names say it too

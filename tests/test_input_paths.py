"""Input files from outside the sweep's directory (issue "hostile input", item 2): sent
only when the sweep writes them as such (absolute, or with '..'), and shown by --dry-run;
a path written as inside that leads outside through a symlink is refused."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import dssh, explain, write


def test_a_symlink_out_of_the_sweep_dir_is_refused_and_written_paths_are_shown(
        tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere" / "secret.txt", "not for the hosts\n")
    proj = tmp_path / "proj"
    write(proj / "data" / "ok.txt", "fine\n")
    (proj / "data" / "link.txt").symlink_to(outside)
    (proj / "data" / "inner.txt").symlink_to(proj / "data" / "ok.txt")  # stays inside
    write(proj / "bad.yaml", 'name: bad\nrun: {command: "true", files: [data/ok.txt,\n'
                             '  data/link.txt]}\n')
    r = dssh("run", "bad.yaml", "--dry-run", cwd=proj)
    assert r.returncode == 2, explain(r)
    assert "bad.yaml:3: run.files[1]: file 'data/link.txt' leads outside the sweep's " \
           f"directory through a symlink (to {outside})" in r.stderr
    write(proj / "badbuild.yaml", 'name: b\nbuild: {command: "true", files: [data/link.txt]}\n'
                                  'run: {command: "true"}\n')
    r = dssh("run", "badbuild.yaml", "--dry-run", cwd=proj)
    assert r.returncode == 2 and "build.files[0]" in r.stderr and "symlink" in r.stderr
    write(proj / "tmpl.yaml", 'name: t\nrun: {command: "true", files: ["data/{f}.txt"]}\n'
                              'params: {f: [ok, link]}\n')
    r = dssh("run", "tmpl.yaml", "--dry-run", cwd=proj)
    assert r.returncode == 2 and "leads outside the sweep's directory" in r.stderr

    write(proj / "good.yaml", f'name: good\nrun: {{command: "true", files: [data/inner.txt,\n'
                              f'  ../elsewhere/secret.txt, {{path: {outside}, as: s2.txt}}]}}\n')
    r = dssh("run", "good.yaml", "--dry-run", cwd=proj)
    assert r.returncode == 0, explain(r)
    assert "sent from outside the sweep's directory (as written in it):" in r.stdout
    assert f"  {outside}\n" in r.stdout and str(proj / "data") not in r.stdout.split(
        "sent from outside")[1]
    r = dssh("run", "good.yaml", "--dry-run", "--json", cwd=proj)
    assert json.loads(r.stdout)["outside_inputs"] == [str(outside)]

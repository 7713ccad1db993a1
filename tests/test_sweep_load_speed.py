"""Loading a big sweep stays cheap: the check for values YAML 1.1 reads as something else
than the text written (12:30:00 is 45000, 0x1F is 31) looks at the scalars written in the
file, once each, not at every value of a range or every job of a product; and it still
warns about every such literal, once per value written, however many jobs use it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from distribute_ssh.model import sweep as sweep_mod
from distribute_ssh.model import yamlload
from distribute_ssh.model.sweep import parse_sweep

# Written values: the first four are read by YAML as numbers or a boolean.
LITERALS = ["12:30:00", "0x1F", "1_000", "yes", '"12:30:00"', "3", "1.5", "abc", "off-peak",
            "7"]
# The ones YAML reads as a number or a boolean: only those can need the warning.
NOT_TEXT = sum(not isinstance(yaml.safe_load(v), str) for v in LITERALS)  # 7
WARNED = [("12:30:00", "45000"), ("0x1F", "31"), ("1_000", "1000"), ("yes", "true")]


def _range_sweep(jobs: int) -> str:
    """A range of jobs/10 values times a block list of the 10 literals (line 6 onwards)."""
    return ('name: big\nrun: {command: "echo {i} {t}"}\nparams:\n'
            f"  i: {{start: 0, stop: {jobs // len(LITERALS) - 1}}}\n  t:\n"
            + "".join(f"    - {v}\n" for v in LITERALS))


def _product_sweep(jobs: int) -> str:
    """The 10 literals (a flow list on line 4) times a flow list of jobs/10 numbers."""
    others = ", ".join(str(n) for n in range(jobs // len(LITERALS)))
    return ('name: big\nrun: {command: "echo {t} {n}"}\nparams:\n'
            f"  t: [{', '.join(LITERALS)}]\n  n: [{others}]\n")


class _Counting:
    """Stands in for the check's pattern: counts the scalars it is asked about."""

    def __init__(self, pattern) -> None:
        self.pattern, self.calls = pattern, 0

    def match(self, text: str):
        self.calls += 1
        return self.pattern.match(text)


def _load(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """Jobs, scalars checked and YAML parses while loading ``text``."""
    pattern = _Counting(sweep_mod._SURPRISING)
    monkeypatch.setattr(sweep_mod, "_SURPRISING", pattern)
    parses = 0
    safe_load = yaml.safe_load

    def counting_safe_load(*args, **kwargs):
        nonlocal parses
        parses += 1
        return safe_load(*args, **kwargs)

    monkeypatch.setattr(yaml, "safe_load", counting_safe_load)
    yamlload._plain_value.cache_clear()
    sweep = parse_sweep(text, "sweep.yaml", tmp_path)
    jobs = math.prod(len(v) for v in sweep.params.values())  # no zip, no exclude
    return jobs, pattern.calls, parses


@pytest.mark.parametrize("make", [_range_sweep, _product_sweep])
def test_the_check_does_not_grow_with_the_jobs(make, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    small = _load(make(1_000), tmp_path, monkeypatch)
    big = _load(make(10_000), tmp_path, monkeypatch)
    capsys.readouterr()
    assert (small[0], big[0]) == (1_000, 10_000)
    # the range's values were never written: only the 10 literals are looked at
    if make is _range_sweep:
        assert small[1:] == big[1:]
        assert small[1] == NOT_TEXT
    else:  # a list of numbers is written out, but is looked at once per value, not per job
        assert big[1] == NOT_TEXT + 10_000 // len(LITERALS)
    # path lookups read a key as YAML once per distinct key text, not once per value
    assert big[2] <= 5 and small[2] <= 5


def test_a_range_of_100000_values_parses_no_yaml_per_value(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    text = 'name: r\nrun: {command: "echo {i}"}\nparams:\n  i: {start: 0, stop: 99999}\n'
    jobs, checked, parses = _load(text, tmp_path, monkeypatch)
    assert (jobs, checked) == (100_000, 0) and parses <= 2


@pytest.mark.parametrize("make,lines", [
    (_range_sweep, [6, 7, 8, 9]),
    (_product_sweep, [4, 4, 4, 4]),
])
def test_a_big_sweep_still_warns_once_per_written_value(make, lines, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    sweep = parse_sweep(make(10_000), "sweep.yaml", tmp_path)
    assert sweep.params["t"][:4] == [45000, 31, 1000, True]
    warned = [ln for ln in capsys.readouterr().err.splitlines()
              if ln.startswith("dssh: warning:")]
    assert warned == [
        f"dssh: warning: sweep.yaml:{line}: params.t: {raw} is read by YAML as {val}, which "
        f'is what the jobs get: write "{raw}" (quoted) to keep the text'
        for line, (raw, val) in zip(lines, WARNED, strict=True)]


def test_index_lookup_matches_a_path_lookup() -> None:
    """Source.items(path)[i] is the node Source.exact(path + (i,)) finds, for lists and
    for mappings (whose keys YAML may read as whole numbers)."""
    text = ("l: [a, 12:30:00, c]\n"
            "m: {0x1: one, \"2\": two, 03: three, 4: four, '5': five, x: six, -1: minus}\n"
            "r: {start: 0, stop: 9}\n"
            "s: 12:30:00\n")
    _, source = yamlload.parse_yaml(text, "t.yaml")
    for key in ("l", "m", "r", "s", "missing"):
        nodes = source.items((key,))
        for i in range(-2, 8):
            assert nodes.get(i) is source.exact((key, i)), (key, i)
    assert sorted(source.items(("m",))) == [-1, 1, 2, 3, 4, 5]
    assert source.items(("r",)) == {}

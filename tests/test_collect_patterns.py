"""distribute_ssh/collect.py (collect patterns, select, place) and distribute_ssh/durations.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distribute_ssh.collect import matches, place, select
from distribute_ssh.durations import format_duration, parse_duration
from distribute_ssh.hosts.base import RemoteEntry

# -- matches() -------------------------------------------------------------------------------

TREE = [
    "result.csv", "data/result.csv", "data/deep/x.csv", "result.csv.bak", "notes.txt",
    "plots/a.png", "plots/sub/b.png", "other/plots/c.png", "plotsx/d.png", "plots.png",
    "a.dat", "b.dat", "c.dat", "ab.dat", "log1.txt", "log22.txt", ".hidden.csv",
]


def picked(patterns: list[str]) -> set[str]:
    return {p for p in TREE if matches(p, patterns)}


def test_name_pattern_matches_at_any_depth() -> None:
    assert picked(["*.csv"]) == {"result.csv", "data/result.csv", "data/deep/x.csv",
                                 ".hidden.csv"}
    assert picked(["result.csv"]) == {"result.csv", "data/result.csv"}


def test_star_does_not_cross_a_slash_in_an_anchored_pattern() -> None:
    assert picked(["data/*.csv"]) == {"data/result.csv"}
    assert picked(["*/*.csv"]) == {"data/result.csv"}
    # anchored: a pattern with a '/' starts at the top of outputs/
    assert not matches("x/data/result.csv", ["data/*.csv"])


def test_double_star_below_a_directory() -> None:
    assert picked(["plots/**"]) == {"plots/a.png", "plots/sub/b.png"}


def test_trailing_slash_takes_everything_below_a_directory_of_that_name() -> None:
    assert picked(["plots/"]) == {"plots/a.png", "plots/sub/b.png", "other/plots/c.png"}


def test_double_star_alone_takes_everything() -> None:
    assert picked(["**"]) == set(TREE)


def test_double_star_slash_spans_zero_or_more_directories() -> None:
    assert picked(["**/x.csv"]) == {"data/deep/x.csv"}
    assert picked(["data/**/x.csv"]) == {"data/deep/x.csv"}
    assert matches("data/x.csv", ["data/**/x.csv"])
    assert not matches("datax.csv", ["data/**/x.csv"])


def test_question_mark_is_one_character_never_a_slash() -> None:
    assert picked(["log?.txt"]) == {"log1.txt"}
    assert picked(["?.dat"]) == {"a.dat", "b.dat", "c.dat"}
    assert not matches("a/b", ["a?b"])


def test_bracket_sets() -> None:
    assert picked(["[ab].dat"]) == {"a.dat", "b.dat"}
    assert picked(["[a-b].dat"]) == {"a.dat", "b.dat"}
    assert picked(["[!ab].dat"]) == {"c.dat"}
    assert picked(["[ab][b].dat"]) == {"ab.dat"}


def test_dots_and_regex_characters_are_literal() -> None:
    assert not matches("resultxcsv", ["result.csv"])
    assert matches("a+b(1)$.txt", ["a+b(1)$.txt"])
    assert matches("x^y.txt", ["x^y.*"])
    assert not matches("result.csv.bak", ["*.csv"])


def test_several_patterns_any_one_matches() -> None:
    assert picked(["*.csv", "plots/**"]) == picked(["*.csv"]) | picked(["plots/**"])
    assert picked([]) == set()
    assert matches("notes.txt", ["  notes.txt  "])  # surrounding blanks are ignored


def test_negated_bracket_never_matches_a_slash() -> None:
    assert not matches("x/y", ["x[!a]y"])


def test_bracket_starting_with_a_closing_bracket_is_literal() -> None:
    assert matches("].txt", ["[]a].txt"])
    assert matches("a.txt", ["[]a].txt"])
    assert not matches("b.txt", ["[]a].txt"])


# -- select() ---------------------------------------------------------------------------------

def E(path: str, kind: str = "file", size: int = 1) -> RemoteEntry:  # noqa: N802
    return RemoteEntry(path, size, kind)


def test_select_takes_matching_regular_files_only() -> None:
    entries = [E("plots", "dir", 0), E("plots/a.png"), E("r.csv"), E("notes.txt"),
               E("sub", "dir", 0), E("sub/r.csv")]
    take, _, notes = select(entries, ["*.csv", "plots/**"])
    assert [e.path for e in take] == ["plots/a.png", "r.csv", "sub/r.csv"]
    assert notes == []


def test_select_skips_symlinks_and_special_files_with_a_note() -> None:
    entries = [E("link.csv", "link"), E("fifo.csv", "other"), E("ok.csv"),
               E("link.txt", "link")]
    take, _, notes = select(entries, ["*.csv"])
    assert [e.path for e in take] == ["ok.csv"]
    assert len(notes) == 2
    assert notes[0].startswith("link.csv:") and "symlink" in notes[0]
    assert notes[1].startswith("fifo.csv:") and "not a regular file" in notes[1]
    # a link that no pattern wants is not worth a note
    assert not any("link.txt" in n for n in notes)


@pytest.mark.parametrize("path", ["..", "../x.csv", "a/../../x.csv", "/etc/passwd.csv",
                                  "plots/../../../x.csv"])
def test_select_refuses_names_that_leave_the_tree(path: str) -> None:
    take, _, notes = select([E(path), E("good.csv")], ["**"])
    assert [e.path for e in take] == ["good.csv"]
    assert len(notes) == 1 and notes[0].startswith(path) and "unsafe" in notes[0]


def test_select_accepts_names_that_only_look_like_dots() -> None:
    take, _, notes = select([E("..data.csv"), E("a/.../b.csv"), E("x..csv")], ["*.csv"])
    assert [e.path for e in take] == ["..data.csv", "a/.../b.csv", "x..csv"]
    assert notes == []


def test_exclude_leaves_files_on_the_host() -> None:
    entries = [E("flow", "dir", 0), E("flow/u.vtk", size=10), E("flow/p.vtk", size=20),
               E("flow/stats.csv"), E("r.csv"), E("log.txt"), E("big.h5", "link")]
    take, left, notes = select(entries, ["**"], ["flow/*.vtk", "*.txt"])
    assert [e.path for e in take] == ["flow/stats.csv", "r.csv"]
    assert [(e.path, e.size) for e in left] == [("flow/u.vtk", 10), ("flow/p.vtk", 20),
                                                ("log.txt", 1)]
    assert len(notes) == 1 and "symlink" in notes[0]
    # not collected by the patterns at all: also left, never a note
    take, left, notes = select(entries, ["*.csv"])
    assert [e.path for e in left] == ["flow/u.vtk", "flow/p.vtk", "log.txt"]
    assert notes == []


# -- place() ----------------------------------------------------------------------------------

def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): p.read_text() for p in sorted(d.rglob("*")) if p.is_file()}


def test_place_moves_staging_into_a_new_place(tmp_path: Path) -> None:
    staging = tmp_path / ".incoming" / "job.1"
    (staging / "sub").mkdir(parents=True)
    (staging / "r.csv").write_text("1")
    (staging / "sub" / "p.png").write_text("2")
    final = tmp_path / "results" / "ns" / "sweep" / "job"
    place(staging, final)
    assert _tree(final) == {"r.csv": "1", "sub/p.png": "2"}
    assert not staging.exists()


def test_place_replaces_an_older_result_whole(tmp_path: Path) -> None:
    final = tmp_path / "res" / "job"
    (final / "old-only").mkdir(parents=True)
    (final / "r.csv").write_text("old")
    (final / "old-only" / "x").write_text("old")
    staging = tmp_path / ".incoming" / "job.2"
    staging.mkdir(parents=True)
    (staging / "r.csv").write_text("new")
    ino = staging.stat().st_ino
    place(staging, final)
    assert _tree(final) == {"r.csv": "new"}
    assert final.stat().st_ino == ino  # renamed, not copied
    assert sorted(os.listdir(final.parent)) == ["job"]  # no .old-* left behind
    assert not staging.exists()


def test_place_leaves_sibling_results_alone(tmp_path: Path) -> None:
    res = tmp_path / "res"
    (res / "other").mkdir(parents=True)
    (res / "other" / "keep.txt").write_text("k")
    staging = tmp_path / "st"
    staging.mkdir()
    (staging / "f").write_text("f")
    place(staging, res / "job")
    assert _tree(res) == {"job/f": "f", "other/keep.txt": "k"}


# -- durations ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("90", 90), ("90s", 90), ("1d", 86400),
    ("02:00:00", 7200), ("0:45:30", 2730), ("1h 30m", 5400), (" 2H ", 7200), ("1.5h", 5400),
    ("1d2h3m4s", 93784), ("0", 0), ("2.5", 2.5), (90, 90), (1.5, 1.5), (0, 0),
])
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    got = parse_duration(text)
    assert got == seconds and isinstance(got, float)


@pytest.mark.parametrize("text", ["", "   ", "abc", "1x", "h", "1h30", "30 minutes", "-5",
                                  "1:2:3", "02:00", "1h-5m", "m30", "1,5h"])
def test_bad_duration_raises_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"like 45m, 2h, 1h30m or 02:00:00, got"):
        parse_duration(text)


def test_numbers_split_by_a_space_are_not_glued_together() -> None:
    with pytest.raises(ValueError):
        parse_duration("2 30")


def test_negative_and_boolean_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="boolean"):
        parse_duration(True)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (59.6, "1m"), (60, "1m"), (5400, "1h30m"), (7200, "2h"),
    (93784, "1d2h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["45m", "2h", "1h30m", "3d", "1h1m"])
def test_format_then_parse_round_trips_whole_units(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_patterns_match_names_with_newlines() -> None:
    assert matches("new\nline.txt", ["**"])
    assert matches("a/new\nline.txt", ["*.txt"])
    assert matches("new\nline.txt", ["new?line.txt"])
    assert not matches("new\nline.txt", ["*.csv"])

"""Owner policy files and hours (SPEC §6b): reading, messages, the strictest rule."""

from __future__ import annotations

import datetime as dt

import pytest

from distribute_ssh.model.inventory import parse_inventory
from distribute_ssh.policy import combine, parse_found, parse_hours, parse_policy


def host(**kw: object):
    text = "hosts:\n  ws1:\n" + "".join(f"    {k}: {v!r}\n" for k, v in kw.items())
    return parse_inventory(text, "inventory.yaml").hosts["ws1"]


def at(day: str, hhmm: str) -> dt.datetime:
    """A moment in the week of Monday 2026-11-23."""
    d = ("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(day)
    h, m = map(int, hhmm.split(":"))
    return dt.datetime(2026, 11, 23 + d, h, m)


def test_hours_windows_wrap_past_midnight_and_belong_to_their_first_day() -> None:
    eff = combine(host(hours="mon-fri 18:00-08:00, weekends"), [])
    assert eff.open_at(at("mon", "18:00")) and eff.open_at(at("tue", "07:59"))
    assert not eff.open_at(at("tue", "08:00")) and not eff.open_at(at("wed", "17:59"))
    assert eff.open_at(at("sat", "12:00")) and eff.open_at(at("sun", "23:59"))
    # Friday night runs into Saturday; Monday morning belongs to Sunday's window only if
    # Sunday had one past midnight (it does not: 'weekends' is whole days)
    assert eff.open_at(at("sat", "07:00"))
    assert not eff.open_at(at("mon", "07:00"))
    assert eff.next_change(at("wed", "12:00")) == at("wed", "18:00")
    assert eff.next_change(at("wed", "19:00")) == at("thu", "08:00")


def test_every_policy_must_allow_an_hour_and_the_strictest_value_wins() -> None:
    alice = parse_policy("cpus: 4\ngpus: [0, 1]\nnice: 12\nhours: 18:00-08:00\n"
                         "max_pause: 2h\n", "/home/alice/.distribute-policy", "alice")
    bob = parse_policy("cpus: 2\ngpus: [1, 2]\nnice: 5\nhours: weekdays\nmax_pause: 30h\n",
                       "/home/bob/.distribute-policy", "bob")
    assert not alice.error and not bob.error
    eff = combine(host(nice=8, max_pause="1d"), [alice, bob])
    assert (eff.cpus, eff.gpus, eff.nice, eff.max_pause) == (2, (1,), 12, 30 * 3600)
    assert eff.open_at(at("tue", "19:00"))  # a weekday evening: both allow it
    assert not eff.open_at(at("sat", "19:00"))  # bob: weekdays only
    assert not eff.open_at(at("tue", "12:00"))  # alice: evenings only
    assert "at most 2 cpus" in eff.describe() and "nice 12" in eff.describe()


def test_without_policy_files_jobs_run_at_nice_10_and_any_hour() -> None:
    eff = combine(host(), [])
    assert (eff.cpus, eff.gpus, eff.nice, eff.hours) == (None, None, 10, ())
    assert eff.open_at(at("sun", "03:00")) and eff.next_change(at("sun", "03:00")) is None


@pytest.mark.parametrize(("text", "expect"), [
    ("cpus: lots\n", "/home/alice/.distribute-policy:1: cpus:"),
    ("nice: 30\n", "/home/alice/.distribute-policy:1: nice: must be between 0 and 19"),
    ("cpus: 2\nhourz: weekends\n", "/home/alice/.distribute-policy:2: unknown key hourz: "
                                   "did you mean 'hours'?"),
    ("hours: mon-fry\n", "/home/alice/.distribute-policy:1: hours: 'mon-fry' is not a day"),
    ("hours: 18:00-18:00\n", "starts and ends at the same time"),
    ("hours: mon 25:00-08:00\n", "25:00 is not a time of day"),
    ("max_pause: 0\n", "max_pause: must be longer than zero"),
    ("cpus: [1\n", "/home/alice/.distribute-policy:1"),
    ("- cpus: 1\n", "a policy file must be a mapping of keys"),
])
def test_a_bad_policy_file_is_reported_with_its_line_and_key(text: str, expect: str) -> None:
    got = parse_policy(text, "/home/alice/.distribute-policy", "alice")
    assert got.policy is None and expect in got.error, got.error


def test_found_files_are_read_once_and_unreadable_ones_say_how_to_fix_them() -> None:
    out = ("@@policy alice /home/alice/.distribute-policy\ncpus: 3\n\n@@end\n"
           "@@policy alice /home/alice/.distribute-policy\ncpus: 3\n@@end\n"
           "@@unreadable bob /home/bob/.distribute-policy\n")
    found = parse_found(out)
    assert [f.path for f in found] == ["/home/alice/.distribute-policy",
                                       "/home/bob/.distribute-policy"]
    assert found[0].policy is not None and found[0].policy.cpus == 3
    assert "cannot be read by dssh's user" in found[1].error and "chmod o+r" in found[1].error
    assert combine(host(), found).errors == [found[1].error]


def test_inventory_hours_and_nice_are_checked_like_the_owners() -> None:
    with pytest.raises(Exception) as e:
        parse_inventory("hosts:\n  ws1:\n    hours: 'sat 9-17'\n", "inventory.yaml")
    assert "inventory.yaml:3: hosts.ws1.hours: 'sat 9-17' is not 'DAYS HH:MM-HH:MM'" in str(e.value)
    with pytest.raises(Exception) as e:
        parse_inventory("hosts:\n  ws1:\n    nice: -1\n", "inventory.yaml")
    assert "inventory.yaml:3: hosts.ws1.nice: must be between 0 and 19" in str(e.value)
    assert parse_hours("daily 09:00-17:00")[0].days == frozenset(range(7))

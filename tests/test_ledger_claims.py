"""``ledger.sh claims`` (remote/ledger.sh), run by ``sh`` here: the batch of claims a head
makes when it starts several jobs on a host at once. Same rules as one claim at a time:
each request is granted in turn while it fits; what does not fit waits."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from distribute_ssh import ledger

SCRIPT = Path(__file__).resolve().parent.parent / "distribute_ssh" / "remote" / "ledger.sh"

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock")


def claims(led: Path, reqs: list[tuple[str, int]], cap: int = 2) -> tuple[list, ledger.Ledger]:
    cmd = ledger.claims_command(str(SCRIPT), str(led), head="me@lab:/r", user="me",
                                machine="lab", sweep="default/s", cap_cpus=cap,
                                cap_slots=None, cap_gpus=())
    stdin = "".join(ledger.claims_request(f"me-{n}", f"{n}.1", "job", cpus, (), f"/w/{n}/1")
                    for n, cpus in reqs)
    out = subprocess.run(["sh", "-c", cmd], input=stdin, capture_output=True, text=True,
                         check=True).stdout
    verdicts, led_, _ = ledger.parse_many(out, len(reqs))
    return verdicts, led_


def test_a_batch_is_granted_in_turn_while_it_fits(tmp_path: Path) -> None:
    led = tmp_path / "ledger"
    verdicts, _ = claims(led, [("a", 1), ("b", 1), ("c", 1)])
    assert [v for v, _ in verdicts] == ["ok", "ok", "full"]
    made = sorted(p.name for p in led.glob("c-*"))
    assert made == ["c-me-a", "c-me-b"]
    fields = dict(line.split(" ", 1) for line in (led / "c-me-a").read_text().splitlines()
                  if " " in line)
    assert (fields["job"], fields["cpus"], fields["dir"], fields["head"]) == \
        ("a.1", "1", "/w/a/1", "me@lab:/r")
    assert len(list(led.glob("w-*"))) == 1  # c waits in the queue
    # the next batch sees both claims (unsigned, fresh: starting) and gets no room
    verdicts, look = claims(led, [("d", 1)])
    assert verdicts == [("full", "no room")]
    assert sorted(c.job for c in look.claims) == ["a.1", "b.1"]


def test_an_ended_claim_frees_its_room_and_is_removed(tmp_path: Path) -> None:
    led = tmp_path / "ledger"
    claims(led, [("a", 1), ("b", 1)])
    with open(led / "c-me-a", "a") as f:  # what the job's wrapper writes when it ends
        f.write("ended\n")
    verdicts, look = claims(led, [("c", 1)])
    assert verdicts[0][0] == "ok"
    assert [c.job for c in look.claims] == ["b.1"]  # a no longer counts...
    assert not (led / "c-me-a").exists()  # ...and its user's head removed it
    assert (led / "c-me-c").exists()


def test_a_name_someone_else_holds_fails_that_claim_alone(tmp_path: Path) -> None:
    led = tmp_path / "ledger"
    claims(led, [("a", 1)], cap=8)
    # a directory by the name the next claim needs: it cannot be written, nor removed
    (led / "c-me-b").mkdir()
    verdicts, _ = claims(led, [("b", 1), ("c", 1)], cap=8)
    assert verdicts[0][0] == "error" and "cannot write" in verdicts[0][1]
    assert verdicts[1][0] == "ok" and (led / "c-me-c").is_file()


def test_forget_drops_a_dead_lifes_unlaunched_claims_and_keeps_the_rest(tmp_path: Path) -> None:
    """``ledger.sh forget``, as a head runs it at each connection: claims of its earlier life
    for starts that never reached their wrapper go; a start launched in the last 30 s (its
    wrapper signs the claim in a moment), a signed claim and other heads' claims stay."""
    led = tmp_path / "ledger"
    runs = {n: tmp_path / "w" / n / "1" for n in "abcde"}
    for n in "bc":
        (runs[n] / ".dssh").mkdir(parents=True)
        (runs[n] / ".dssh" / "launched").touch()
    old = (runs["c"] / ".dssh" / "launched")
    t = old.stat().st_mtime - 60
    os.utime(old, (t, t))

    def claim(n: str, head: str) -> None:
        cmd = ledger.claims_command(str(SCRIPT), str(led), head=head, user="me",
                                    machine="lab", sweep="default/s", cap_cpus=8,
                                    cap_slots=None, cap_gpus=())
        subprocess.run(["sh", "-c", cmd], check=True, capture_output=True, text=True,
                       input=ledger.claims_request(f"me-{n}", f"{n}.1", "job", 1, (),
                                                   str(runs[n])))

    for n in "abcd":
        claim(n, "me@lab:/r")
    claim("e", "me@lab:/other")
    with open(led / "c-me-d", "a") as f:  # its wrapper ran and signed it
        f.write(f"pid {os.getpid()}\npstart 1\n")
    out = subprocess.run(["sh", "-c", ledger.forget_command(str(SCRIPT), str(led),
                                                            "me@lab:/r", "me")],
                         check=True, capture_output=True, text=True).stdout
    assert sorted(p.name for p in led.glob("c-*")) == ["c-me-b", "c-me-d", "c-me-e"]
    look, _ = ledger.parse(out)
    assert sorted(c.job for c in look.claims) == ["b.1", "e.1"]  # (d's pid is not its)

"""What a head reads from a host's ledger (distribute_ssh/ledger.py), line by line."""

from __future__ import annotations

from distribute_ssh import ledger

T = "\t"


def test_a_granted_claim_then_the_rest_of_the_script() -> None:
    text = "\n".join([
        "ok 1795646329",
        T.join(["claim", "bob", "2", "0,1", "1795646300", "job", "running", "lab/mesh",
                "m-1.1", "laptop", "bob@laptop:/r/lab/mesh", "/home/bob/.dssh/jobs/x/1"]),
        T.join(["waiter", "carol", "4", "0", "1795646310.5", "default/fit",
                "carol@box:/r/default/fit"]),
        T.join(["cap", "4", "", "0,1"]), T.join(["used", "2", "1", ""]),
        T.join(["token", "1795646329.77"]), "started 4242"])
    led, rest = ledger.parse(text)
    assert (led.verdict, led.error) == ("ok", "")
    assert led.claims[0].user == "bob" and led.claims[0].gpus == (0, 1)
    assert led.claims[0].dir == "/home/bob/.dssh/jobs/x/1"
    assert led.waiters[0].since == 1795646310.5 and led.waiters[0].cpus == 4
    assert (led.cap_cpus, led.cap_slots, led.cap_gpus) == (4, None, (0, 1))
    assert (led.used_cpus, led.used_jobs, led.token) == (2, 1, "1795646329.77")
    assert rest == ["started 4242"]
    assert led.foreign({"/home/bob/.dssh/jobs/x/1"}) == []


def test_refusals_and_errors() -> None:
    led, _ = ledger.parse("yield carol (default/fit) has waited longer\ntoken\t1\n")
    assert (led.verdict, led.reason) == ("yield", "carol (default/fit) has waited longer")
    led, _ = ledger.parse("full no room\ntoken\t1\n")
    assert led.verdict == "full"
    led, _ = ledger.parse("error the ledger dir /x is not writable by bob\n")
    assert led.error.startswith("the ledger dir /x")
    led, _ = ledger.parse(T.join(["cap", "", "-", "-"]) + "\n")
    assert (led.cap_cpus, led.cap_slots, led.cap_gpus) == (None, None, ())


def test_decisions_for_a_batch_of_claims() -> None:
    """``ledger.sh claims``: a decision per request, in order, then the ledger; one claim
    the ledger could not write fails alone."""
    text = "\n".join([
        "ok 1795646329", "error cannot write /tmp/dssh-ledger/c-bob-1", "full no room",
        T.join(["cap", "2", "", "-"]), T.join(["used", "0", "0", ""]),
        T.join(["token", "1795646329.77"]), "DSSH-STARTS", "started 0 4242"])
    verdicts, led, rest = ledger.parse_many(text, 3)
    assert verdicts == [("ok", "1795646329"), ("error", "cannot write /tmp/dssh-ledger/c-bob-1"),
                        ("full", "no room")]
    assert (led.cap_cpus, led.token, led.error) == (2, "1795646329.77", "")
    assert rest == ["DSSH-STARTS", "started 0 4242"]


def test_a_ledger_that_failed_before_deciding() -> None:
    verdicts, led, _ = ledger.parse_many("error the ledger dir /x is not writable by bob", 2)
    assert verdicts == [] and "not writable" in led.error


def test_a_batch_request_line() -> None:
    assert ledger.claims_request("bob-ab", "j.1", "job", 2, (0, 1), "/w/jobs/x/j/1") == \
        "bob-ab\tj.1\tjob\t2\t0,1\t/w/jobs/x/j/1\n"
    assert ledger.claims_request("bob-ab", "j.1", "job", 1, (), "/d").split("\t")[4] == "-"

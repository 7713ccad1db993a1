"""distribute_ssh/schedule.py: which queued job goes to which host. Pure, so tested in bulk."""

from __future__ import annotations

import random
import time
from collections import Counter

import attrs
import pytest

from distribute_ssh.schedule import HostSlots, JobNeed, Placement, place, unrunnable

N = JobNeed


def host(name: str, cpus: int = 8, *, slots: int | None = None, gpus: tuple[int, ...] = (),
         caps: tuple[str, ...] = (), available: bool = True) -> HostSlots:
    return HostSlots(name, cpus, slots, gpus, frozenset(caps), available=available)


def queue(*needs: JobNeed) -> list[tuple[int, JobNeed]]:
    return list(enumerate(needs))


def hosts_of(placements: list[Placement]) -> list[str]:
    return [p.host for p in placements]


# -- capabilities and capacity --------------------------------------------------------------

def test_capabilities_are_respected() -> None:
    hs = [host("plain", 64), host("py", 4, caps=("python3",)),
          host("both", 4, caps=("python3", "apptainer"))]
    need = N(cpus=1, requires=frozenset({"python3", "apptainer"}))
    out = place(queue(*[need] * 6), hs)
    assert set(hosts_of(out)) == {"both"}
    assert len(out) == 4  # "both" is full; the others lack a capability
    out = place(queue(N(cpus=1, requires=frozenset({"python3"}))), hs)
    assert hosts_of(out) == ["py"]


def test_cpus_are_never_exceeded_and_excess_jobs_wait() -> None:
    hs = [host("a", 8), host("b", 4)]
    out = place(queue(*[N(cpus=3)] * 10), hs)
    per = Counter(hosts_of(out))
    assert per == {"a": 2, "b": 1}
    assert hs[0].used_cpus == 6 and hs[1].used_cpus == 3
    assert all(p.cpus == 3 and p.gpus == () for p in out)


def test_a_later_smaller_job_is_not_blocked_by_one_that_does_not_fit() -> None:
    hs = [host("a", 4)]
    out = place(queue(N(cpus=3), N(cpus=3), N(cpus=1)), hs)
    assert [p.job for p in out] == [0, 2]


def test_slots_limit_jobs_per_host() -> None:
    hs = [host("a", 32, slots=2)]
    out = place(queue(*[N(cpus=1)] * 5), hs)
    assert len(out) == 2 and hs[0].running == 2 and hs[0].used_cpus == 2


def test_a_hosts_room_is_counted_in_jobs_of_the_sweeps_size() -> None:
    """How many of the sweep's jobs a host runs at once (what chains and trial links
    weigh the queue against): its cpus over each job's, its slots and GPUs, what its
    ledger puts in force; none where the jobs never fit."""
    h = host("a", 8)
    assert h.room_for(JobNeed(cpus=2)) == 4
    assert h.room_for(JobNeed(cpus=1)) == 8
    assert h.room_for(JobNeed(cpus=None)) == 1  # the whole host
    assert h.room_for(JobNeed(cpus=16)) == 0
    assert host("b", 8, slots=3).room_for(JobNeed(cpus=2)) == 3
    ledgered = host("c", 8)
    ledgered.ledger_cpus = 4
    assert ledgered.room_for(JobNeed(cpus=2)) == 2
    assert host("d", 8, gpus=(0, 1)).room_for(JobNeed(cpus=1, gpus=1)) == 2
    assert host("e", 8).room_for(JobNeed(cpus=1, gpus=1)) == 0
    assert host("f", 8).room_for(JobNeed(cpus=1, requires=frozenset({"solver"}))) == 0


def test_job_larger_than_any_host_never_runs_and_is_unrunnable() -> None:
    hs = [host("a", 4), host("b", 8)]
    assert place(queue(N(cpus=16)), hs) == []
    assert unrunnable(N(cpus=16), hs)
    assert not unrunnable(N(cpus=8), hs)
    assert unrunnable(N(cpus=1, gpus=1), hs)
    assert unrunnable(N(cpus=1, requires=frozenset({"cuda"})), hs)
    assert not unrunnable(N(cpus=None), hs)


def test_unavailable_host_gets_nothing_but_still_counts_as_capable() -> None:
    hs = [host("down", 8, available=False)]
    assert place(queue(N(cpus=1)), hs) == []
    assert not unrunnable(N(cpus=1), hs)


def test_cpus_none_takes_a_whole_host() -> None:
    hs = [host("a", 8), host("b", 6)]
    out = place(queue(N(), N(), N()), hs)
    assert sorted((p.host, p.cpus) for p in out) == [("a", 8), ("b", 6)]
    assert hs[0].free_cpus == 0 and hs[1].free_cpus == 0


def test_cpus_none_waits_for_an_empty_host() -> None:
    hs = [host("a", 8)]
    first = place(queue(N(cpus=1)), hs)
    assert place([(1, N())], hs) == []
    hs[0].give_back(first[0].cpus, first[0].gpus)
    out = place([(1, N())], hs)
    assert hosts_of(out) == ["a"] and out[0].cpus == 8


# -- GPUs ----------------------------------------------------------------------------------

def test_gpu_ids_are_never_handed_out_twice_and_come_back_with_give_back() -> None:
    h = host("g", 32, gpus=(0, 1, 2))
    out = place(queue(N(cpus=1, gpus=2), N(cpus=1, gpus=2), N(cpus=1, gpus=1)), [h])
    assert [p.job for p in out] == [0, 2]
    ids = [g for p in out for g in p.gpus]
    assert sorted(ids) == [0, 1, 2] and len(set(ids)) == 3
    assert h.free_gpus == []
    assert place([(1, N(cpus=1, gpus=2))], [h]) == []
    h.give_back(out[0].cpus, out[0].gpus)
    again = place([(1, N(cpus=1, gpus=2))], [h])
    assert len(again) == 1 and set(again[0].gpus) == set(out[0].gpus)
    assert h.busy_gpus == {0, 1, 2}


def test_gpu_ids_are_the_hosts_own_ids() -> None:
    h = host("g", 8, gpus=(3, 7))
    out = place(queue(N(cpus=1, gpus=1), N(cpus=1, gpus=1)), [h])
    assert sorted(g for p in out for g in p.gpus) == [3, 7]


def test_gpu_jobs_only_on_gpu_hosts() -> None:
    hs = [host("cpu1", 64), host("cpu2", 64), host("gpu", 8, gpus=(0,))]
    out = place(queue(*[N(cpus=1, gpus=1)] * 3), hs)
    assert hosts_of(out) == ["gpu"]
    assert out[0].gpus == (0,)
    hs2 = [host("cpu", 64), host("gpu2", 8, gpus=(0, 1))]
    assert place(queue(N(cpus=1, gpus=3)), hs2) == []
    assert unrunnable(N(cpus=1, gpus=3), hs2)


def test_gpu_less_jobs_prefer_gpu_less_hosts_and_overflow_to_gpu_hosts() -> None:
    hs = [host("a-gpu", 16, gpus=(0, 1)), host("z-cpu", 4)]
    out = place(queue(*[N(cpus=2)] * 2), hs)
    # the GPU host is bigger, emptier and sorts first by name, yet the CPU host wins
    assert hosts_of(out) == ["z-cpu", "z-cpu"]
    more = place([(2, N(cpus=2)), (3, N(cpus=2))], hs)
    assert hosts_of(more) == ["a-gpu", "a-gpu"]
    assert all(p.gpus == () for p in more)
    assert hs[0].free_gpus == [0, 1]


def test_gpu_less_whole_host_job_prefers_gpu_less_host() -> None:
    hs = [host("gpu", 8, gpus=(0,)), host("cpu", 8)]
    out = place(queue(N()), hs)
    assert hosts_of(out) == ["cpu"]


# -- spreading ------------------------------------------------------------------------------

def test_three_equal_hosts_three_jobs_one_each() -> None:
    hs = [host("a"), host("b"), host("c")]
    out = place(queue(N(cpus=1), N(cpus=1), N(cpus=1)), hs)
    assert sorted(hosts_of(out)) == ["a", "b", "c"]


def test_every_host_busy_before_any_doubles_up() -> None:
    hs = [host(f"h{i}", 8) for i in range(5)]
    out = place(queue(*[N(cpus=2)] * 7), hs)
    per = Counter(hosts_of(out))
    assert set(per) == {f"h{i}" for i in range(5)}
    assert max(per.values()) == 2


def test_least_loaded_by_share_of_cpus() -> None:
    big, small = host("big", 32), host("small", 4)
    big.take(N(cpus=4))   # 1/8 busy
    small.take(N(cpus=1))  # 1/4 busy
    out = place(queue(N(cpus=1)), [small, big])
    assert hosts_of(out) == ["big"]


# -- avoid (retries prefer another host) ------------------------------------------------------

def test_retry_goes_to_another_host_when_one_fits() -> None:
    hs = [host("a"), host("b")]
    out = place([(7, N(cpus=1))], hs, avoid={7: {"a"}})
    assert hosts_of(out) == ["b"]
    out = place([(8, N(cpus=1))], hs, avoid={8: {"b"}})
    assert hosts_of(out) == ["a"]


def test_retry_waits_rather_than_going_back_when_another_capable_host_is_busy() -> None:
    hs = [host("a", 4), host("b", 4)]
    hs[1].take(N(cpus=4))  # b is full right now
    assert place([(7, N(cpus=1))], hs, avoid={7: {"a"}}) == []
    assert hs[0].used_cpus == 0
    # others are not held back by the waiting retry
    assert hosts_of(place([(7, N(cpus=1)), (8, N(cpus=1))], hs, avoid={7: {"a"}})) == ["a"]


def test_retry_goes_back_when_no_other_host_could_ever_take_it() -> None:
    hs = [host("a", 4, caps=("cuda",)), host("b", 64), host("c", 2, caps=("cuda",),
                                                                 available=False)]
    need = N(cpus=1, requires=frozenset({"cuda"}))
    out = place([(7, need)], hs, avoid={7: {"a"}})
    assert hosts_of(out) == ["a"]
    assert hosts_of(place([(8, N(cpus=8))], hs, avoid={8: {"b"}})) == ["b"]  # a is too small


def test_retry_avoiding_every_host_still_runs() -> None:
    hs = [host("a"), host("b")]
    out = place([(7, N(cpus=1))], hs, avoid={7: {"a", "b"}})
    assert len(out) == 1


# -- randomized invariants ---------------------------------------------------------------------

CAPS = ("python3", "apptainer", "cuda")


def _random_hosts(rng: random.Random) -> list[HostSlots]:
    hs = []
    for i in range(rng.randint(1, 5)):
        ngpu = rng.choice((0, 0, 1, 2, 4))
        gpus = tuple(sorted(rng.sample(range(8), ngpu)))
        hs.append(HostSlots(
            f"h{i}", rng.randint(1, 16), rng.choice((None, None, 1, 2, 3)), gpus,
            frozenset(c for c in CAPS if rng.random() < 0.7), available=rng.random() < 0.9))
    return hs


def _random_need(rng: random.Random) -> JobNeed:
    return JobNeed(rng.choice((None, 1, 1, 2, 3, 4, 8, 20)), rng.choice((0, 0, 0, 1, 2, 3)),
                   frozenset(c for c in CAPS if rng.random() < 0.2))


def _copy(hs: list[HostSlots]) -> list[HostSlots]:
    return [attrs.evolve(h, busy_gpus=set(h.busy_gpus)) for h in hs]


def _check_state(hs: list[HostSlots], running: dict[int, Placement]) -> None:
    for h in hs:
        mine = [p for p in running.values() if p.host == h.name]
        assert h.used_cpus == sum(p.cpus for p in mine) <= h.cpus
        assert h.running == len(mine)
        if h.slots is not None:
            assert h.running <= h.slots
        ids = [g for p in mine for g in p.gpus]
        assert len(ids) == len(set(ids)), f"a GPU of {h.name} is held twice"
        assert set(ids) == h.busy_gpus
        assert h.busy_gpus <= set(h.gpus)


def _check_placements(before: list[HostSlots], after: list[HostSlots],
                      q: list[tuple[int, JobNeed]], avoid: dict[int, set[str]],
                      out: list[Placement]) -> None:
    """Replay ``out`` on a copy of the hosts and check every choice against the rules."""
    sim = {h.name: h for h in _copy(before)}
    needs = dict(q)
    order = [j for j, _ in q]
    assert [order.index(p.job) for p in out] == sorted(order.index(p.job) for p in out)
    assert len({p.job for p in out}) == len(out)
    for p in out:
        need = needs[p.job]
        h = sim[p.host]
        assert h.available and h.fits_now(need)
        assert need.requires <= h.capabilities
        assert p.cpus == (h.cpus if need.cpus is None else need.cpus)
        assert len(p.gpus) == need.gpus and set(p.gpus) <= set(h.free_gpus)
        fitting = [o for o in sim.values() if o.fits_now(need)]
        bad = avoid.get(p.job, set())
        if p.host in bad:
            assert all(o.name in bad for o in fitting)
            assert not any(o.name not in bad and o.available and o.can_ever_run(need)
                           for o in sim.values())
        else:
            fitting = [o for o in fitting if o.name not in bad]
        if need.gpus == 0 and h.gpus:
            assert all(o.gpus for o in fitting), "a GPU-less host was free"
        same_class = [o for o in fitting if bool(o.gpus) == bool(h.gpus) or need.gpus > 0]
        share = h.used_cpus / h.cpus
        assert all(share <= o.used_cpus / o.cpus for o in same_class), "not the least loaded"
        assert h.take(need) == (p.cpus, p.gpus)
    # what place() left behind is exactly what the replay reserved
    for h in after:
        s = sim[h.name]
        assert (h.used_cpus, h.running, h.busy_gpus) == (s.used_cpus, s.running, s.busy_gpus)
    # nothing left in the queue could have been placed (resources only shrink within place)
    placed = {p.job for p in out}
    for j, need in q:
        if j in placed:
            continue
        fits = [h for h in after if h.fits_now(need)]
        if j not in avoid:
            assert not fits, f"job {j} fits on {fits[0].name} but was left queued"
        elif fits:
            bad = avoid[j]
            assert all(h.name in bad for h in fits)
            assert any(h.name not in bad and h.available and h.can_ever_run(need) for h in after)


def _simulate(seed: int) -> int:
    rng = random.Random(seed)
    hs = _random_hosts(rng)
    waiting: list[tuple[int, JobNeed]] = []
    running: dict[int, Placement] = {}
    next_id = 0
    placed = 0
    for _step in range(rng.randint(5, 15)):
        for _ in range(rng.randint(0, 5)):
            waiting.append((next_id, _random_need(rng)))
            next_id += 1
        avoid = {j: set(rng.sample([h.name for h in hs], rng.randint(1, len(hs))))
                 for j, _ in waiting if rng.random() < 0.15}
        if rng.random() < 0.1:
            h = rng.choice(hs)
            h.available = not h.available
        before = _copy(hs)
        out = place(list(waiting), hs, avoid)
        _check_placements(before, hs, waiting, avoid, out)
        for p in out:
            running[p.job] = p
        # jobs no host could ever take leave the queue (the engine fails them)
        waiting = [(j, n) for j, n in waiting if j not in running and not unrunnable(n, hs)]
        _check_state(hs, running)
        placed += len(out)
        for j in [j for j in running if rng.random() < 0.4]:
            p = running.pop(j)
            next(h for h in hs if h.name == p.host).give_back(p.cpus, p.gpus)
            _check_state(hs, running)
    return placed


def test_random_sequences_keep_every_invariant() -> None:
    t0 = time.perf_counter()
    total = sum(_simulate(seed) for seed in range(1000))
    elapsed = time.perf_counter() - t0
    assert total > 4000, "the random cases place too little to mean anything"
    assert elapsed < 10, f"{elapsed:.1f}s: the scheduler (or this test) got slow"


def test_placement_is_deterministic() -> None:
    def run() -> list[Placement]:
        rng = random.Random(42)
        hs = _random_hosts(rng)
        return place([(i, _random_need(rng)) for i in range(30)], hs)

    assert run() == run()


@pytest.mark.parametrize("seed", range(5))
def test_place_mutates_only_counters(seed: int) -> None:
    rng = random.Random(seed)
    hs = _random_hosts(rng)
    fixed = [attrs.evolve(h, used_cpus=0, running=0, busy_gpus=set()) for h in hs]
    place([(i, _random_need(rng)) for i in range(20)], hs)
    assert [attrs.evolve(h, used_cpus=0, running=0, busy_gpus=set()) for h in hs] == fixed


# -- other heads' claims (the host's ledger, SPEC §6a) ---------------------------------------

def test_other_heads_claims_count_against_cpus_slots_and_gpus() -> None:
    h = host("shared", 8, slots=3, gpus=(0, 1))
    h.foreign_cpus, h.foreign_jobs, h.foreign_gpus = 6, 2, {0}
    out = place(queue(N(cpus=2, gpus=1), N(cpus=2, gpus=1)), [h])
    assert [(p.cpus, p.gpus) for p in out] == [(2, (1,))]  # 2 cpus and GPU 1 were left
    assert h.full and place(queue(N(cpus=1)), [h]) == []
    h2 = host("slots", 8, slots=2)
    h2.foreign_jobs = 2  # two small jobs of others fill its slots, not its cpus
    assert place(queue(N(cpus=1)), [h2]) == []


def test_the_capacity_in_force_is_the_smaller_of_ours_and_the_ledgers() -> None:
    h = host("small", 8, gpus=(0, 1))
    h.ledger_cpus, h.ledger_slots, h.ledger_gpus = 4, 1, (1,)
    out = place(queue(N(), N(cpus=1, gpus=1)), [h])
    assert [(p.cpus, p.gpus) for p in out] == [(4, ())]  # "the whole host" is 4 cpus
    h.give_back(4, ())
    out = place(queue(N(cpus=1, gpus=1)), [h])
    assert out[0].gpus == (1,)  # GPU 0 is not in every inventory sharing the host


def test_a_blocked_host_waits_and_gpu_less_jobs_overflow_only_when_others_fill_the_rest(
        ) -> None:
    cpu, gpu = host("cpu", 4), host("gpu", 4, gpus=(0,))
    cpu.blocked = True  # its ledger refused our last claim: wait for it to change
    assert hosts_of(place(queue(N(cpus=2)), [cpu, gpu])) == ["gpu"]
    cpu.blocked = False
    gpu.give_back(2, ())
    cpu.foreign_cpus, cpu.foreign_jobs = 2, 1  # another head holds half of the CPU host
    assert hosts_of(place(queue(N(cpus=2)), [cpu, gpu])) == ["cpu"]
    assert hosts_of(place(queue(N(cpus=2)), [cpu, gpu])) == ["gpu"]  # now it is full


# -- what the head makes of its hosts' ledgers ----------------------------------------------
def _head_on_one_host(tmp_path, name: str, n: int, cpus: int):
    """A real, prepared Head for a sweep of ``n`` jobs of ``true`` (1 cpu each) and one
    host ``ws1`` of ``cpus`` (not connected: its HostRt as the head keeps it), to call its
    methods on."""
    import yaml

    from distribute_ssh.engine import Head, HostRt, RunOptions
    from distribute_ssh.model.inventory import load_inventory
    from distribute_ssh.model.sweep import load_sweep

    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(
        {"name": name, "run": {"command": "true", "cpus": 1}, "params": {"i": list(range(1, n + 1))}}))
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(
        {"hosts": {"ws1": {"address": "127.0.0.1", "cpus": cpus}}}))
    head = Head(load_sweep(tmp_path / "sweep.yaml"), load_inventory(tmp_path / "inventory.yaml"),
                RunOptions(state_path=tmp_path / "state.db", results=tmp_path / "results"))
    head.prepare()
    h = HostRt(head.inventory.hosts["ws1"])
    h.slots = HostSlots("ws1", cpus)
    return head, h


def _two_running(tmp_path, name: str):
    """A head (as _head_on_one_host, 6 jobs, 2 cpus) whose host is ready and runs its first
    two jobs, one cpu each; spawned tasks are not run but kept. (head, host, jobs in
    order, spawned)."""
    import asyncio

    head, h = _head_on_one_host(tmp_path, name, 6, 2)
    spawned: list = []
    head._spawn = lambda coro: spawned.append(coro.close()) or asyncio.Future()  # type: ignore
    h.status, h.conn, h.workdir = "ready", object(), "/w"
    jobs = sorted(head.jobs.values(), key=lambda j: j.order)
    for j in jobs[:2]:
        j.host, j.attempts, j.remote_dir = "ws1", 1, f"/w/{j.planned.name}/1"
        head._set(j, "running", state="RUNNING", host="ws1")
        head._hold(h, j)
        j.cpus = 1
    h.slots.used_cpus = 2
    return head, h, jobs, spawned


def test_a_head_never_takes_its_own_claims_for_another_heads_room(tmp_path) -> None:
    """A look at a host's ledger is older than what the head knows by the time it reads it:
    a job heard ending (its room given back) may still hold its claim there, and a chain's
    wrapper that moved on names its next job before the head hears of the move. Counted as
    another head's room, each made a head alone on its hosts stand in their ledgers' queues
    (a `ledger.sh wait` session on the host each time) while it should start jobs."""
    from distribute_ssh import ledger

    head, h = _head_on_one_host(tmp_path, "own", 4, 4)
    try:
        a, b, c, d = sorted(head.jobs.values(), key=lambda j: j.planned.name)
        for j, n, state in ((a, 1, "RUNNING"), (b, 1, "STARTING"), (c, 2, "RUNNING"),
                            (d, 1, "RUNNING")):
            j.host, j.attempts, j.remote_dir = "ws1", n, f"/w/{j.planned.name}/{n}"
            j.state = state
        a.held = False  # ended and heard: its room given back, its claim not yet marked
        b.queued = True  # the next job of a chain, which its wrapper has just moved on to
        head._hold(h, d)  # running, counted

        def claim(j, attempt: int, who: str = head.head_id) -> ledger.Claim:
            return ledger.Claim("me", 1, (), 0.0, "job", "running", head.sweep.key,
                                f"{j.planned.name}.{attempt}", "m", who,
                                f"/w/{j.planned.name}/{attempt}")

        head._apply_ledger(h, ledger.Ledger(claims=[claim(a, 1), claim(b, 1), claim(d, 1)]))
        assert (h.slots.foreign_jobs, h.slots.foreign_cpus) == (0, 0)
        # Another head's claim is its room; so is one of ours for an attempt we do not
        # have there (an earlier attempt, say, that an earlier life of this head left).
        head._apply_ledger(h, ledger.Ledger(claims=[claim(a, 1, "other-head"), claim(c, 1),
                                                    claim(d, 1)]))
        assert (h.slots.foreign_jobs, h.slots.foreign_cpus) == (2, 2)
        # A job queued again (its host was lost, say) while its wrapper may still run there.
        a.state = "PENDING"
        head._apply_ledger(h, ledger.Ledger(claims=[claim(a, 1), claim(d, 1)]))
        assert h.slots.foreign_jobs == 1
    finally:
        head.close()


def test_a_collection_whose_host_is_lost_while_it_waits_is_left_for_the_reconnection(
        tmp_path) -> None:
    """A collection waits its turn (starts go first); its host may be lost meanwhile. The
    jobs then stay to collect once the host is back, and the head goes on: before, the
    collection took the lost connection for granted and the whole head stopped with an
    internal error."""
    import asyncio

    head, h = _head_on_one_host(tmp_path, "lost", 2, 2)
    try:
        h.tar = h.find_printf = True
        jobs = sorted(head.jobs.values(), key=lambda j: j.planned.name)
        for j in jobs:
            j.host, j.attempts, j.state = "ws1", 1, "RUNNING"
            j.remote_dir = f"/w/.dssh/jobs/default/lost/{j.planned.name}/1"
            j.busy = True
        h.to_collect = list(jobs)
        assert h.conn is None  # the host is lost: its connection is gone
        asyncio.run(head._collect_batches(h))
        assert h.to_collect == [] and not any(j.busy for j in jobs)
        assert {j.state for j in jobs} == {"RUNNING"}  # still to collect, nothing lost
        assert head.fatal is None
    finally:
        head.close()


def test_the_look_ahead_links_only_jobs_due_to_end_on_hosts_within_their_limits(
        tmp_path) -> None:
    """Which running jobs get their slot's next job linked ahead (SPEC §5): those expected
    to end within the lead, while the jobs ended so far took about as long as each other
    and none still running has run far longer, on a host that is not over what its
    owners' policy or its ledger now allow, and where no other head waits."""
    import asyncio

    from distribute_ssh import engine

    head, h, jobs, spawned = _two_running(tmp_path, "ahead")
    try:
        a, b = jobs[:2]
        now = time.monotonic()
        for j, ago in ((a, 0.9), (b, 0.2)):  # a is due to end within the lead, b is not
            j.dispatched = now - ago

        def look(durations) -> list:
            head.ended_n = len(durations)
            head.ended_secs = sum(durations)
            head.ended_sq = sum(x * x for x in durations)
            for j in jobs[2:]:
                j.busy = j.queued = j.linked = False
            a.next_id = b.next_id = -1
            h.to_link = []

            async def go():
                head._look_ahead([h], head._queued())
            asyncio.run(go())
            return [(x.planned.name, y.planned.name) for x, y in h.to_link]

        same = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.0, 1.03]
        assert look(same) == [(a.planned.name, jobs[2].planned.name)]
        assert a.next_id == jobs[2].id and jobs[2].queued and jobs[2].linked
        assert len(spawned) == 1  # the round trip that makes the link, one per host
        assert look(same[:engine.CHAIN_AFTER - 1]) == []  # too few ended to tell
        assert look([0.2, 1.8] * 4) == []  # as long on average, but all over the place
        assert look([0.3] * 8) == []  # short: chains do better
        h.slots.cpus = 1  # its owner's policy now allows 1 cpu, and 2 run
        assert look(same) == []
        h.slots.cpus = 2
        h.slots.ledger_slots = 1  # another head declared fewer slots in the ledger
        assert look(same) == []
        h.slots.ledger_slots = None
        h.waiting = True  # queued jobs wait for room other heads hold: theirs first
        assert look(same) == []
        h.waiting = False
        # Another job still runs long past the mean: the ended ones, the first to end,
        # were the short ones, and the durations vary more than they show.
        b.dispatched = time.monotonic() - 2.0
        assert look(same) == []
        b.dispatched = time.monotonic() - 0.2
        assert look(same) == [(a.planned.name, jobs[2].planned.name)]
        # Expected to end sooner than a link takes to be in place on the host (the jobs
        # of a first wave, found alike only as they end together): none is sent, it
        # would be refused and hold up the start that follows.
        a.dispatched = time.monotonic() - 0.85  # expected to end in about 0.15 s
        h.trip = 0.4
        assert look(same) == []
        h.trip = 0.02
        assert look(same) == [(a.planned.name, jobs[2].planned.name)]
        a.cancel = True
        assert look(same) == []
    finally:
        head.close()


def test_only_the_ends_of_jobs_this_head_started_tell_how_long_jobs_take(tmp_path) -> None:
    """A resumed head finds jobs running that a head before it started: it has no start
    time for them, and their ends must not count as durations. Counted from none, one
    such end made every job look days long, and the whole rest of the sweep ran with no
    chains and no look-ahead."""
    import asyncio

    from distribute_ssh import engine

    head, h, jobs, _ = _two_running(tmp_path, "resumed")
    try:
        found, ours = jobs[:2]
        found.dispatched = 0.0  # as a resumed head finds it: running, started by another
        ours.dispatched = time.monotonic() - 0.5
        for j in jobs[2:]:
            j.dispatched = time.monotonic() - 0.5

        async def end(j) -> None:  # (the collection it spawns is kept, not run)
            head._on_end(h, j.planned.name, "1", "0")
        asyncio.run(end(found))
        assert (head.ended_n, head.ended_secs) == (0, 0.0)
        asyncio.run(end(ours))
        assert head.ended_n == 1 and 0.5 <= head.ended_secs < 60
        head.ended_n, head.ended_secs = engine.CHAIN_AFTER, 0.05 * engine.CHAIN_AFTER
        head.by_state = {"PENDING": 400}
        assert head._chain_len([h.slots], head._need) > 1  # short jobs, a long queue: chains
    finally:
        head.close()


def test_before_any_job_has_ended_running_jobs_are_linked_their_next_on_trial(
        tmp_path) -> None:
    """With no job ended yet (SPEC §5, "Look-ahead"): a job this run started alone in its
    slot, still running TRIAL_AFTER later, is linked its slot's next job on trial, once;
    not while the queue has fewer jobs than the slots, nor for a job the run did not
    start (one found running on a host, say); a look is due back at TRIAL_SECONDS."""
    import asyncio

    from distribute_ssh import engine

    head, h, jobs, _ = _two_running(tmp_path, "trial")
    try:
        a, b = jobs[:2]

        def look(a_ago: float, b_ago: float, fresh: bool = True) -> list:
            now = time.monotonic()
            a.dispatched, b.dispatched = now - a_ago, now - b_ago
            a.fresh = b.fresh = fresh
            for j in jobs[2:]:
                j.busy = j.queued = j.linked = j.trial = False
            a.next_id = b.next_id = -1
            h.to_link = []

            async def go():
                head._look_ahead([h], head._queued())
                return h.recall
            recall = asyncio.run(go())
            return [(x.planned.name, y.planned.name, y.trial) for x, y in h.to_link], recall

        assert head.ended_n == 0
        links, recall = look(engine.TRIAL_AFTER + 0.05, engine.TRIAL_AFTER / 4)
        assert links == [(a.planned.name, jobs[2].planned.name, True)]  # b: too soon
        assert not a.fresh and b.fresh  # once per job
        assert recall is not None  # the trial's end is looked at
        assert look(1.0, 1.0)[0] == [(a.planned.name, jobs[2].planned.name, True),
                                     (b.planned.name, jobs[3].planned.name, True)]
        assert look(1.0, 1.0, fresh=False)[0] == []  # not started by this run
        h.trip = engine.TRIAL_TRIP * 2  # its starts are slow: its ends come late
        assert look(1.0, 1.0)[0] == []
        h.trip = 0.0
        for j in jobs[2:5]:
            j.state = "COMPLETED"  # one job queued, for two slots
        head.by_state = {"RUNNING": 2, "PENDING": 1}
        assert look(1.0, 1.0)[0] == []
    finally:
        head.close()


def test_a_run_linked_ahead_passes_its_slot_only_once_its_wrapper_said_it_took_it(
        tmp_path) -> None:
    """At the end of a job with a run linked behind it: heard with ~took before it, the slot
    goes on to that run; heard without, the link's answer settles it; found by looking
    (the watch was away, a ~took may be lost), a look at the run's dir settles it."""
    import asyncio

    head, h = _head_on_one_host(tmp_path, "took", 2, 2)
    try:
        a, b = sorted(head.jobs.values(), key=lambda j: j.order)

        def linked() -> None:
            for j in (a, b):
                j.host, j.attempts, j.remote_dir = "ws1", 1, f"/w/{j.planned.name}/1"
            head._set(a, "running", state="RUNNING", host="ws1")
            head._set(b, "starting", state="STARTING", host="ws1")
            a.held, b.held = False, False
            head._hold(h, a)
            a.next_id = b.id
            b.busy = b.queued = b.linked = True
            b.took = False

        async def go(heard: bool) -> None:
            head._chain_next(h, a, heard=heard)
            await asyncio.sleep(0)  # (the runs handed on are recorded in one go)

        linked()
        asyncio.run(go(True))  # no ~took heard: the link's answer is awaited
        assert (b.queued, b.busy, b.held, a.held, b.state) == (True, True, False, True,
                                                               "STARTING")
        linked()
        b.took = True  # the wrapper said it took it, before the end
        asyncio.run(go(True))
        assert (b.queued, b.held, a.held, b.state) == (False, True, False, "RUNNING")
        linked()
        asyncio.run(go(False))  # found by looking: its dir will tell
        assert (b.queued, b.busy, b.linked, b.state) == (False, False, False, "STARTING")
    finally:
        head.close()

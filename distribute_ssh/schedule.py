"""Which queued job goes to which host next. Pure: no I/O, no clock, no asyncio.

Rules, in order:
- a host takes a job only if it has every capability the sweep requires, enough GPUs,
  and free cpus, GPUs and slots right now (``cpus`` unset on the job means the whole host),
  counting what other heads hold there (the host's ledger, SPEC §6a);
- jobs that need GPUs go only to hosts that have them; jobs that don't prefer hosts
  without GPUs, so GPUs stay free for those who need them (the original tool's rule);
- among the rest, the least loaded host (by share of its cpus in use) wins, so every
  capable host gets busy before any doubles up;
- jobs are considered in their queue order; one that fits nowhere now does not block
  the ones behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs


@attrs.define
class HostSlots:
    """What one host offers and has in use, as the scheduler sees it."""

    name: str
    cpus: int
    slots: int | None = None  # None: as many jobs as the cpus allow
    gpus: tuple[int, ...] = ()
    capabilities: frozenset[str] = frozenset()
    used_cpus: int = 0
    running: int = 0
    busy_gpus: set[int] = attrs.Factory(set)
    available: bool = True  # connected, built, not excluded
    # What other heads hold here, and the capacity the host's ledger puts in force (the
    # smallest any head sharing it declares), as last seen.
    foreign_cpus: int = 0
    foreign_jobs: int = 0
    foreign_gpus: set[int] = attrs.Factory(set)
    ledger_cpus: int | None = None
    ledger_slots: int | None = None
    ledger_gpus: tuple[int, ...] | None = None
    blocked: bool = False  # the ledger refused a claim: wait until it changes

    @property
    def limit_cpus(self) -> int:
        return self.cpus if self.ledger_cpus is None else min(self.cpus, self.ledger_cpus)

    @property
    def limit_slots(self) -> int | None:
        if self.ledger_slots is None:
            return self.slots
        return self.ledger_slots if self.slots is None else min(self.slots, self.ledger_slots)

    @property
    def free_cpus(self) -> int:
        return self.limit_cpus - self.used_cpus - self.foreign_cpus

    @property
    def free_gpus(self) -> list[int]:
        return [g for g in self.gpus if g not in self.busy_gpus and g not in self.foreign_gpus
                and (self.ledger_gpus is None or g in self.ledger_gpus)]

    @property
    def full(self) -> bool:
        """No room for any job now: its slots are taken, or its cpus."""
        slots = self.limit_slots
        return (self.blocked or self.free_cpus <= 0
                or (slots is not None and self.running + self.foreign_jobs >= slots))

    def can_ever_run(self, need: JobNeed) -> bool:
        return (need.requires <= self.capabilities and len(self.gpus) >= need.gpus
                and (need.cpus is None or need.cpus <= self.cpus))

    def room_for(self, need: JobNeed) -> int:
        """How many jobs of ``need`` the host runs at once when nothing else runs there
        (its slots, cpus and GPUs as they limit now): 0 where they never fit."""
        if not self.can_ever_run(need):
            return 0
        n = 1 if need.cpus is None else self.limit_cpus // max(need.cpus, 1)
        if need.gpus:
            n = min(n, len(self.gpus) // need.gpus)
        slots = self.limit_slots
        return n if slots is None else min(n, slots)

    def fits_now(self, need: JobNeed) -> bool:
        if not self.available or self.blocked or not self.can_ever_run(need):
            return False
        slots = self.limit_slots
        if slots is not None and self.running + self.foreign_jobs >= slots:
            return False
        cpus = self.limit_cpus if need.cpus is None else need.cpus
        return cpus <= self.free_cpus and need.gpus <= len(self.free_gpus)

    def take(self, need: JobNeed) -> tuple[int, tuple[int, ...]]:
        cpus = self.limit_cpus if need.cpus is None else need.cpus
        gpus = tuple(self.free_gpus[: need.gpus])
        self.used_cpus += cpus
        self.running += 1
        self.busy_gpus.update(gpus)
        return cpus, gpus

    def give_back(self, cpus: int, gpus: tuple[int, ...]) -> None:
        self.used_cpus = max(0, self.used_cpus - cpus)
        self.running = max(0, self.running - 1)
        self.busy_gpus.difference_update(gpus)


@attrs.frozen
class JobNeed:
    cpus: int | None = None
    gpus: int = 0
    requires: frozenset[str] = frozenset()


@attrs.frozen
class Placement:
    job: int  # the caller's job id
    host: str
    cpus: int
    gpus: tuple[int, ...]


def _preference(host: HostSlots, need: JobNeed) -> tuple:
    # GPU-less jobs go to GPU-less hosts first; then the least loaded host; then by name.
    gpu_penalty = 1 if (need.gpus == 0 and host.gpus) else 0
    load = (host.used_cpus + host.foreign_cpus) / max(host.limit_cpus, 1)
    return (gpu_penalty, load, host.running + host.foreign_jobs, host.name)


def place(queue: Iterable[tuple[int, JobNeed]], hosts: list[HostSlots],
          avoid: Any = None, *, one_need: bool = False) -> list[Placement]:
    """Assign as many queued jobs as fit now. Mutates ``hosts`` to reserve what it hands out.

    ``avoid`` maps a job to hosts it should not go to unless no other host could ever
    take it (a retry prefers another host): anything with ``get(job)``. The queue is read
    only as far as needed: up to where every host is full, or, with ``one_need`` (every
    job needs the same), up to the first job no host has room for.
    """
    out: list[Placement] = []
    if not any(h.available and not h.full for h in hosts):
        return out
    for job, need in queue:
        candidates = [h for h in hosts if h.fits_now(need)]
        if not candidates:
            if one_need:
                break
            continue
        bad = (avoid or {}).get(job)
        if bad:
            others = [h for h in candidates if h.name not in bad]
            if others:
                candidates = others
            elif any(h.name not in bad and h.available and h.can_ever_run(need) for h in hosts):
                continue  # wait for a better host rather than retry where it failed
        host = min(candidates, key=lambda h: _preference(h, need))
        cpus, gpus = host.take(need)
        out.append(Placement(job, host.name, cpus, gpus))
        if not any(h.available and not h.full for h in hosts):
            break
    return out


def unrunnable(need: JobNeed, hosts: list[HostSlots]) -> bool:
    """True when no host at all could ever take a job with this need."""
    return not any(h.can_ever_run(need) for h in hosts)

"""Running a sweep from Python: ``run(sweep, inventory)`` returns per-job results."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import attrs

from .engine import JobResult, RunOptions, RunResult, run_sweep
from .model.inventory import Inventory, load_inventory
from .model.sweep import Sweep, load_sweep, validate_sweep

__all__ = ["run", "JobResult", "RunResult"]


def run(sweep: Sweep | str | os.PathLike, inventory: Inventory | str | os.PathLike | None = None,
        *, results: str | os.PathLike | None = None, state: str | os.PathLike | None = None,
        name: str | None = None, hosts: list[str] | None = None,
        accept_new_hostkeys: bool = False) -> RunResult:
    """Run (or resume) a sweep to its end and return what became of every job.

    ``sweep`` is a :class:`Sweep` or a sweep file's path; ``inventory`` an
    :class:`Inventory`, a path, or None for the usual lookup (SPEC §2).
    """
    sweep_file = None
    if not isinstance(sweep, Sweep):
        sweep_file = str(sweep)
        sweep = load_sweep(sweep)
    else:
        if sweep.base_dir == ".":
            sweep = attrs.evolve(sweep, base_dir=str(Path.cwd()))
        validate_sweep(sweep)
    if not isinstance(inventory, Inventory):
        inventory = load_inventory(inventory)
    options = RunOptions(results=Path(results) if results else None,
                         state_path=Path(state) if state else None, name=name, hosts=hosts,
                         accept_new_hostkeys=accept_new_hostkeys)
    return asyncio.run(run_sweep(sweep, inventory, options, sweep_file=sweep_file))

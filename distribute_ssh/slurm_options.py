"""The sbatch options a sweep's ``slurm:`` blocks may give (SPEC §10); light enough for
sweep validation to use."""

from __future__ import annotations

import re
from typing import Any

# sbatch options dssh sets itself: a sweep cannot set them.
RESERVED = {
    "array": "dssh makes one array task per job; limit how many run at once with "
             "'dssh slurm --max-parallel N'",
    "dependency": "dssh makes the arrays wait for the build; remove it",
    "wrap": "dssh writes the batch scripts; remove it",
    "parsable": "submit.sh reads sbatch's output itself; remove it",
}
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*([-_][A-Za-z0-9]+)*\Z")
# Options that give a job GPUs: with one of them set, run.gpus adds no --gres.
GPU_OPTIONS = ("gres", "gpus", "gpus-per-task", "gpus-per-node", "gpus-per-socket")


def option_problem(key: Any, value: Any) -> str | None:
    """What is wrong with one sbatch option of a ``slurm:`` block, or None."""
    if not isinstance(key, str) or not _OPTION.match(key) or len(key) < 2:
        return (f"{key!r} is not an sbatch option: give its long name without dashes, e.g. "
                "partition: cpu, time: \"02:00:00\", mem-per-cpu: 2G (or mem_per_cpu)")
    name = key.replace("_", "-").lower()
    if name in RESERVED:
        return RESERVED[name]
    if isinstance(value, dict | list) or value is None:
        return ("an sbatch option takes one value (text, a number, or true for a "
                f"flag such as exclusive: true), got {value!r}")
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return "the value must be on one line"
    return None


def options(block: dict[str, Any] | None) -> dict[str, Any]:
    """A ``slurm:`` block as sbatch long options: ``mem_per_cpu`` -> ``mem-per-cpu``."""
    return {k.replace("_", "-").lower(): v for k, v in (block or {}).items()}



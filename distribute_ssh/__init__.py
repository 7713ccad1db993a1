"""distribute_ssh (``dssh``): parameter sweeps across a lab's workstations over SSH.

The public Python API. Names are imported lazily so ``import distribute_ssh`` (and the
``dssh`` command) stay fast; SSH libraries load only when something connects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Sweep": "model.sweep", "Run": "model.sweep", "Build": "model.sweep", "File": "model.sweep",
    "Job": "model.sweep", "Outputs": "model.sweep", "Notify": "model.sweep",
    "load_sweep": "model.sweep",
    "parse_sweep": "model.sweep", "Inventory": "model.inventory", "Host": "model.inventory",
    "load_inventory": "model.inventory", "parse_inventory": "model.inventory",
    "run": "api", "DsshError": "errors", "ConfigError": "errors",
}

__all__ = [
    "Build", "ConfigError", "DsshError", "File", "Host", "Inventory", "Job", "Notify", "Outputs",
    "Run",
    "Sweep", "__version__", "load_inventory", "load_sweep", "parse_inventory", "parse_sweep", "run",
]

if TYPE_CHECKING:
    from .api import run
    from .errors import ConfigError, DsshError
    from .model.inventory import Host, Inventory, load_inventory, parse_inventory
    from .model.sweep import Build, File, Job, Notify, Outputs, Run, Sweep, load_sweep, parse_sweep


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'distribute_ssh' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)

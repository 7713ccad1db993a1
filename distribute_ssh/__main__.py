"""``python -m distribute_ssh`` is the ``dssh`` command."""

from .cli import entry

entry()

"""``python -m distribute_ssh`` is the ``dssh`` command."""

import sys

from .cli import main

sys.exit(main())

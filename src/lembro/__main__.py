"""``python -m lembro``: see :mod:`lembro.cli`."""

import sys

from .cli import main

sys.exit(main())

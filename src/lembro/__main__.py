"""``python -m lembro``: the same as the ``lembro`` command; see :mod:`lembro.cli`."""

import sys

from .cli import main

sys.exit(main())

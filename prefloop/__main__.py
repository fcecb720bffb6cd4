"""``python -m prefloop``: the ``prefloop`` command (also how ``torchrun -m prefloop train`` starts it)."""

import sys

from prefloop.cli import main

sys.exit(main())

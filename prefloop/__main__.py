"""``python -m prefloop``: the ``prefloop`` command (also how ``torchrun -m prefloop train`` starts it).

A script, not a module anything imports: the one place below the application layer that starts it (the layers
test allows exactly this file).
"""

import sys

from loop.cli import main

sys.exit(main())

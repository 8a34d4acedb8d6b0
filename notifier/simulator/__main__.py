"""``python -m notifier.simulator``: the same as ``notifier simulate``."""

import sys

from notifier.simulator.cli import main

sys.exit(main())

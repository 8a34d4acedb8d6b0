"""``python -m notifier.simulator``: the same as ``notifier simulate``."""

import sys

from notifier.cli.simulate import main

sys.exit(main())

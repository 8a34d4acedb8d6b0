"""``python -m notifier`` is the same program as ``notifier``."""

import sys

from notifier.cli import main

sys.exit(main())

"""The ``notifier`` command line: one module per command group, ``main`` dispatches to them.

``main.py`` parses; ``run.py`` (run, check-config), ``status.py``, ``discover.py``,
``state.py``, ``webhooks.py``, ``auth.py`` and ``simulate.py`` each add their subcommand and run
it.
Only this package prints to the terminal.
"""

from notifier.cli.main import main

__all__ = ["main"]

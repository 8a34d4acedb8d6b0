"""What every command prints the same way: a configuration file's problems."""

from __future__ import annotations

from typing import TextIO

from notifier.errors import ConfigError


def print_config_error(exc: ConfigError, err: TextIO) -> None:
    """The headline (file and count) once, then one line per problem."""
    if exc.problems != [str(exc)]:
        print(exc, file=err)
    for line in exc.problems:
        print(line, file=err)

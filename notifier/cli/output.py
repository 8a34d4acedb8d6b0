"""What every command prints the same way: a configuration file's problems, aligned tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from notifier.errors import ConfigError


def print_config_error(exc: ConfigError, err: TextIO) -> None:
    """The headline (file and count) once, then one line per problem."""
    if exc.problems != [str(exc)]:
        print(exc, file=err)
    for line in exc.problems:
        print(line, file=err)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *,
                 right: Iterable[int] = ()) -> list[str]:
    """Lines of an aligned table; columns in ``right`` are right-aligned (numbers), the last
    column is never padded (no trailing spaces)."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right_cols = set(right)
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            if i == len(row) - 1 and i not in right_cols:
                parts.append(cell)
            elif i in right_cols:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
    return lines

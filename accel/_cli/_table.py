"""Rows of columns on stdout: aligned for a person, tab-separated for a program.

On a terminal the columns line up under a header (``accel search``'s sizes and pull
commands read as a table, not as text pushed about by tab stops); piped, each row is
its fields joined by tabs, with no header, so ``cut -f`` and scripts keep working.
"""

from __future__ import annotations

import sys

__all__ = ["print_table"]


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Print ``rows`` (each as many fields as ``header``)."""
    if not sys.stdout.isatty():
        for row in rows:
            print("\t".join(row).rstrip("\t"))
        return
    if not rows:
        return
    table = [header, *rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in table) for i in range(len(header))]
    for row in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        print("  ".join(cells).rstrip())

"""Tables that fit the terminal by wrapping columns, not rows: every cell stays on one line, and columns that do not
fit move to a further table below (the key column repeated), as `ls`-style tools do. An 80-column terminal shows
`wanserve models` as two readable tables instead of one table of cells broken into slivers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


@dataclass(frozen=True)
class Column:
    """A column: its header, and how its cells are justified."""

    header: str
    justify: str = "left"
    foldable: bool = False
    """Free text (a message): it may wrap inside its cell when it alone is wider than the terminal."""


def _table(title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]], keys: Sequence[int]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for index in keys:
        column = columns[index]
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.foldable,
            overflow="fold" if column.foldable else "ellipsis",
        )
    for row in rows:
        table.add_row(*(row[i] for i in keys))
    return table


def _fits(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], keys: Sequence[int]) -> bool:
    """Whether these columns fit the console: at their full width, or folded where a column may fold."""
    measured = Measurement.get(console, console.options.update(width=10_000), _table(None, columns, rows, keys))
    foldable = any(columns[i].foldable for i in keys)
    return (measured.minimum if foldable else measured.maximum) <= console.width


def column_groups(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[list[int]]:
    """Column indices per table: the first (key) column in each, the others in order while they fit."""
    groups: list[list[int]] = []
    current = [0]
    for index in range(1, len(columns)):
        candidate = [*current, index]
        if len(current) > 1 and not _fits(console, columns, rows, candidate):
            groups.append(current)
            current = [0, index]
        else:
            current = candidate
    groups.append(current)
    return groups


def print_table(
    console: Console, title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]
) -> list[list[int]]:
    """Prints `rows` as one table, or as several (columns wrapped) when one would be wider than the console.
    Returns the column groups printed."""
    groups = column_groups(console, columns, rows)
    for number, keys in enumerate(groups, 1):
        suffix = f" ({number}/{len(groups)})" if len(groups) > 1 else ""
        console.print(_table(title + suffix, columns, rows, keys))
    return groups

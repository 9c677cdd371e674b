"""The live progress block at the bottom of a terminal: rows redrawn in place.

What rich's ``Live`` does, with the three things a person saw go wrong in a real
terminal (tmux, 80 and 120 columns) put right:

- **Columns that hold still.** The label and figures columns only ever widen (to the
  widest text seen), and the bar takes what is left, so bars do not jump sideways or
  change length from one frame to the next when a longer file name or a faster speed
  shows up. On a narrow terminal the bar goes first, then labels are cut with ``…``;
  no row ever wraps.
- **Ctrl-C leaves no torn frame.** Every row stays two columns short of the width: the
  terminal's ``^C`` echo then never wraps onto a new line, which made the final redraw
  start one line too low and left a stale row above the frame.
- **A resize redraws cleanly.** When the terminal narrows, it re-wraps the rows already
  drawn (tmux, VTE, kitty, iTerm2 and Windows Terminal do), so the block moves up by the
  rows the old frame occupies at the new width, not by its line count.

:func:`layout` is pure (rows and a width in, text lines out); :class:`LiveBlock` does
the terminal I/O. The redraw is rich's own sequence (CR, erase line, then cursor up and
erase per row), so what reads rich's frames reads these.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["MARGIN", "LiveBlock", "Row", "Widths", "figures_room", "layout"]

#: columns left free at the right of every row (the ``^C`` echo, a cursor in the last
#: column that would wrap)
MARGIN = 2
_MIN_BAR = 6
_MAX_BAR = 40
_MIN_LABEL = 12
_ELLIPSIS = "…"

_BAR_DONE = "\x1b[38;5;197m"
_BAR_FINISHED = "\x1b[38;5;106m"
_BAR_BACK = "\x1b[38;5;237m"
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class Row:
    """One row: a label, how far along (``None``: unknown, no bar drawn), the figures."""

    label: str
    fraction: float | None
    figures: str
    bold: bool = False


@dataclass
class Widths:
    """The widest label and figures seen so far: columns only ever grow."""

    label: int = 0
    figures: int = 0


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text.ljust(width)
    return text[: max(0, width - 1)] + _ELLIPSIS if width > 0 else ""


def _bar(fraction: float | None, width: int, color: bool) -> str:
    if width <= 0:
        return ""
    if fraction is None:
        return (_BAR_BACK + "━" * width + _RESET) if color else "─" * width
    fraction = min(1.0, max(0.0, fraction))
    halves = int(fraction * width * 2)
    full, half = divmod(halves, 2)
    done = "━" * full + ("╸" if half else "")
    rest_len = width - len(done)
    if not color:
        return done + "─" * rest_len
    style = _BAR_FINISHED if fraction >= 1.0 else _BAR_DONE
    rest = (
        ("╺" if rest_len and not half and full else "━") + "━" * (rest_len - 1) if rest_len else ""
    )
    return f"{style}{done}{_BAR_BACK}{rest}{_RESET}"


def figures_room(size: str) -> int:
    """Room the figures of a row of ``size`` (as printed) take while it runs at full
    width (``999.9 KiB / SIZE 999.9 MiB/s ETA 0:00``): reserved from the first frame,
    so the bar's right end does not move in as the speed and ETA grow."""
    return len(f"999.9 KiB / {size} 999.9 MiB/s ETA 0:00")


def layout(
    rows: list[Row],
    width: int,
    widths: Widths,
    *,
    color: bool = False,
    reserve: Widths | None = None,
) -> list[str]:
    """The text lines of ``rows`` for a terminal ``width`` columns wide.

    Each line is at most ``width - MARGIN`` visible characters. ``widths`` carries the
    column widths across frames and is widened here, never narrowed; ``reserve`` widens
    it at once to what rows still to come will need (a version's file names), so the
    bars start in one column from the first frame to the last.
    """
    if reserve is not None:
        widths.label = max(widths.label, reserve.label)
        widths.figures = max(widths.figures, reserve.figures)
    for row in rows:
        widths.label = max(widths.label, len(row.label))
        widths.figures = max(widths.figures, len(row.figures))
    room = max(1, width - MARGIN)
    figures = min(widths.figures, room)
    label = widths.label
    bar = room - label - figures - 2
    if bar < _MIN_BAR:
        # no room for a bar: labels give way first (down to a few characters), then figures
        bar = 0
        label = max(min(_MIN_LABEL, widths.label), room - figures - 1)
        label = min(label, widths.label, room)
        figures = max(0, min(figures, room - label - 1))
    bar = min(bar, _MAX_BAR)
    out = []
    for row in rows:
        name = _cut(row.label, label)
        if row.bold and color:
            name = f"\x1b[1m{name}{_RESET}"
        parts = [name]
        if bar:
            parts.append(_bar(row.fraction, bar, color))
        parts.append(_cut(row.figures, figures).rstrip())
        out.append(" ".join(parts).rstrip())
    return out


def _visible(line: str) -> int:
    """Visible width of a line that may hold SGR colour codes."""
    n, i = 0, 0
    while i < len(line):
        if line[i] == "\x1b":
            j = line.find("m", i)
            i = j + 1 if j >= 0 else len(line)
            continue
        n += 1
        i += 1
    return n


@dataclass
class LiveBlock:
    """Rows redrawn in place on ``stream`` (a terminal), text printed above them."""

    stream: TextIO
    color: bool = field(default_factory=lambda: not os.environ.get("NO_COLOR"))
    widths: Widths = field(default_factory=Widths)
    _lines: list[str] = field(default_factory=list)
    _width: int = 0
    _started: bool = False
    _closed: bool = False

    def width(self) -> int:
        """The terminal's width now (a resize shows at the next frame); a pty that was
        never given a size (``script``, some CI runners) says 0: then $COLUMNS, or 80."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((80, 24)).columns or 80

    def _rows_drawn(self, width: int) -> int:
        """Screen rows the last frame takes now: a narrowed terminal re-wrapped them."""
        return sum(max(1, -(-_visible(line) // width)) for line in self._lines) if width else 0

    def _erase(self, width: int) -> str:
        rows = self._rows_drawn(width)
        if rows == 0:
            return ""
        return "\r\x1b[2K" + "\x1b[1A\x1b[2K" * (rows - 1)

    def show(self, rows: list[Row], reserve: Widths | None = None) -> None:
        """Draw ``rows`` in place of the last frame (nothing once closed: a frame drawn
        below the closed one would leave its first rows behind, stale)."""
        if self._closed:
            return
        width = self.width()
        lines = layout(rows, width, self.widths, color=self.color, reserve=reserve)
        out = "" if self._started else "\x1b[?25l"  # hide the cursor while drawing
        self._started = True
        out += self._erase(width) + "\n".join(lines)
        self._lines, self._width = lines, width
        self.stream.write(out)
        self.stream.flush()

    def print_above(self, text: str) -> None:
        """Print ``text`` (one or more lines) above the block, then redraw the block."""
        if self._closed:
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        width = self.width()
        out = self._erase(width) + text + "\n" + "\n".join(self._lines)
        self.stream.write(out)
        self.stream.flush()

    def close(self) -> None:
        """Leave the last frame on screen, the cursor on the line below it, shown."""
        self._closed = True
        if self._started:
            # the last frame once more: it also wipes a "^C" the terminal echoed after it
            frame = self._erase(self.width()) + "\n".join(self._lines)
            self.stream.write(frame + ("\n" if self._lines else "") + "\x1b[?25h")
            self.stream.flush()
            self._started = False

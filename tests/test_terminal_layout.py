"""The live block's layout (accel/_cli/_live.py), pure: rows and a width in, lines out."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel._cli._live import MARGIN, LiveBlock, Row, Widths, layout

_rows = st.lists(
    st.builds(
        Row,
        label=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        fraction=st.one_of(st.none(), st.floats(0, 1)),
        figures=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    ),
    min_size=1,
    max_size=8,
)


# pure and fast: only the generation of inputs is slow on a loaded machine
_RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@_RELAXED
@given(rows=_rows, width=st.integers(8, 240), color=st.booleans())
def test_no_line_reaches_the_last_two_columns(rows: list[Row], width: int, color: bool) -> None:
    widths = Widths()
    for line in layout(rows, width, widths, color=color):
        visible = line
        while "\x1b[" in visible:
            start = visible.index("\x1b[")
            visible = visible[:start] + visible[visible.index("m", start) + 1 :]
        assert len(visible) <= width - MARGIN, (line, width)


@_RELAXED
@given(first=_rows, later=_rows, width=st.integers(40, 240))
def test_columns_only_widen_and_bars_start_in_one_column(
    first: list[Row], later: list[Row], width: int
) -> None:
    widths = Widths()
    layout(first, width, widths)
    before = (widths.label, widths.figures)
    layout(later, width, widths)
    assert widths.label >= before[0] and widths.figures >= before[1]
    # with the widths reserved, every row's bar starts in the same column
    reserve = Widths(max(len(r.label) for r in first + later), 0)
    lines = layout(first + later, width, Widths(), reserve=reserve)
    starts = {line.find("━") for line in lines if "━" in line}
    assert len(starts) <= 1


def test_a_pty_that_has_no_size_is_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """`script` and some CI runners give a pty of 0x0: the display still draws."""
    monkeypatch.delenv("COLUMNS", raising=False)
    master, slave = os.openpty()
    try:
        with os.fdopen(os.dup(slave), "w") as stream:
            block = LiveBlock(stream, color=False)
            assert block.width() == 80
    finally:
        os.close(master)
        os.close(slave)


def test_print_above_then_close_leaves_the_last_frame_below_the_text() -> None:
    out = io.StringIO()
    out.fileno = lambda: (_ for _ in ()).throw(OSError())  # type: ignore[method-assign]
    block = LiveBlock(out, color=False)
    block.show([Row("total", 0.5, "1.0 MiB / 2.0 MiB")])
    block.print_above("ready m@1")
    block.close()
    block.show([Row("total", 1.0, "late")])  # after close: drawn nowhere
    text = out.getvalue()
    assert text.endswith("total " + "━" * 20 + "─" * 20 + " 1.0 MiB / 2.0 MiB\n\x1b[?25h")
    assert "ready m@1\n" in text and "late" not in text

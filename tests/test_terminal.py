"""The first ten minutes in a real terminal: what ``accel install`` and ``accel get``
draw on a pty, read off a VT100 screen (tests/support/terminal.py) as a person sees it.

Each test holds something a person saw go wrong in tmux at 80 and 120 columns: bars
that jumped sideways as labels changed width, a total that first counted only one of
the versions asked for and read ``0 B/s`` as soon as one finished, a stale row left
above the frame after Ctrl-C, rows mangled by a resize, an empty ``total`` bar left
before an error, a resumed ``get`` whose speed counted the bytes it kept.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hub import RunningHub, publish_model, running_hub
from tests.support.terminal import Terminal, Tmux

MiB = 1 << 20
_UNIT = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1 << 30}
_SIZE = r"([\d.]+) (B|KiB|MiB|GiB)"
_FIGURES = re.compile(rf"{_SIZE} / {_SIZE}(?: (?:{_SIZE}/s ETA (\S+)|(done|failed)))?")
_BAR = re.compile(r"[━╸╺─]")
ACCEL = [sys.executable, "-m", "accel"]


def _bytes(num: str, unit: str) -> float:
    return float(num) * _UNIT[unit]


def _figures(row: str) -> tuple[float, float, float | None, str | None] | None:
    """(done, total, speed or None, 'done'/'failed' or None) of a display row."""
    m = _FIGURES.search(row)
    if m is None:
        return None
    speed = _bytes(m.group(5), m.group(6)) if m.group(5) else None
    return _bytes(m.group(1), m.group(2)), _bytes(m.group(3), m.group(4)), speed, m.group(8)


def _near(a: float, b: float) -> bool:
    """Equal to the display's rounding (one decimal of the unit shown)."""
    return abs(a - b) <= max(0.06 * MiB, 0.002 * max(a, b))


@pytest.fixture(scope="module")
def terminal_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    root = tmp_path_factory.mktemp("terminal-hub")
    # like the demo's models: a few large files and many small ones
    big = {"encoder.onnx": 5 * MiB, "decoder.onnx": 3 * MiB, "config.json": 300}
    publish_model(root, "whisper-small-zh", "1.1.0", big, block_size=1 * MiB)
    small = {f"shards/part-{i:03d}.bin": 20_000 for i in range(40)}
    publish_model(root, "marian-zh-en", "1.1.0", small, task="mt", block_size=1 * MiB)
    publish_model(root, "big", "1", {"big.bin": 48 * MiB}, block_size=4 * MiB)
    # 16 MiB blocks (the publish default): a 5 MiB file is fetched in one request
    publish_model(root, "one-request", "1", {"model.bin": 5 * MiB})
    with running_hub(root) as hub:
        yield hub


def _env(hub: RunningHub, models: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCEL_")}
    env.update(ACCEL_HUB=hub.url, ACCEL_MODELS_DIR=str(models), XDG_CONFIG_HOME="/nonexistent")
    env.pop("NO_COLOR", None)
    return env


SIZES = {"whisper-small-zh@1.1.0": 8 * MiB + 300, "marian-zh-en@1.1.0": 40 * 20_000}


def _block(rows: list[str]) -> dict[str, str]:
    """The display's rows by label (total, each version), those with figures."""
    out = {}
    for row in rows:
        for label in ("total", *SIZES):
            if row.startswith(label + " ") and _figures(row) is not None:
                out[label] = row
    return out


def test_install_at_80_columns_holds_still_and_its_total_tells_the_truth(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    cmd = [*ACCEL, "install", *SIZES, "--limit-rate", "2M"]
    term = Terminal(cmd, _env(terminal_hub, tmp_path / "models"), columns=80)
    try:
        assert term.wait() == 0, "\n".join(term.screen())
    finally:
        term.close()
    everything = sum(SIZES.values())
    bar_at: set[int] = set()
    shown = 0
    after_ready = []
    for _t, frame in term.frames:
        rows = [r.rstrip() for r in frame]
        block = _block(rows)
        for row in rows:
            if _figures(row) is not None and not row.startswith(("ready ", "resuming ")):
                # two columns stay free: the ^C echo and a full last column never wrap
                assert len(row) <= 78, row
        if "total" not in block:
            continue
        total = block["total"]
        m = _BAR.search(total)
        if m is not None:
            bar_at.add(m.start())
        done, size, speed, end = _figures(total) or (0, 0, None, None)
        # every version asked for, from the first frame on
        assert _near(size, everything), total
        assert done >= shown - 0.06 * MiB, f"total went back: {total}"
        shown = max(shown, int(done))
        if any(r.startswith("ready ") for r in rows) and end is None and done < size - MiB:
            after_ready.append(speed)  # bytes still to come (not the last one verifying)
    assert len(bar_at) == 1, f"the bars moved sideways: started at columns {sorted(bar_at)}"
    # one version ready, the other still running: the total still has its speed (under
    # load both may end between two frames: then there is no such frame to look at)
    assert all(s for s in after_ready), after_ready
    final = _block(term.screen())
    done, size, _, end = _figures(final["total"]) or (0, 0, None, None)
    assert end == "done" and _near(done, everything) and _near(size, everything), final
    for key in SIZES:
        assert (_figures(final[key]) or (0, 0, 0, ""))[3] == "done", final[key]


def test_ctrl_c_leaves_one_clean_frame_and_says_how_to_resume(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    env = _env(terminal_hub, tmp_path / "models")
    cmd = [*ACCEL, "install", *SIZES, "--limit-rate", "1M"]
    term = Terminal(cmd, env, columns=80)
    try:
        term.wait_for(lambda rows: (f := _figures(_block(rows).get("total", ""))) and f[0] > 0)
        term.ctrl_c()
        assert term.wait() == 130
        rows = term.screen()
    finally:
        term.close()
    shown = "\n".join(rows)
    assert [r for r in rows if r.startswith("total")] and sum(
        r.startswith("total") for r in rows
    ) == 1, shown
    for key in SIZES:
        assert sum(r.startswith(key + " ") for r in rows) <= 1, shown
    assert "accel: interrupted; finished chunks are kept: rerun the same command to resume" in (
        shown
    )
    assert "^C" not in shown, shown  # the last frame was drawn over the echo
    # the rerun says what it kept
    term = Terminal(cmd, env, columns=80)
    try:
        assert term.wait() == 0
        assert any(r.startswith("resuming ") and " kept, " in r for r in term.screen())
    finally:
        term.close()


def test_a_failure_before_any_progress_leaves_no_empty_bar(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    term = Terminal([*ACCEL, "install", "nosuch"], _env(terminal_hub, tmp_path / "m"))
    try:
        assert term.wait() == 1
        rows = [r for r in term.screen() if r]
    finally:
        term.close()
    assert rows and rows[0].startswith("accel: error [not_found]: nosuch: "), rows
    assert not any(r.startswith("total") or _BAR.search(r) for r in rows), rows


def test_a_resumed_get_rates_only_what_it_fetches(terminal_hub: RunningHub, tmp_path: Path) -> None:
    url = terminal_hub.file_url("big", "1", "big.bin")
    env = _env(terminal_hub, tmp_path / "m")
    cmd = [*ACCEL, "get", url, "-o", str(tmp_path / "big.bin"), "--limit-rate", "8M"]
    term = Terminal(cmd, env, columns=80)
    try:
        term.wait_for(lambda rows: any((f := _figures(r)) and f[0] >= 20 * MiB for r in rows))
        term.ctrl_c()
        assert term.wait() == 130
    finally:
        term.close()
    term = Terminal(cmd, env, columns=80)
    try:
        assert term.wait() == 0, "\n".join(term.screen())
    finally:
        term.close()
    speeds = [
        f[2]
        for _t, frame in term.frames
        for row in frame
        if row.startswith("big.bin ") and (f := _figures(row)) and f[2] is not None
    ]
    assert speeds, "\n".join(term.screen())
    # a 8 MiB/s cap: the ~20 MiB kept are not speed (they read as ~15 MiB/s when counted)
    assert max(speeds) <= 1.35 * 8 * MiB, [round(s / MiB, 1) for s in speeds]
    assert any(r.startswith("big.bin ") and r.endswith("done") for r in term.screen())


def test_a_terminal_that_narrows_and_widens_keeps_one_clean_frame(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    """tmux re-wraps what is on screen when its window narrows: the display must move
    up over the rows its last frame takes now, or stale rows pile up above it."""
    env = _env(terminal_hub, tmp_path / "models")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    tmux = Tmux(env, columns=120)
    try:
        tmux.run(
            f"{sys.executable} -m accel install {' '.join(SIZES)} --limit-rate 1M; echo EXIT=$?"
        )
        tmux.wait_for(lambda rows: (f := _figures(_block(rows).get("total", ""))) and f[0] > 0)
        tmux.resize(50)
        before = _figures(_block(tmux.screen()).get("total", ""))
        tmux.wait_for(lambda rows: _figures(_block(rows).get("total", "")) != before, 30)
        tmux.resize(120)
        rows = tmux.wait_for(lambda rows: any(r.startswith("EXIT=") for r in rows), 120)
    finally:
        tmux.close()
    shown = "\n".join(r for r in rows if r)
    assert "EXIT=0" in shown, shown
    assert sum(r.startswith("total") for r in rows) == 1, shown
    for key in SIZES:
        assert sum(r.startswith(key + " ") for r in rows) == 1, shown
    # nothing left of a frame drawn at another width: every row with figures is a whole one
    for row in rows:
        if _figures(row) is not None and not row.startswith(("ready ", "resuming ")):
            assert row.startswith(("total", *SIZES, "  ")), shown


def test_search_lines_up_its_columns_on_a_terminal(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    term = Terminal([*ACCEL, "search"], _env(terminal_hub, tmp_path / "m"), columns=120)
    try:
        assert term.wait() == 0
        rows = [r for r in term.screen() if r]
    finally:
        term.close()
    assert rows[0].split() == ["MODEL@DEFAULT", "SIZE", "TASK", "LANGUAGES", "INSTALL", "WITH"]
    starts = {row.index("accel pull ") for row in rows[1:]}
    sizes = {re.search(r"\d+\.\d (B|KiB|MiB)", row).start() for row in rows[1:]}  # type: ignore[union-attr]
    assert len(rows) == 5 and len(starts) == 1 and len(sizes) == 1, "\n".join(rows)
    assert rows[0].index("INSTALL") == starts.pop()


def test_a_file_fetched_in_one_request_shows_its_bytes_as_they_come(
    terminal_hub: RunningHub, tmp_path: Path
) -> None:
    """The version row moves while its 5 MiB file downloads at 1 MiB/s: it is never
    frozen for more than 2 s (it was for the whole file: ~5 s)."""
    key = "one-request@1"
    cmd = [*ACCEL, "install", key, "--limit-rate", "1M"]
    term = Terminal(cmd, _env(terminal_hub, tmp_path / "models"), columns=100)
    try:
        assert term.wait() == 0, "\n".join(term.screen())
    finally:
        term.close()
    changes: list[tuple[float, float]] = []
    for t, frame in term.frames:
        row = next((r for r in frame if r.startswith(key + " ")), None)
        f = _figures(row) if row else None
        if f is not None and f[3] is None and (not changes or f[0] != changes[-1][1]):
            changes.append((t, f[0]))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(changes)]
    # at 1 MiB/s a 5 MiB file moves the row every second or so (one change: frozen)
    assert len(changes) >= 3 and max(gaps) <= 2.0, (len(changes), [round(g, 1) for g in gaps])

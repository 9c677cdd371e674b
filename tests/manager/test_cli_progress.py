"""Progress that tells the truth: ``accel install`` under a real pseudo-terminal.

The display is read as a person reads it: every frame rich draws is cut out of the pty's
byte stream, and frames are sampled every 0.5 s. The total line must equal the sum of
the file lines (to the display's rounding), never go backwards, and its ETA must fall
as the run goes on; a ``--limit-rate 4M`` cap reads as about 4.0 MiB/s (binary units).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.manager.hubstub import StubHub, publish

_UNIT = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = r"([\d.]+) (B|KiB|MiB|GiB)"
_FIGURES = re.compile(rf"{_SIZE} / {_SIZE}(?: {_SIZE}/s ETA (\S+))?")
# rich redraws its live display by: CR, erase line, then (cursor up, erase line) per line
_REDRAW = re.compile(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)*")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Line:
    label: str
    done: float
    done_err: float  # half the last printed digit: the display's rounding
    total: float
    speed: float | None
    eta: str | None


def _value(num: str, unit: str) -> tuple[float, float]:
    step = _UNIT[unit] * (1 if unit == "B" else 0.1)
    return float(num) * _UNIT[unit], step / 2


def _parse(line: str) -> Line | None:
    m = _FIGURES.search(line)
    if m is None:
        return None
    done, err = _value(m.group(1), m.group(2))
    total, _ = _value(m.group(3), m.group(4))
    speed = _value(m.group(5), m.group(6))[0] if m.group(5) else None
    label = line[: line.find("━")] if "━" in line else line[: m.start()]
    return Line(label.rstrip(), done, err, total, speed, m.group(7))


def _eta_s(text: str | None) -> float:
    assert text is not None and text != "-", text
    parts = [int(p) for p in text.split(":")]
    return float(sum(p * 60**i for i, p in enumerate(reversed(parts))))


def _run_under_pty(cmd: list[str], env: dict[str, str]) -> tuple[int, list[tuple[float, str]]]:
    """Run ``cmd`` on a 200-column pty; return its exit code and (time, frame) pairs."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[tuple[float, bytes]] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append((time.monotonic(), data))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    frames: list[tuple[float, str]] = []
    text, times = "", []
    for t, data in chunks:
        text += data.decode(errors="replace")
        times.append((len(text), t))
    pos = 0
    for m in _REDRAW.finditer(text):
        if m.start() > pos:
            end_t = next(t for n, t in times if n >= m.start())
            frames.append((end_t, text[pos : m.start()]))
        pos = m.end()
    frames.append((times[-1][1] if times else 0.0, text[pos:]))
    return code, frames


def _lines(frame: str) -> list[Line]:
    out = []
    for raw in _ANSI.sub("", frame).replace("\r", "").split("\n"):
        line = _parse(raw)
        if line is not None:
            out.append(line)
    return out


def test_total_is_the_sum_of_the_file_lines_and_the_eta_falls(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    mib = 1 << 20
    publish(store, "p", "1", {"a.bin": 6 * mib, "b.bin": 5 * mib, "c.bin": 7 * mib, "t.json": 3000})
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url, COLUMNS="200")
    cap = 4 * mib
    cmd = [sys.executable, "-m", "accel", "install", "p@1", "--limit-rate", "4M"]
    cmd += ["--max-parallel-files", "4"]
    code, frames = _run_under_pty(cmd, env)
    text = "\n".join(f for _, f in frames)
    assert code == 0, _ANSI.sub("", text)[-2000:]
    assert "ready p@1 -> " in text
    size = 18 * mib + 3000

    # one sample every 0.5 s: the last whole frame drawn by then
    start, end = frames[0][0], frames[-1][0]
    samples: list[list[Line]] = []
    t = start + 0.5
    while t < end:
        drawn = [f for ft, f in frames if ft <= t]
        if drawn:
            lines = _lines(drawn[-1])
            if any(line.label.startswith("total") for line in lines):
                samples.append(lines)
        t += 0.5
    assert len(samples) >= 6, f"{len(samples)} samples over {end - start:.1f} s"

    shown: list[float] = []
    etas: list[tuple[float, float]] = []
    speeds: list[float] = []
    for lines in samples:
        total = next(line for line in lines if line.label.startswith("total"))
        version = next(line for line in lines if line.label.startswith("p@1"))
        parts = [line for line in lines if line.label.startswith("  ")]
        assert total.total == version.total and abs(total.total - size) <= 0.05 * (1 << 20)
        if total.done >= total.total:
            continue
        # the total and the version line show the same bytes ...
        assert abs(total.done - version.done) <= total.done_err + version.done_err
        # ... and the file lines (in flight, plus "N files done") add up to them
        if parts:
            err = total.done_err + sum(p.done_err for p in parts)
            summed = sum(p.done for p in parts)
            assert abs(total.done - summed) <= err, (total, parts)
        shown.append(total.done)
        if total.eta not in (None, "-") and total.done > 0:
            etas.append((total.done / total.total, _eta_s(total.eta)))
        if total.speed and 0.3 < total.done / total.total < 0.9:
            speeds.append(total.speed)
    assert shown == sorted(shown), "the total went backwards"
    assert len(set(shown)) >= 4, shown  # it moved while running, not only at the end
    eta25 = next(e for frac, e in etas if frac >= 0.2)
    eta75 = next(e for frac, e in etas if frac >= 0.7)
    assert eta75 < eta25, etas
    # --limit-rate 4M is 4 MiB/s, and that is what the display says mid-run
    assert speeds and all(0.6 * cap < s < 1.4 * cap for s in speeds), [s / mib for s in speeds]


def test_status_from_another_process_shows_the_bytes_received(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    """`accel status` while another process installs: live bytes, not 0 B until the end."""
    mib = 1 << 20
    publish(store, "s", "1", {"one.bin": 12 * mib})
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url)
    cmd = [sys.executable, "-m", "accel", "install", "s@1", "--limit-rate", "3M", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            r = subprocess.run(
                [sys.executable, "-m", "accel", "status", "s@1", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if r.returncode == 0 and r.stdout.strip():
                rec = json.loads(r.stdout.splitlines()[0])
                if rec["state"] == "downloading":
                    seen.append(rec["bytes_done"])
                    if 0 < rec["bytes_done"] < 12 * mib:
                        break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert any(0 < b < 12 * mib for b in seen), seen


def test_a_rerun_says_what_it_kept_and_rates_only_what_it_fetched(
    store: Path, hub: StubHub, models_dir: Path
) -> None:
    """kill -9 mid-install, rerun: ``resuming r@1: X kept, Y to fetch``, then a ready line
    whose rate is the bytes this run fetched over its time."""
    mib = 1 << 20
    publish(store, "r", "1", {"w.bin": 16 * mib, "done.json": 5000})
    env = dict(os.environ, ACCEL_MODELS_DIR=str(models_dir), ACCEL_HUB=hub.url)
    cmd = [sys.executable, "-m", "accel", "install", "r@1", "--quiet"]
    proc = subprocess.Popen([*cmd, "--limit-rate", "4M"], env=env, stdout=subprocess.DEVNULL)
    part = models_dir / "r" / "1" / "w.bin"
    try:
        from accel.fetch.checkpoint import load_checkpoint

        deadline = time.monotonic() + 60
        have = 0
        while time.monotonic() < deadline and have < 4 * mib:
            try:
                cp = load_checkpoint(part)
            except Exception:
                cp = None
            have = sum(c.end - c.start for c in cp.chunks) if cp else 0
            time.sleep(0.05)
        assert have >= 4 * mib, "the install never checkpointed 4 MiB"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    r = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(rf"^resuming r@1: {_SIZE} kept, {_SIZE} to fetch$", r.stderr, re.M)
    assert m is not None, r.stderr
    kept, kept_err = _value(m.group(1), m.group(2))
    left, left_err = _value(m.group(3), m.group(4))
    assert kept >= 4 * mib and abs(kept + left - (16 * mib + 5000)) <= kept_err + left_err
    ready = re.search(
        rf"^ready r@1 -> .* \(fetched {_SIZE} in ([\d.]+) s, {_SIZE}/s; ", r.stderr, re.M
    )
    assert ready is not None, r.stderr
    fetched, _ = _value(ready.group(1), ready.group(2))
    rate, _ = _value(ready.group(4), ready.group(5))
    assert fetched < 16 * mib - 2 * mib  # the kept chunks were not fetched again
    assert abs(rate - fetched / float(ready.group(3))) <= 0.15 * rate

"""A real pseudo-terminal read as a person reads it: the CLI's output drawn on a VT100
screen (pyte), so wraps, cursor moves and the terminal's own ``^C`` echo count.

``Terminal(cmd, env, columns=80)`` starts ``cmd`` as the session leader of a new pty
(its controlling terminal, so ``ctrl_c()`` is a real SIGINT from the line discipline,
which also echoes ``^C`` as a terminal does). ``screen()`` is the visible text, one
string per row; ``wait_for(pred)`` polls it until ``pred(rows)`` holds; ``frames`` keeps
the screen as it was after each read from the pty, for checks over a whole run.

``Tmux`` does the same inside a tmux server of its own (``-L``): tmux re-wraps rows when
a window narrows, as most terminals do, which a pyte screen does not.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pyte

__all__ = ["Terminal", "Tmux"]

Rows = list[str]


class Terminal:
    """One command on a pty of ``columns`` x ``lines``, drawn on a pyte screen."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], *, columns: int = 80, lines: int = 40
    ) -> None:
        self.columns, self.lines = columns, lines
        self._screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self._screen)
        self._lock = threading.Lock()
        self.frames: list[tuple[float, Rows]] = []
        self.raw = bytearray()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.master = master

        def controlling_tty() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # A runner that started us with SIGINT ignored (a shell's `cmd &`) would pass
            # that on across exec, and the Ctrl-C a test types would do nothing.
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        self.proc = subprocess.Popen(
            cmd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "TERM": "xterm-256color"},
            start_new_session=True,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.raw += data
                self._stream.feed(data)
                self.frames.append((time.monotonic(), list(self._screen.display)))

    def screen(self) -> Rows:
        """The visible rows now, right-stripped."""
        with self._lock:
            return [row.rstrip() for row in self._screen.display]

    def wait_for(self, pred: Callable[[Rows], Any], timeout: float = 60.0) -> Rows:
        """Poll the screen until ``pred(rows)`` is true; fail with the screen if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.screen()
            if pred(rows):
                return rows
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                rows = self.screen()
                if pred(rows):
                    return rows
                raise AssertionError(f"exited {self.proc.returncode} before:\n" + _show(rows))
            time.sleep(0.05)
        raise AssertionError("timed out waiting; screen:\n" + _show(self.screen()))

    def ctrl_c(self) -> None:
        """Type Ctrl-C: the line discipline signals the foreground group and echoes ^C."""
        os.write(self.master, b"\x03")

    def wait(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        os.close(self.master)


class Tmux:
    """A tmux server of its own with one window running a shell; ``run`` types a line."""

    def __init__(self, env: dict[str, str], *, columns: int = 80, lines: int = 40) -> None:
        tmux = shutil.which("tmux")
        assert tmux is not None, "tmux is needed to test a terminal that re-wraps rows"
        self.socket = f"accel-test-{uuid.uuid4().hex[:8]}"
        self._base = [tmux, "-L", self.socket, "-f", "/dev/null"]
        self.env = env
        self._tmux("new-session", "-d", "-s", "t", "-x", str(columns), "-y", str(lines),
                   "env -i " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
                   + " bash --norc --noprofile")  # fmt: skip
        self._tmux("set-option", "-g", "status", "off")

    def _tmux(self, *args: str) -> str:
        out = subprocess.run([*self._base, *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def run(self, line: str) -> None:
        self._tmux("send-keys", "-t", "t", line, "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def resize(self, columns: int, lines: int = 40) -> None:
        self._tmux("resize-window", "-t", "t", "-x", str(columns), "-y", str(lines))

    def screen(self) -> Rows:
        return [row.rstrip() for row in self._tmux("capture-pane", "-p", "-t", "t").split("\n")]

    def wait_for(self, pred: Callable[[Rows], Any], timeout: float = 60.0) -> Rows:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.screen()
            if pred(rows):
                return rows
            time.sleep(0.1)
        raise AssertionError("timed out waiting; screen:\n" + _show(self.screen()))

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], capture_output=True, timeout=30)


def _show(rows: Rows) -> str:
    return "\n".join(f"|{row}" for row in rows if row.strip())

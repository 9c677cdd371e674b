"""The checkpoint schedule: an interrupt's save is never overwritten by an older one."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

import accel.fetch.recorder as recorder_mod
from accel.fetch.checkpoint import DoneChunk, load_checkpoint
from accel.fetch.recorder import ChunkRecorder


async def test_save_now_waits_for_a_scheduled_write_still_in_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "f.bin"
    real_save = recorder_mod.save_checkpoint
    in_thread, release, first_done = threading.Event(), threading.Event(), threading.Event()

    def slow_first_save(d: Path, value: object) -> None:
        first = not in_thread.is_set()
        if first:
            in_thread.set()
            release.wait(10)  # the scheduled write is slow (a busy disk)
        real_save(d, value)  # type: ignore[arg-type]
        if first:
            first_done.set()

    monkeypatch.setattr(recorder_mod, "save_checkpoint", slow_first_save)
    rec = ChunkRecorder("http://h/f", dest, every_s=0.0)
    rec.record(DoneChunk(0, 10, "a"))
    rec.write_soon(rec.value(100, None, None), 10)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, in_thread.wait, 10)
    rec.record(DoneChunk(10, 60, "b"))  # more progress, then Ctrl-C
    newer = rec.value(100, None, None)
    loop.call_later(0.2, release.set)  # the old write finishes while save_now waits
    await loop.run_in_executor(None, rec.save_now, newer)
    await rec.drain()
    await loop.run_in_executor(None, first_done.wait, 10)  # the old write has landed
    cp = load_checkpoint(dest)
    assert cp is not None and [(c.start, c.end) for c in cp.chunks] == [(0, 10), (10, 60)]

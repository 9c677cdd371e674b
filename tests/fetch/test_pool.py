"""The worker pool over a long life: every task's handle is released, whatever its end."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from accel.errors import AccelError, HTTPStatusError, IntegrityError
from accel.fetch import Engine, Expected
from accel.fetch import messages as m
from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx


async def test_a_long_lived_engine_releases_every_task_of_100_mixed_downloads(
    origin: Nginx, www: Path, tmp_path: Path
) -> None:
    """Empty files, tiny files, a 404, and a file shorter than its expected size: each
    used to leave a handle routed to its worker (the short "done" of an aborted probe
    raised IndexError in the dispatch), so ``load`` grew by one per download."""
    small = (www / "small.bin").stat().st_size
    outcomes: dict[str, int] = {"ok": 0, "missing": 0, "short": 0}
    async with Engine(workers=2, connections=4) as engine:
        for i in range(100):
            kind = i % 4
            dest = tmp_path / f"f{i}.bin"
            try:
                if kind == 0:
                    r = await engine.download(origin.file_url("empty.bin"), dest)
                    assert r.size == 0 and dest.read_bytes() == b""
                elif kind == 1:
                    r = await engine.download(origin.file_url("small.bin"), dest)
                    assert r.sha256 == sha256_of(www / "small.bin")
                elif kind == 2:
                    await engine.download(origin.file_url("no-such.bin"), dest)
                else:
                    await engine.download(
                        origin.file_url("small.bin"), dest, expected=Expected(size=small + 4096)
                    )
                outcomes["ok"] += 1
            except HTTPStatusError:
                outcomes["missing"] += 1
            except IntegrityError:
                outcomes["short"] += 1
            # An aborted probe's "done" may still be on its way: wait for it, bounded.
            await _until_idle(engine, f"download {i} (kind {kind}) left a task")
    assert outcomes == {"ok": 50, "missing": 25, "short": 25}


async def _until_idle(engine: Engine, why: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while engine.pool.load or engine.pool.open_handles:
        assert loop.time() < deadline, why
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    "msg",
    [
        m.Get(1, m.Task(url="http://h/f", path="/tmp/x", start=0, end=10)),
        m.Go(1, 10),
        m.Abort(1),
        m.Trim(1, 5),
        m.Cancel(1),
        m.Stop(),
        m.Ready(123),
        m.HeadSeen(1, m.Head(206, 10, '"e"', None, True, 10)),
        m.Progress(1, 4),
        m.Trimmed(1, None),
        m.Done(1, None),
        m.Done(1, 10, "ab", "cd"),
        m.Failed(1, AccelError("boom", hint="h"), True, 1.5),
    ],
)
def test_every_message_kind_survives_the_pipe(msg: object) -> None:
    back = pickle.loads(pickle.dumps(msg))
    assert type(back) is type(msg)
    if isinstance(msg, m.Failed):
        assert isinstance(back.error, AccelError) and back.error.message == "boom"
    else:
        assert back == msg


def test_the_message_unions_cover_every_kind() -> None:
    to_worker = {m.Get, m.Go, m.Abort, m.Trim, m.Cancel, m.Stop}
    from_worker = {m.Ready, m.HeadSeen, m.Progress, m.Trimmed, m.Done, m.Failed}
    assert set(m.ToWorker.__args__) == to_worker  # type: ignore[attr-defined]
    assert set(m.FromWorker.__args__) == from_worker  # type: ignore[attr-defined]


async def test_no_task_is_left_when_a_download_is_cancelled(origin: Nginx, tmp_path: Path) -> None:
    async with Engine(workers=2, connections=4) as engine:
        t = asyncio.ensure_future(
            engine.download(origin.file_url("big.bin"), tmp_path / "b.bin", chunk_size=1 << 20)
        )
        deadline = asyncio.get_running_loop().time() + 10
        while engine.pool.load == 0 and not t.done():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.005)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        await _until_idle(engine, "a cancelled download left a task")

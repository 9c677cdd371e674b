"""Event fan-out: callbacks and async iterators; a slow reader loses progress, never ready."""

from __future__ import annotations

import asyncio

from accel.manager.events import EventBus, ProgressEvent, ReadyEvent


def _progress(n: int) -> ProgressEvent:
    return ProgressEvent(
        model_id="m",
        version="1",
        state="downloading",
        bytes_done=n,
        bytes_total=100,
        speed_bps=1.0,
        eta_s=None,
    )


async def test_callbacks_iterators_and_close() -> None:
    bus = EventBus()
    got: list[object] = []
    bus.subscribe(got.append)
    sub = bus.subscribe()
    bus.publish(_progress(1))
    bus.publish(ReadyEvent(model_id="m", version="1", path="/p"))
    bus.close()
    seen = [ev async for ev in sub]
    assert [e.type for e in seen] == ["progress", "ready"] == [e.type for e in got]  # type: ignore[attr-defined]
    assert seen[1].model_dump()["path"] == "/p"


async def test_full_queue_drops_progress_not_ready() -> None:
    bus = EventBus(maxsize=3)
    sub = bus.subscribe()
    bus.publish(ReadyEvent(model_id="a", version="1", path="/a"))
    for i in range(10):
        bus.publish(_progress(i))
    bus.publish(ReadyEvent(model_id="b", version="1", path="/b"))
    sub.close()
    seen = [ev async for ev in sub]
    assert [e.model_id for e in seen if e.type == "ready"] == ["a", "b"]
    assert len(seen) <= 3


async def test_callback_errors_do_not_break_publishing() -> None:
    bus = EventBus()

    def boom(_ev: object) -> None:
        raise RuntimeError("consumer bug")

    bus.subscribe(boom)
    got: list[object] = []
    bus.subscribe(got.append)
    bus.publish(_progress(1))
    assert len(got) == 1
    await asyncio.sleep(0)

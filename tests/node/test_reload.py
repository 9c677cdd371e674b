"""An inference service's reload loop, in-process, on the real ModelManager and hub:
a callback and an async iterator both hear ``ready`` with the new path and ``removed``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from accel import ModelManager
from tests.node.stack import publish, running_hub


class InferenceService:
    """What a service does with the events: load on ready, unload on removed."""

    def __init__(self) -> None:
        self.loaded: dict[str, Path] = {}
        self.history: list[tuple[str, str]] = []

    def on_event(self, event: Any) -> None:
        if event.type == "ready":
            self.loaded[event.model_id] = Path(event.path)
            self.history.append(("ready", event.version))
        elif event.type == "removed":
            self.loaded.pop(event.model_id, None)
            self.history.append(("removed", event.version))


async def test_reload_on_ready_and_unload_on_removed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    publish(store, "asr", "1.0", {"model.bin": 300_000})
    publish(store, "asr", "2.0", {"model.bin": 400_000})
    service = InferenceService()
    with running_hub(store) as hub:
        async with ModelManager(tmp_path / "models", hub.url) as mm:
            sub_cb = mm.subscribe(service.on_event)
            iterated: list[Any] = []

            events = mm.subscribe()  # subscribed now, before the first install can publish

            async def follow() -> None:
                async for ev in events:
                    if ev.type in ("ready", "removed"):
                        iterated.append(ev)
                    if len(iterated) == 3:
                        return

            follower = asyncio.create_task(follow())
            p1 = await mm.ainstall("asr", "1.0")
            p2 = await mm.ainstall("asr", "2.0")
            assert service.loaded["asr"] == p2 and p1 != p2
            assert (p2 / "model.bin").stat().st_size == 400_000
            await mm.aremove("asr", "2.0")
            async with asyncio.timeout(10):
                await follower
            sub_cb.close()
    assert service.history == [("ready", "1.0"), ("ready", "2.0"), ("removed", "2.0")]
    assert "asr" not in service.loaded
    assert [(e.type, e.version) for e in iterated] == service.history
    assert Path(iterated[1].path) == p2

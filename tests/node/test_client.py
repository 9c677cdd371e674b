"""Following /events as an inference service would: parser, replay, reconnect."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from accel.node.client import NodeEvent, SSEParser, follow_events
from accel.node.daemon import NodeConfig, NodeDaemon
from accel.node.events import EventBroadcaster, format_sse
from tests.node.fakes import FakeManager

json_values = st.recursive(
    st.text() | st.integers() | st.booleans() | st.none(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
    max_leaves=15,
)


def _parse(frames: bytes) -> list[NodeEvent]:
    p = SSEParser()
    out = []
    for line in frames.decode().split("\n"):
        ev = p.feed(line)
        if ev is not None:
            out.append(ev)
    return out


@given(st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), json_values), max_size=8))
def test_parser_reads_back_what_the_daemon_writes(events: list[tuple[str, object]]) -> None:
    wire = b"".join(format_sse(n, d, f"b-{i}") for i, (n, d) in enumerate(events))
    got = _parse(b": keepalive\n\n" + wire)
    assert [(e.name, e.data, e.id) for e in got] == [
        (n, d, f"b-{i}") for i, (n, d) in enumerate(events)
    ]


def test_parser_multiline_data_and_defaults() -> None:
    (ev,) = _parse(b"data: line1\ndata: line2\n\n")
    assert ev.name == "message" and ev.data == "line1\nline2" and ev.id is None


def test_history_replays_after_an_id_and_refuses_other_boots() -> None:
    b = EventBroadcaster(history=3)
    for i in range(5):
        b.publish({"i": i}, "progress")
    assert b.since(None) is None
    assert b.since("otherboot-2") is None
    assert b.since(b.wire_id(1)) is None  # 2 was forgotten
    replay = b.since(b.wire_id(3))
    assert replay is not None and [d["i"] for _, _, d in replay] == [3, 4]


async def test_inference_service_gets_ready_and_removed_across_a_dropped_stream(
    tmp_path: Path,
) -> None:
    fake = FakeManager(tmp_path, sizes={"asr": 100}, tick_s=0.02, ticks=5)
    d = NodeDaemon(
        NodeConfig(models_dir=tmp_path, hub_url="http://127.0.0.1:9", port=0),
        manager_factory=lambda c: fake,
    )
    await d.start()
    assert d.url
    try:
        got: list[NodeEvent] = []
        stream = follow_events(d.url, names={"ready", "removed"}, retry_s=0.05)
        first = asyncio.ensure_future(anext(stream))
        async with asyncio.timeout(10):
            while d.events.subscriber_count == 0:
                await asyncio.sleep(0.01)
            await fake.ainstall("asr", "1.0")
            got.append(await first)
        assert got[0].name == "ready" and got[0].data["path"] == str(tmp_path / "asr" / "1.0")
        assert got[0].id is not None
        # Drop every open stream server-side; events published meanwhile are replayed.
        d.events.publish({"reason": "test"}, "shutdown")
        await fake.aremove("asr", "1.0")
        async with asyncio.timeout(10):
            got.append(await anext(stream))
        assert got[1].name == "removed" and got[1].data["model_id"] == "asr"
        await stream.aclose()
    finally:
        await d.stop()

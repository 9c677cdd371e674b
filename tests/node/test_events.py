"""Event fan-out and the SSE encoder (pure, no sockets)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from accel.node.events import EventBroadcaster, event_name, format_sse, to_jsonable


class ReadyEvent(BaseModel):
    model_id: str
    version: str
    path: Path


@dataclass
class ProgressEvent:
    model_id: str
    version: str
    bytes_done: int


def test_event_names_come_from_fields_or_class() -> None:
    assert event_name({"type": "Ready"}) == "ready"
    assert event_name({}, ReadyEvent(model_id="m", version="1", path=Path("/p"))) == "ready"
    assert event_name({}) == "message"


def test_to_jsonable_handles_models_dataclasses_paths() -> None:
    out = to_jsonable(
        {
            "a": ReadyEvent(model_id="m", version="1", path=Path("/p")),
            "b": ProgressEvent("m", "1", 5),
            "c": (Path("/x"),),
        }
    )
    assert out == {
        "a": {"model_id": "m", "version": "1", "path": "/p"},
        "b": {"model_id": "m", "version": "1", "bytes_done": 5},
        "c": ["/x"],
    }
    json.dumps(out)


@given(
    st.recursive(
        st.text() | st.integers() | st.none(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_sse_frame_is_one_data_line_that_round_trips(payload: object) -> None:
    frame = format_sse("progress", payload, 7).decode()
    assert frame.endswith("\n\n")
    lines = frame[:-2].split("\n")
    assert lines[0] == "id: 7" and lines[1] == "event: progress"
    assert len(lines) == 3 and lines[2].startswith("data: ")
    assert json.loads(lines[2][6:]) == payload


def test_sse_rejects_multiline_event_names() -> None:
    with pytest.raises(ValueError):
        format_sse("a\nb", {})


async def test_slow_subscriber_loses_progress_but_never_state_changes() -> None:
    b = EventBroadcaster(queue_size=3)
    slow, fast = b.subscribe(), b.subscribe()
    b.publish({"model_id": "m", "version": "1"}, "ready")
    for i in range(10):
        b.publish({"model_id": "m", "version": "1", "bytes_done": i}, "progress")
    got = [(await slow.get()) for _ in range(3)]
    assert got[0][1] == "ready" and slow.lost == 8
    # the newest ticks survive, the oldest were dropped
    assert [g[2]["bytes_done"] for g in got[1:]] == [8, 9]
    assert fast.lost == slow.lost
    assert b.latest["m@1"]["bytes_done"] == 9
    b.publish({"model_id": "m", "version": "1"}, "removed")
    assert "m@1" not in b.latest
    slow.close()
    fast.close()
    assert b.subscriber_count == 0

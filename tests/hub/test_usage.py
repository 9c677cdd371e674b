"""accel.hub.usage: ranking order and ties (pure), and the SQLite counter (no sockets)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from accel.hub.usage import UsageCounter, rank


def test_rank_order_and_ties() -> None:
    got = rank({"b": 5, "a": 5, "c": 9, "z": 0, "d": 1})
    assert [(e.model_id, e.request_count, e.rank) for e in got] == [
        ("c", 9, 1),
        ("a", 5, 2),
        ("b", 5, 3),
        ("d", 1, 4),
    ]
    assert [e.model_id for e in rank({"b": 5, "a": 5, "c": 9}, limit=2)] == ["c", "a"]


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 50)))
def test_rank_invariants(counts: dict[str, int]) -> None:
    got = rank(counts)
    assert [e.rank for e in got] == list(range(1, len(got) + 1))
    keys = [(-e.request_count, e.model_id) for e in got]
    assert keys == sorted(keys)
    assert {e.model_id for e in got} == {k for k, v in counts.items() if v > 0}


async def test_thousand_concurrent_counts_exact_and_batched(tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite3"
    counter = UsageCounter(db)
    await counter.start()
    try:
        ids = [f"m{i % 7}" for i in range(1000)]
        await asyncio.gather(*(counter.count(m) for m in ids))
        counts = await counter.counts()
        assert counts == {f"m{k}": ids.count(f"m{k}") for k in range(7)}
        assert sum(counts.values()) == 1000
        assert counter.commits < 50  # batched: far fewer commits than reports
    finally:
        await counter.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_counts_persist_and_add_across_instances(tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite3"
    for _ in range(3):
        counter = UsageCounter(db)
        await counter.start()
        counter.count("a")  # not awaited: close() must still commit it
        await counter.count("b", 2)
        await counter.close()
    counter = UsageCounter(db)
    await counter.start()
    try:
        ranking = await counter.ranking()
        assert [(e.model_id, e.request_count) for e in ranking] == [("b", 6), ("a", 3)]
        only_a = await counter.ranking(known={"a"})  # models gone from the catalog drop out
        assert [(e.model_id, e.request_count, e.rank) for e in only_a] == [("a", 3, 1)]
    finally:
        await counter.close()


async def test_two_writers_on_one_store_add_up(tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite3"
    one, two = UsageCounter(db), UsageCounter(db)
    await one.start()
    await two.start()
    try:
        await asyncio.gather(*(c.count("m") for c in (one, two) for _ in range(300)))
        assert (await one.counts())["m"] == 600
    finally:
        await one.close()
        await two.close()

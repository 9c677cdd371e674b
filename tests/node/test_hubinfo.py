"""Pure joins of the hub's ranking and catalog with the node's states."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from accel.node.hubinfo import popular_models, preseed_candidates
from accel.schema import ModelInfo, RankingEntry

STATES = ["ready", "queued", "downloading", "verifying", "paused", "error"]


def _rank(ids: list[str]) -> list[RankingEntry]:
    return [RankingEntry(model_id=m, request_count=100 - i, rank=i + 1) for i, m in enumerate(ids)]


def test_preseed_takes_the_top_n_that_are_absent() -> None:
    ranking = _rank(["a", "b", "c", "d"])
    assert preseed_candidates(ranking, {}, 2) == ["a", "b"]
    assert preseed_candidates(ranking, {"a": "ready"}, 2) == ["b"]
    # present in any state, even failed or paused, is left alone
    assert preseed_candidates(ranking, {"a": "error", "b": "paused"}, 3) == ["c"]
    assert preseed_candidates(ranking, {}, 0) == []


@given(
    ids=st.lists(st.text(min_size=1, max_size=5), unique=True, max_size=12),
    states=st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from(STATES)),
    n=st.integers(min_value=0, max_value=15),
)
def test_preseed_invariants(ids: list[str], states: dict[str, str], n: int) -> None:
    chosen = preseed_candidates(list(reversed(_rank(ids))), states, n)
    assert len(chosen) <= n
    assert all(m not in states for m in chosen)
    assert chosen == [m for m in ids[:n] if m not in states]  # rank order, not input order


def test_popular_models_joins_catalog_and_states_then_lists_the_unranked() -> None:
    catalog = [
        ModelInfo.model_validate(
            {
                "id": mid,
                "name": mid.upper(),
                "default_version": "2",
                "task": "mt",
                "languages": ["zh"],
                "versions": [
                    {
                        "version": v,
                        "size_bytes": size,
                        "files": [],
                        "checksum_sha256": "0",
                        "updated_at": "t",
                    }
                    for v, size in (("1", 10), ("2", 20))
                ],
            }
        )
        for mid in ("x", "y", "z")
    ]
    rows = popular_models(_rank(["y", "ghost"]), catalog, {"y": "downloading"})
    assert [r["model_id"] for r in rows] == ["y", "ghost", "x", "z"]
    assert rows[0]["size_bytes"] == 20 and rows[0]["local_state"] == "downloading"
    assert rows[1]["name"] == "ghost" and rows[1]["size_bytes"] is None
    assert rows[2]["rank"] is None and rows[2]["local_state"] == "not_installed"

"""The dashboard's view model (pure): cards, totals and errors in plain words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from accel.node.view import describe_error, model_card, total_line


def test_progress_event_with_files_becomes_a_card() -> None:
    card = model_card(
        {
            "event": "progress",
            "model_id": "asr",
            "version": "1.0",
            "files": [
                {
                    "path": "b.bin",
                    "bytes_done": 5,
                    "bytes_total": 10,
                    "speed_bps": 100,
                    "inflight": 3,
                },
                {"path": "a.bin", "bytes_done": 1, "bytes_total": 4},
            ],
            "speed_bps": 2e6,
            "eta_s": 3.0,
        }
    )
    assert card["key"] == "asr@1.0" and card["state"] == "downloading"
    assert (card["done"], card["total"]) == (6, 14)
    assert [f["path"] for f in card["files"]] == ["a.bin", "b.bin"]
    assert card["speed_bps"] == 2e6 and card["eta_s"] == 3.0
    assert card["inflight"] == 3 and card["files"][1]["inflight"] == 3


def test_ready_event_keeps_totals_and_fills_the_bar() -> None:
    prev = model_card(
        {
            "model_id": "m",
            "version": "1",
            "state": "downloading",
            "bytes_done": 50,
            "bytes_total": 100,
        }
    )
    card = model_card({"event": "ready", "model_id": "m", "version": "1", "path": "/x"}, prev)
    assert card["state"] == "ready" and card["done"] == card["total"] == 100
    assert card["path"] == "/x" and card["error"] is None and card["speed_bps"] == 0.0


def test_failed_event_says_what_happened_in_words() -> None:
    card = model_card(
        {
            "event": "failed",
            "model_id": "m",
            "version": "1",
            "error": {"code": "disk_full", "message": "ENOSPC", "needed": 3 * 2**30, "free": 2**30},
        }
    )
    assert card["state"] == "error"
    assert card["error"]["title"] == "Disk full: needs 3.0 GiB, 1.0 GiB free"
    assert "Retry" in card["error"]["advice"]


def test_errors_in_plain_words() -> None:
    assert describe_error(None) is None
    for code, words in [
        ("checksum_mismatch", "Checksum mismatch"),
        ("unauthorized", "refused"),
        ("hub_error", "Hub unreachable"),
        ("stalled", "Network"),
        ("some_new_code", "Network problem"),
    ]:
        d = describe_error({"code": code, "message": "x"})
        assert d is not None and words in d["title"], code
    text = describe_error("connection reset")
    assert text is not None and text["detail"] == "connection reset"


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=20))
def test_progress_never_goes_backwards_within_a_state(values: list[int]) -> None:
    card = None
    shown = []
    for v in values:
        card = model_card(
            {
                "event": "progress",
                "model_id": "m",
                "version": "1",
                "bytes_done": v,
                "bytes_total": 10**9,
            },
            card,
        )
        shown.append(card["done"])
    assert shown == sorted(shown)


def test_total_line_counts_only_active_versions() -> None:
    cards = [
        {"state": "downloading", "done": 10, "total": 100, "speed_bps": 10},
        {"state": "queued", "done": 0, "total": 50, "speed_bps": 0},
        {"state": "ready", "done": 500, "total": 500, "speed_bps": 0},
    ]
    t = total_line(cards)
    assert t["active"] == 2 and (t["done"], t["total"]) == (10, 150)
    assert t["eta_s"] == 14.0
    assert total_line([])["eta_s"] is None


def test_a_staged_update_shows_beside_a_card_that_stays_ready() -> None:
    ready = model_card(
        {"model_id": "m", "version": "1", "state": "ready", "bytes_total": 100, "path": "/m/1"}
    )
    card = model_card(
        {
            "event": "progress",
            "update": True,
            "model_id": "m",
            "version": "1",
            "state": "downloading",
            "bytes_done": 30,
            "bytes_total": 80,
            "speed_bps": 1e6,
        },
        ready,
    )
    assert card["state"] == "ready" and card["done"] == 100 and card["path"] == "/m/1"
    assert card["update"]["state"] == "downloading"
    assert (card["update"]["done"], card["update"]["total"]) == (30, 80)
    # the node's total counts the update's bytes in flight, not the ready version's
    assert total_line([card])["active"] == 1 and total_line([card])["total"] == 80
    failed = model_card(
        {
            "event": "failed",
            "update": True,
            "model_id": "m",
            "version": "1",
            "error": {"code": "checksum_mismatch", "message": "bad"},
        },
        card,
    )
    assert failed["state"] == "ready" and failed["update"]["state"] == "error"
    assert failed["update"]["error"]["title"] == "Checksum mismatch"
    # the status record of a stopped update (what refresh_cards reads)
    rec = model_card(
        {
            "model_id": "m",
            "version": "1",
            "state": "ready",
            "bytes_total": 100,
            "update": {"state": "paused", "bytes_done": 40, "bytes_total": 80},
        },
        failed,
    )
    assert rec["state"] == "ready" and rec["update"]["state"] == "paused"
    assert rec["update"]["done"] == 40
    done = model_card({"event": "ready", "update": True, "model_id": "m", "version": "1"}, rec)
    assert done["state"] == "ready" and done["update"] is None

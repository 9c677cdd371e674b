"""Reporter and transports against a real aiohttp scheduler on loopback."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accel.errors import DeliveryError, UsageError
from accel.node.reporter import Backoff, SchedulerReporter
from accel.node.transport import HttpTransport, WebSocketTransport, transport_for_url
from accel.schema import ModelNotAvailableMessage
from tests.node.scheduler import Scheduler, free_port
from tests.support.wait import until

FAST = Backoff(initial_s=0.05, factor=2.0, max_s=0.3, jitter=0.1)


def _msg(job: str) -> ModelNotAvailableMessage:
    return ModelNotAvailableMessage(
        job_id=job,
        node_id="node-a",
        model_id="asr",
        version="1.0",
        reason="not_installed",
        progress=0.0,
    )


@given(attempt=st.integers(min_value=1, max_value=10_000), rand=st.floats(0, 0.999999))
def test_backoff_grows_is_capped_and_jitter_stays_in_band(attempt: int, rand: float) -> None:
    b = Backoff(initial_s=0.1, factor=2.0, max_s=5.0, jitter=0.2)
    base = b.base_delay(attempt)
    assert 0.1 <= base <= 5.0
    assert b.base_delay(attempt + 1) >= base
    assert base * 0.8 - 1e-9 <= b.delay(attempt, rand) <= base * 1.2 + 1e-9


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError):
        Backoff().base_delay(0)


def test_transport_for_url_picks_by_scheme() -> None:
    assert isinstance(transport_for_url("http://127.0.0.1:1/x"), HttpTransport)
    assert isinstance(transport_for_url("ws://127.0.0.1:1/x"), WebSocketTransport)
    with pytest.raises(UsageError):
        transport_for_url("ftp://x")


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_reports_arrive_in_order(kind: str) -> None:
    async with Scheduler() as sched:
        url = sched.http_url if kind == "http" else sched.ws_url
        async with SchedulerReporter(transport_for_url(url), backoff=FAST) as rep:
            for i in range(5):
                rep.report(_msg(f"job-{i}"))
            got = await sched.wait_for(5)
            assert await rep.drain(5)
        assert [m.job_id for m in got] == [f"job-{i}" for i in range(5)]
        assert rep.stats.delivered == 5 and rep.stats.failed_attempts == 0


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_scheduler_down_at_first_then_delivered(kind: str) -> None:
    port = free_port()
    sched = Scheduler(port)
    url = sched.http_url if kind == "http" else sched.ws_url
    async with SchedulerReporter(transport_for_url(url), backoff=FAST) as rep:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rep.report(_msg("early"))
        # report() returned at once although nothing listens on the port.
        assert loop.time() - t0 < 0.5
        await until(lambda: rep.stats.failed_attempts >= 2, what="two failed attempts")
        assert rep.pending == 1 and not sched.received
        assert "cannot" in (rep.stats.last_error or "")
        await sched.start()
        try:
            got = await sched.wait_for(1)
            assert got[0].job_id == "early"
            assert await rep.drain(5)
            assert rep.pending == 0
        finally:
            await sched.stop()


async def test_http_non_2xx_is_retried_and_delivered_once() -> None:
    async with Scheduler(fail_first=2) as sched:
        async with SchedulerReporter(HttpTransport(sched.http_url), backoff=FAST) as rep:
            rep.report(_msg("busy"))
            await sched.wait_for(1)
            assert await rep.drain(5)
        assert rep.stats.failed_attempts == 2
        assert [m.job_id for m in sched.received] == ["busy"]


async def test_websocket_reconnects_after_scheduler_restart() -> None:
    sched = Scheduler()
    await sched.start()
    async with SchedulerReporter(WebSocketTransport(sched.ws_url), backoff=FAST) as rep:
        rep.report(_msg("before"))
        await sched.wait_for(1)
        assert await rep.drain(5)
        await sched.stop()
        rep.report(_msg("during"))
        await until(lambda: rep.stats.failed_attempts >= 1, what="a failed attempt")
        await sched.start()
        try:
            await sched.wait_for(2)
        finally:
            await sched.stop()
    assert [m.job_id for m in sched.received] == ["before", "during"]


async def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    port = free_port()  # nothing listens: everything stays queued
    rep = SchedulerReporter(HttpTransport(Scheduler(port).http_url), max_pending=3, backoff=FAST)
    async with rep:
        for i in range(5):
            rep.report(_msg(f"j{i}"))
        assert rep.pending == 3 and rep.stats.dropped == 2
        sched = Scheduler(port)
        await sched.start()
        try:
            await sched.wait_for(3)
        finally:
            await sched.stop()
    assert [m.job_id for m in sched.received] == ["j2", "j3", "j4"]


async def test_transport_raises_delivery_error_with_url() -> None:
    port = free_port()
    t = HttpTransport(f"http://127.0.0.1:{port}/r", timeout_s=2)
    try:
        with pytest.raises(DeliveryError) as info:
            await t.send(_msg("x"))
        assert info.value.facts["url"].endswith("/r")
    finally:
        await t.aclose()


async def test_close_with_undeliverable_reports_does_not_hang() -> None:
    port = free_port()
    rep = SchedulerReporter(HttpTransport(f"http://127.0.0.1:{port}/r"), backoff=FAST)
    rep.start()
    rep.report(_msg("lost"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await rep.aclose(drain_timeout_s=0.3)
    assert loop.time() - t0 < 2
    assert rep.pending == 1


@pytest.mark.parametrize("kind", ["http", "ws"])
async def test_scheduler_token_is_sent_and_a_wrong_one_is_retried_not_lost(kind: str) -> None:
    async with Scheduler(token="s3cret") as sched:
        url = sched.http_url if kind == "http" else sched.ws_url
        bad = SchedulerReporter(transport_for_url(url, token="wrong"), backoff=FAST)
        bad.start()
        bad.report(_msg("refused"))
        await until(lambda: bad.stats.failed_attempts >= 2, what="two refused attempts")
        assert bad.pending == 1 and not sched.received
        await bad.aclose(drain_timeout_s=0.05)
        async with SchedulerReporter(transport_for_url(url, token="s3cret"), backoff=FAST) as rep:
            rep.report(_msg("accepted"))
            (got,) = await sched.wait_for(1)
        assert got.job_id == "accepted"

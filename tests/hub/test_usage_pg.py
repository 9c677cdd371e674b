"""The usage counts in a real PostgreSQL (tests/support/postgres.py): migrations applied once
by whichever hub starts first, a batch sent twice counted once, and exact counts while the
database goes away and comes back (a report answered is counted once, a refused one not)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from accel.errors import UsageDbError
from accel.hub.usage import UsageCounter
from accel.hub.usage_pg import MIGRATIONS, PostgresUsage, redact_url
from tests.support.postgres import Postgres, running_postgres


async def test_hubs_starting_together_apply_each_migration_once(pg_url: str) -> None:
    dbs = [PostgresUsage(pg_url, hub=f"hub-{i}") for i in range(6)]
    await asyncio.gather(*(db.open() for db in dbs))
    try:
        applied = [db.migrated for db in dbs]
        newest = [v for v, _, _ in MIGRATIONS]
        # exactly one of them did the work, the others found it done
        assert sorted(applied, key=len) == [[]] * 5 + [newest], applied
        with psycopg.connect(pg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT version, applied_by FROM accel_schema_migrations ORDER BY version"
            ).fetchall()
        winner = next(db.hub for db in dbs if db.migrated)
        assert rows == [(v, winner) for v in newest]
        # and a hub started later applies nothing either
        late = PostgresUsage(pg_url)
        await late.open()
        assert late.migrated == []
        await late.close()
    finally:
        await asyncio.gather(*(db.close() for db in dbs))


async def test_a_database_of_a_newer_schema_is_refused_with_one_line(pg_url: str) -> None:
    first = PostgresUsage(pg_url)
    await first.open()
    await first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO accel_schema_migrations (version, name, applied_by) "
            "VALUES (999, 'from the future', 'x')"
        )
    with pytest.raises(UsageDbError, match="schema version 999, newer than this accel's"):
        await PostgresUsage(pg_url).open()


async def test_a_batch_sent_again_after_a_lost_commit_answer_is_counted_once(pg_url: str) -> None:
    db = PostgresUsage(pg_url)
    await db.open()
    try:
        await db.commit("batch-1", {"a": 3, "b": 1})
        await db.commit("batch-1", {"a": 3, "b": 1})  # the retry of an answer that was lost
        await db.commit("batch-2", {"a": 1})
        assert await db.read_all() == {"a": 4, "b": 1}
    finally:
        await db.close()


def test_without_postgresql_a_ci_run_fails_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tests.support.postgres as support

    monkeypatch.setattr(support, "find_pg_bin", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        support.require_postgres()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        support.require_postgres()


def test_a_password_never_shows_in_the_description() -> None:
    url = "postgresql://accel:hunter2@db.internal:5432/hubs"
    assert redact_url(url) == "postgresql://accel:***@db.internal:5432/hubs"
    assert "hunter2" not in PostgresUsage(url).description


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A server of this test's own: the test stops and starts it."""
    with running_postgres() as server:
        yield server


async def test_counts_stay_exact_while_the_database_goes_away_and_comes_back(
    own_postgres: Postgres,
) -> None:
    url = own_postgres.create_database()
    counter = UsageCounter(PostgresUsage(url), report_timeout_s=1.0)
    await counter.start()
    try:
        await asyncio.gather(*(counter.report("m") for _ in range(50)))
        assert await counter.counts() == {"m": 50}

        await asyncio.to_thread(own_postgres.stop)
        # A report while it is down: refused (not counted), after its timeout
        with pytest.raises(UsageDbError, match="it was not counted"):
            await counter.report("m")
        # A manifest fetch's count nobody waits for: kept until the database is back
        queued = counter.count("m", 7)
        with pytest.raises(UsageDbError):
            await counter.ping()
        assert not queued.done()

        await asyncio.to_thread(own_postgres.start)
        await asyncio.wait_for(queued, 30)
        await asyncio.gather(*(counter.report("m") for _ in range(10)))
        # 50 answered + 7 queued + 10 answered; the refused one is not there
        assert await counter.counts() == {"m": 67}
        await counter.ping()
    finally:
        await counter.close()

"""What ``/healthz`` answers: can this hub reach its store and its usage database now?

Owns the two checks and their bounds. A load balancer polls ``/healthz`` and takes a hub
out on a 503, so the answer must be true *now* and must come quickly even when the
store or the database hangs: each check runs with a timeout (a check that takes longer
counts as a failure), at most one check of each kind runs at a time (a flood of health
probes cannot pile up threads), and a result is reused for ``cache_s``. The store is
checked through the interface alone: an S3 store's ``check()`` (one HEAD of the bucket)
or, for a directory store, a listing of its models directory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from accel.hub.stores import DirectoryStore, ModelStore
from accel.hub.usage import UsageCounter

__all__ = ["Health", "HealthReport"]


@dataclass(frozen=True)
class HealthReport:
    """``ok`` when both checks passed; ``store`` and ``usage_db`` say "ok" or why not."""

    store: str
    usage_db: str

    @property
    def ok(self) -> bool:
        return self.store == "ok" and self.usage_db == "ok"


def _store_check(backend: ModelStore) -> Callable[[], None]:
    check = getattr(backend, "check", None)
    if callable(check):
        return check  # type: ignore[no-any-return]
    if isinstance(backend, DirectoryStore):
        models = backend.layout.models_dir
        root = backend.root

        def readable() -> None:
            if models.exists():
                os.listdir(models)
            else:
                os.listdir(root)

        return readable
    return lambda: None


class _InThread:
    """``fn`` in a thread, never two at once: a call while one still runs waits for it."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self._fut: asyncio.Future[None] | None = None

    async def __call__(self) -> None:
        if self._fut is None or self._fut.done():
            self._fut = asyncio.get_running_loop().run_in_executor(None, self.fn)
            # retrieved here, so a result nobody awaited any more is never "lost"
            self._fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        await asyncio.shield(self._fut)


class _Check:
    """One kind of check: single flight, a timeout, and a result kept ``cache_s``."""

    def __init__(self, run: Callable[[], Awaitable[None]], timeout_s: float, cache_s: float):
        self.run, self.timeout_s, self.cache_s = run, timeout_s, cache_s
        self._result = ""
        self._at = -1e9
        self._flight: asyncio.Task[str] | None = None

    async def _once(self) -> str:
        try:
            await asyncio.wait_for(self.run(), self.timeout_s)
        except TimeoutError:
            result = f"no answer within {self.timeout_s:g} s"
        except Exception as exc:
            result = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            result = "ok"
        self._result, self._at = result, time.monotonic()
        return result

    async def result(self) -> str:
        if time.monotonic() - self._at < self.cache_s:
            return self._result
        if self._flight is None or self._flight.done():
            self._flight = asyncio.create_task(self._once())
        # A hung thread may outlive the timeout; shield so one caller's end stops nothing.
        return await asyncio.shield(self._flight)


class Health:
    """The hub's health: its store and its usage database, each checked with a bound."""

    def __init__(
        self,
        backend: ModelStore,
        usage: UsageCounter,
        *,
        timeout_s: float = 2.0,
        cache_s: float = 0.5,
    ) -> None:
        self._store = _Check(_InThread(_store_check(backend)), timeout_s, cache_s)
        self._usage = _Check(usage.ping, timeout_s, cache_s)

    async def report(self) -> HealthReport:
        store, usage = await asyncio.gather(self._store.result(), self._usage.result())
        return HealthReport(store=store, usage_db=usage)

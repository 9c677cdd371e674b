"""Driving a planned download: chunks to connections, retries, splits, completion.

:class:`ChunkDriver` is the part of :class:`~accel.fetch.supervisor.FileDownload` that
runs the chunk plan once the probe has answered: it hands pending chunks to free
connection slots (sized by the connections there are now), retries a failed chunk with
the engine's :class:`~accel.fetch.slots.RetryPolicy`, sends a request back to the
user's URL when a redirect target refuses (an expired signed URL), halves the chunk
with the most bytes left when connections go idle near the end, and records each
finished chunk. Which bytes are missing is :mod:`~accel.fetch.plan`'s (pure); which
source a chunk goes to is :mod:`~accel.fetch.sources`' (pure); this module sends it
there, as aria2 keeps SegmentMan apart from its commands. With several sources, a
failure at a mirror costs a retry elsewhere (never the download, never the chunk's
retry budget, which is the last resort's), a bad blake3 block demotes its source and
a second one quarantines it, and the slow tail is raced on the fastest source
(:mod:`~accel.fetch.sources_race`).
The download's state and its other steps (task building, events, checkpoints) belong
to the supervisor; they are declared here so mypy checks both sides.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Mapping

from accel.errors import (
    AccelError,
    DownloadError,
    HTTPStatusError,
    InsufficientDiskSpaceError,
    IntegrityError,
)
from accel.fetch.checkpoint import DoneChunk
from accel.fetch.finish import PrefixHasher
from accel.fetch.messages import Task
from accel.fetch.plan import Chunk, ChunkPlan
from accel.fetch.pool import Outcome, TaskHandle
from accel.fetch.recorder import ChunkRecorder
from accel.fetch.slots import Shared
from accel.fetch.sources import SourcePolicy
from accel.fetch.sources_links import Link
from accel.fetch.sources_order import BlockOrder, Span, assign
from accel.fetch.types import EventKind

__all__ = ["ChunkDriver"]

MiB = 1024 * 1024
#: answers from a redirect target that send the next request back to the original URL
_TARGET_GONE = frozenset({401, 403, 404, 410})
#: the first chunk a source is measured by, at most (a slow mirror's first chunk must
#: not become the download's tail)
_MEASURE = 2 * MiB

#: a source not measured yet is ranked by its first requests' rate so far after this
#: long (and 64 KiB): until then it has only its trial requests (sources.py)
_RANK_AFTER_S = 0.2
#: how often each mirror's total bytes per second is looked at (sources.observed)
_OBSERVE_S = 0.5

log = logging.getLogger("accel.fetch")


class ChunkDriver(abc.ABC):
    """Runs :attr:`plan` to the end through :attr:`shared` (a base of FileDownload)."""

    shared: Shared
    url: str
    total: int | None
    ranged: bool
    chunk_size: int | None
    block_size: int
    plan: ChunkPlan | None
    recorder: ChunkRecorder
    hasher: PrefixHasher | None
    handles: dict[int, TaskHandle]
    received: int
    retries: int
    splitting: bool
    policy: SourcePolicy
    links: list[Link]
    #: sources a chunk failed on (by chunk id): its next request goes elsewhere
    avoid: dict[int, set[int]]
    #: the source of each running chunk and when its request was sent (by chunk id)
    chunk_src: dict[int, tuple[int, float]]
    #: the tail races running, by the id of the chunk each is for (those chunks are
    #: none of _maybe_split's business meanwhile)
    races: Mapping[int, object]
    #: the source of each finished chunk not fetched from the first one (by start)
    done_src: dict[int, int]
    #: this node's order of the file's blocks (chunks for the hub, with peers)
    order: BlockOrder
    #: set to ask every peer for its bitmap now (sources_poll.py)
    have_wake: asyncio.Event | None
    #: the block after the last one given to the last resort, with peers (None: none yet)
    hub_front: int | None
    #: when each source's bytes were last looked at, and how many there were then
    observe_mark: tuple[float, list[int], list[int]]

    @abc.abstractmethod
    def _task(self, start: int, end: int | None, source: int = 0) -> Task: ...

    @abc.abstractmethod
    def _maybe_race(self, tasks: set[asyncio.Task[None]], early: bool = False) -> bool: ...

    @abc.abstractmethod
    def _race_lost(self, chunk: Chunk) -> None: ...

    @abc.abstractmethod
    def _race_stopped(self, chunk: Chunk) -> bool: ...

    @abc.abstractmethod
    def _emit(self, kind: EventKind, message: str = "") -> None: ...

    @abc.abstractmethod
    def _tick(self) -> None: ...

    @abc.abstractmethod
    def _maybe_checkpoint(self) -> None: ...

    @abc.abstractmethod
    def _keep_written_prefixes(self) -> None: ...

    @abc.abstractmethod
    def _count_retry(self, message: str) -> None: ...

    @abc.abstractmethod
    def _auto_chunk_size(self) -> int: ...

    @abc.abstractmethod
    def _on_progress(self, old: int, new: int) -> None: ...

    async def _drive(self, tasks: set[asyncio.Task[None]]) -> None:
        plan = self.plan
        slots = self.shared.slots
        assert plan is not None
        try:
            while not plan.finished:
                if self.recorder.error is not None:
                    raise self.recorder.error
                # Sized by the connections there are now: when the tuner adds some,
                # later chunks get shorter, and what all of them hold unfinished
                # stays near 64 MiB (a kill -9 loses no more).
                limit = None if self.chunk_size or not self.ranged else self._auto_chunk_size()
                if len(self.policy) > 1:
                    self._estimate_untested()
                    self._observe_sources()
                    if plan.pending_count and slots.free() > 0:
                        self._maybe_race(tasks, early=True)
                while self.policy.partial and plan.pending_count and slots.try_acquire():
                    if not self._dispatch_with_peers(tasks, limit):
                        slots.release()
                        break
                while not self.policy.partial and plan.pending_count and slots.try_acquire():
                    src = self.policy.pick(time.monotonic())
                    if src is None:  # every source is at its cap, resting or gone
                        slots.release()
                        break
                    chunk = plan.take(self._limit_for(src, limit))
                    if chunk is None:
                        slots.release()
                        break
                    if src in self.avoid.get(chunk.id, ()):
                        other = self.policy.pick(time.monotonic(), self.avoid[chunk.id])
                        src = src if other is None else other
                    # Counted now, not when the task first runs: the picks of this
                    # loop must see each other (one measuring chunk per source).
                    self.policy = self.policy.started(src)
                    tasks.add(asyncio.ensure_future(self._run_chunk(chunk, None, src)))
                if not plan.pending_count and slots.free() > 0:
                    self._maybe_race(tasks)  # the tail: every slow chunk, raced at once
                    if slots.free() > 0:
                        self._maybe_split()
                if not tasks:
                    await asyncio.sleep(0.05)
                    continue
                done, _ = await asyncio.wait(
                    tasks, timeout=0.1, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    tasks.discard(t)
                    t.result()
                self._tick()
                self._maybe_checkpoint()
        finally:
            # Before the cancels below: each chunk's task drops its handle as it ends,
            # and with it the position its worker reported (the bytes an interrupt keeps).
            self._keep_written_prefixes()
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch_with_peers(self, tasks: set[asyncio.Task[None]], limit: int | None) -> bool:
        """One request chosen by :mod:`~accel.fetch.sources_order` (which bytes from
        whom); False when nothing can be sent now (the caller holds a slot for it)."""
        plan = self.plan
        assert plan is not None
        pending = plan.pending()
        by_id = {c.id: c for c in pending}
        limits = [
            self.block_size if s.last_resort else self._limit_for(i, limit)
            for i, s in enumerate(self.policy.sources)
        ]
        got = assign(
            self.policy,
            [Span(c.id, c.start, c.end) for c in pending],
            block_size=self.block_size,
            now=time.monotonic(),
            order=self.order,
            limits=limits,
            avoid=self.avoid,
            front=self.hub_front,
        )
        if got is None:
            return False
        if self.policy[got.source].last_resort:
            self.hub_front = -(-got.end // self.block_size)
        chunk = plan.take_span(by_id[got.chunk], got.start, got.end)
        self.policy = self.policy.started(got.source)
        tasks.add(asyncio.ensure_future(self._run_chunk(chunk, None, got.source)))
        return True

    def _not_held(self, src: int, chunk: Chunk, outcome: Outcome, nbytes: int) -> bool:
        """A peer's ``404 block_not_held``: its bitmap was behind; the blocks leave it,
        every peer is asked again, and the chunk goes back (no retry spent, no failure
        of the peer). True when that was the answer."""
        err = outcome.error
        if not (
            isinstance(err, HTTPStatusError)
            and err.facts.get("problem") == "block_not_held"
            and self.policy[src].peer
        ):
            return False
        bs = self.block_size or 1
        self.policy = self.policy.lacked(src, chunk.start // bs, -(-chunk.end // bs), nbytes)
        if self.have_wake is not None:
            self.have_wake.set()
        assert self.plan is not None
        self.plan.fail(chunk, refund=True)
        return True

    def _estimate_untested(self) -> None:
        """Rank a source by its first requests' rate so far once that says something
        (``_RANK_AFTER_S``, 64 KiB), instead of after its whole first chunk."""
        now = time.monotonic()
        for cid, (src, t0) in self.chunk_src.items():
            if self.policy[src].rate is not None or now - t0 < _RANK_AFTER_S:
                continue
            h = self.handles.get(cid)
            got = h.position - h.task.start if h is not None else 0
            if got >= 64 * 1024:
                self.policy = self.policy.estimated(src, got, now - t0)

    def _observe_sources(self) -> None:
        """Each mirror's bytes per second over the last ``_OBSERVE_S``, all its
        connections together (what it sent, and what its running requests have so
        far): the policy's measure of whether its total is capped. Counted against
        the fewest connections it had in that time (a window that began before they
        were all sent says nothing of them)."""
        now = time.monotonic()
        seen = [s.served for s in self.policy.sources]
        for cid, (src, _) in self.chunk_src.items():
            h = self.handles.get(cid)
            if h is not None:
                seen[src] += max(0, h.position - h.task.start)
        active = [s.active for s in self.policy.sources]
        then, before, fewest = self.observe_mark
        if len(before) != len(seen):  # the first look, or a peer came
            self.observe_mark = (now, seen, active)
            return
        fewest = [min(a, b) for a, b in zip(fewest, active, strict=True)]
        if now - then < _OBSERVE_S:
            self.observe_mark = (then, before, fewest)
            return
        for i, (a, b) in enumerate(zip(before, seen, strict=True)):
            self.policy = self.policy.observed(i, (b - a) / (now - then), fewest[i])
        self.observe_mark = (now, seen, active)

    def _limit_for(self, src: int, limit: int | None) -> int | None:
        """The longest chunk ``src`` gets now: its measurement chunk when untested, else
        a length it fetches in about the time the fastest source takes for ``limit``."""
        if len(self.policy) == 1 or not self.ranged:
            return limit
        size = limit or self.chunk_size or self._auto_chunk_size()
        floor = max(self.block_size or 1, MiB)
        s = self.policy[src]
        if s.rate is None:
            return min(size, max(floor, _MEASURE))
        best = max((x.rate or 0.0) for x in self.policy.sources if not x.quarantined)
        if best <= 0 or s.rate >= best:
            return limit
        return max(floor, min(size, int(size * s.rate / best)))

    async def _run_chunk(self, chunk: Chunk, handle: TaskHandle | None, src: int = 0) -> None:
        """Fetch one chunk once from source ``src`` (the caller counted the request in
        :attr:`policy`); on a retryable failure, back off (or, with other sources, go
        elsewhere at once) and give it back."""
        pool, slots, retry = self.shared.pool, self.shared.slots, self.shared.retry
        assert self.plan is not None
        link = self.links[src]
        if handle is None:
            try:
                handle = pool.submit(self._task(chunk.start, chunk.end, src))
            except BaseException:
                slots.release()
                self.policy = self.policy.ended(src, 0)
                raise
        t0 = time.monotonic()
        handle.on_progress = self._on_progress
        handle.on_trim = lambda new_end: self._on_trim(chunk, new_end)
        if not link.known:
            handle.on_head = link.learn
        self.handles[chunk.id] = handle
        self.chunk_src[chunk.id] = (src, t0)
        try:
            outcome = await asyncio.shield(handle.done)
        except asyncio.CancelledError:
            pool.cancel(handle)
            self.policy = self.policy.ended(src, handle.position - handle.task.start)
            raise
        finally:
            self.handles.pop(chunk.id, None)
            self.chunk_src.pop(chunk.id, None)
            slots.release()
        self.received += max(0, (outcome.end or handle.position) - handle.position)
        nbytes = max(0, (outcome.end or handle.position) - handle.task.start)
        if outcome.url is not None:
            link.resolved = outcome.url  # the original URL was asked again: a new target
        if self._race_stopped(chunk):  # a race won and trimmed it: the race finishes it
            self.policy = self.policy.ended(src, nbytes, kept=False)
            return
        if outcome.error is None:
            link.refusals = 0  # the budget is for refusals in a row: signatures expire
            self.policy = self.policy.finished(src, nbytes, time.monotonic() - t0)
            if src:
                self.done_src[handle.task.start] = src
            self._complete(chunk, outcome, handle.task.start)
            self.avoid.pop(chunk.id, None)
            self._race_lost(chunk)
            return
        self._race_lost(chunk)
        if self._not_held(src, chunk, outcome, nbytes):
            return
        if self._target_refused(handle.task, outcome, link):
            # An expired signed URL (or a mirror that lost the file): the source's own
            # URL decides again where the bytes are; finished chunks are kept.
            self.policy = self.policy.ended(src, nbytes, kept=False)
            self._count_retry(
                f"bytes {chunk.start}-{chunk.end - 1}: {outcome.error}; resolving the URL again"
            )
            self.plan.fail(chunk)
            return
        if len(self.policy) > 1 and self._blame(src, chunk, outcome, nbytes, t0):
            self.avoid.setdefault(chunk.id, set()).add(src)
            self.plan.fail(chunk, refund=True)  # a retry elsewhere, not the chunk's budget
            return
        if not outcome.retryable or not retry.allows(chunk.attempts):
            raise outcome.error
        self.retries += 1
        delay = retry.delay(chunk.attempts, outcome.retry_after)
        self._emit(
            "chunk_retry",
            f"bytes {chunk.start}-{chunk.end - 1}: {outcome.error.message}; "
            f"retry {chunk.attempts} in {delay:.1f} s",
        )
        await asyncio.sleep(delay)
        self.plan.fail(chunk)

    def _blame(self, src: int, chunk: Chunk, outcome: Outcome, nbytes: int, t0: float) -> bool:
        """Charge a failed request to its source; True when another source takes the
        chunk without touching its retry budget (the failure was a mirror's).

        A local error (the disk's) is no source's: False, and the caller raises it.
        The last resort's failures stay on the budget (and its backoff), as with one
        source, except a corrupt block, which other sources can still fix.
        """
        err = outcome.error
        assert err is not None
        if _local(err):
            return False
        s = self.policy[src]
        where = f"bytes {chunk.start}-{chunk.end - 1} from {_short(s.url)}"
        if isinstance(err, IntegrityError):
            offset = err.facts.get("offset")
            self.policy = self.policy.corrupt(src, nbytes)
            self._say_quarantined(src, s.quarantined, f"block ending at byte {offset} failed")
            if not self.policy[src].quarantined:
                self._count_retry(f"{where}: a blake3 block failed; source demoted, refetching")
            return not s.last_resort or self._others(src)
        if not outcome.retryable:
            if s.last_resort:
                return False  # the hub says there is no such file: that is the answer
            self.policy = self.policy.refused(src, nbytes, err.message)
            self._say_quarantined(src, s.quarantined, err.message)
            return True
        self.policy = self.policy.failed(src, nbytes, time.monotonic(), time.monotonic() - t0)
        if s.last_resort:
            return False
        self._count_retry(f"{where}: {err.message}; fetching elsewhere")
        return True

    def _others(self, src: int) -> bool:
        now = time.monotonic()
        return any(i != src and s.usable(now) for i, s in enumerate(self.policy.sources))

    def _say_quarantined(self, src: int, before: bool, why: str) -> None:
        """The ``source_quarantined`` event and its log line, once per source."""
        s = self.policy[src]
        if before or not s.quarantined:
            return
        message = f"source {s.url} quarantined for this download: {why}"
        log.warning("%s (%s)", message, self.url, extra={"source": s.url, "url": self.url})
        self._emit("source_quarantined", message)

    def _target_refused(self, task: Task, outcome: Outcome, link: Link) -> bool:
        """A redirect target that now refuses (401/403/404/410) while the URL it came
        from may still answer: worth another resolution, within the attempt budget
        (refusals in a row of the current target; one of a target already dropped is
        free, since chunks running at once all meet the same expiry)."""
        err = outcome.error
        if not (
            isinstance(err, HTTPStatusError)
            and err.facts.get("status") in _TARGET_GONE
            and task.url != link.url
        ):
            return False
        if task.url != link.resolved:
            return True
        if not self.shared.retry.allows(link.refusals + 1):
            return False
        link.refusals += 1
        link.resolved = None
        return True

    def _complete(self, chunk: Chunk, outcome: Outcome, task_start: int) -> None:
        assert self.plan is not None
        if outcome.end != chunk.end:
            raise DownloadError(
                f"{self.url}: a worker finished bytes {chunk.start}-{outcome.end}, "
                f"expected up to {chunk.end}"
            )
        assert self.hasher is not None
        self.plan.complete(chunk)
        # A task that began past an unfinished block's kept bytes hashed only its own.
        self.recorder.record(DoneChunk(start=task_start, end=chunk.end, xxh3=outcome.xxh3))
        if outcome.sha256 is not None and chunk.start == 0 and chunk.end == self.total:
            # One task streamed the whole file and hashed it on the way: nothing to read
            # back. (The hash loop has hashed nothing yet: no prefix was done before.)
            self.hasher.adopt(outcome.sha256)
        self.hasher.wake.set()

    def _on_trim(self, chunk: Chunk, new_end: int | None) -> None:
        # Runs inside the message dispatch, before any later "done" of the same task.
        self.splitting = False
        if new_end is not None and self.plan is not None:
            self.plan.split(chunk, new_end)

    def _maybe_split(self) -> None:
        """Halve the chunk with the most bytes left, so an idle connection can help."""
        if self.splitting or self.plan is None or not self.ranged:
            return
        best: tuple[int, Chunk, TaskHandle] | None = None
        for chunk in self.plan.active():
            h = self.handles.get(chunk.id)
            if h is None or chunk.id in self.races:
                continue
            left = chunk.end - h.position
            if best is None or left > best[0]:
                best = (left, chunk, h)
        if best is None:
            return
        _, chunk, h = best
        at = self.plan.split_point(chunk, h.position, max(MiB, self.block_size))
        if at is None:
            return
        self.splitting = True
        self.shared.pool.trim(h, at)


def _local(err: AccelError) -> bool:
    """An error of the local file (a full disk, an unwritable path): no source's."""
    return isinstance(err, InsufficientDiskSpaceError) or (
        "path" in err.facts and "url" not in err.facts
    )


def _short(url: str) -> str:
    """A source as a log line names it: scheme, host and path, no query (a presigned
    URL's signature stays out of logs)."""
    return url.split("?", 1)[0]

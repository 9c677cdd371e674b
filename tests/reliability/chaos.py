"""The chaos run: many downloads through the fault proxy at a random per-request fault rate.

Shared by the short tests in the default suite and the long soak (``ACCEL_SOAK=1``).
It downloads files of several sizes from a real nginx through :class:`FaultProxy` with one
:class:`accel.fetch.Engine`, and classifies every outcome:

- ``ok``: the engine said success and the bytes are identical to the source;
- ``corrupt``: the engine said success and the bytes differ (must never happen);
- ``failed``: the engine raised an :class:`AccelError` with a code and a message.

Anything else (a foreign exception, a hang) fails the run.

Two origins: the loud one (``CHAOS_KINDS``, with the manifest's blake3 blocks, so even a
flipped byte costs one chunk) and the silent one (:func:`run_silent_chaos`): the same
loud faults minus ``flip``, plus ``corrupt_rate`` of answers silently flipped or shifted,
and the engine knows only the SHA256 (``accel get --sha256 H``), so a corrupt chunk
shows only at the end and must be found by the repair (accel/fetch/repair.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from accel.errors import AccelError
from accel.fetch import Engine, Expected, ProgressEvent
from accel.schema import ChunkDigests
from tests.reliability.origin import NginxOrigin
from tests.support.faultproxy import ALL_KINDS, SILENT_KINDS, FaultKind, FaultProxy

# Every transient fault. A new file version is not transient: the right outcome is a
# RemoteChangedError, tested on its own (test_chaos.py::test_file_changing_mid_download).
CHAOS_KINDS = tuple(k for k in ALL_KINDS if k is not FaultKind.NEW_VERSION)
# The loud faults of the silent origin: every transient fault that a client can see.
LOUD_KINDS = tuple(k for k in CHAOS_KINDS if k not in SILENT_KINDS)

BLOCK = 256 * 1024
SIZES = (
    10_000,
    300_000,
    BLOCK * 3 + 17,
    2 * 1024 * 1024 + 5,
    5 * 1024 * 1024,
)


@dataclass
class ChaosReport:
    """What a chaos run found."""

    downloads: int = 0
    ok: int = 0
    corrupt: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failure_messages: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    progress_went_back: list[str] = field(default_factory=list)
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    #: body bytes the origin (the proxy) sent, and the bytes of the files asked for
    origin_bytes: int = 0
    file_bytes: int = 0
    #: downloads whose first SHA256 was wrong and that the repair then verified
    repaired: int = 0

    @property
    def complete_ratio(self) -> float:
        return self.ok / self.downloads if self.downloads else 0.0

    @property
    def origin_ratio(self) -> float:
        """Origin bytes per byte of file asked for (1.0: nothing fetched twice)."""
        return self.origin_bytes / self.file_bytes if self.file_bytes else 0.0

    def line(self) -> str:
        return (
            f"{self.downloads} downloads: {self.ok} ok, {self.corrupt} corrupt, "
            f"{self.failed} failed {dict(self.failures)}; {self.requests} requests, "
            f"{sum(self.faults.values())} faults {dict(self.faults)}; {self.elapsed_s:.1f} s"
        )

    def silent_line(self) -> str:
        """The line of a silent-origin run: how many needed the repair, and its cost."""
        return (
            f"{self.line()}; {self.repaired} repaired after a wrong SHA256; origin sent "
            f"{self.origin_ratio:.2f}x the file bytes on average"
        )


def make_sources(root: Path, seed: int, sizes: Sequence[int] = SIZES) -> list[tuple[str, bytes]]:
    """Files of every size in ``sizes``, random bytes, written under ``root``."""
    rnd = __import__("random").Random(seed)
    out = []
    for i, size in enumerate(sizes):
        data = rnd.randbytes(size)
        name = f"src{i}.bin"
        (root / name).write_bytes(data)
        out.append((name, data))
    return out


def expected_for(data: bytes, *, blocks: bool = True) -> Expected:
    """Size, SHA256 and blake3 block digests: what a manifest would tell the engine
    (``blocks=False``: size and SHA256 only, as ``accel get --sha256 H`` knows)."""
    if not blocks:
        return Expected(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    digests = [blake3.blake3(data[i : i + BLOCK]).hexdigest() for i in range(0, len(data), BLOCK)]
    return Expected(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunks=ChunkDigests(size=BLOCK, digests=digests or [blake3.blake3(b"").hexdigest()]),
    )


async def run_chaos(
    work: Path,
    *,
    downloads: int,
    rate: float = 0.3,
    seed: int = 1,
    parallel: int = 4,
    stall_s: float = 1.5,
    kinds: tuple[FaultKind, ...] = CHAOS_KINDS,
    max_attempts: int = 6,
    sizes: Sequence[int] = SIZES,
    blocks: bool = True,
    corrupt_rate: float = 0.0,
    chunk_size: int | None = BLOCK,
    timeout_s: float = 120,
) -> ChaosReport:
    """Run ``downloads`` downloads through a proxy injecting faults at ``rate`` (and
    silently corrupting ``corrupt_rate`` of the other answers)."""
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    sources = make_sources(www, seed, sizes)
    expected = {name: expected_for(data, blocks=blocks) for name, data in sources}
    report = ChaosReport()
    t0 = time.monotonic()
    with (
        NginxOrigin(www) as origin,
        FaultProxy(
            origin.url,
            fault_rate=rate,
            seed=seed,
            random_stall_s=stall_s,
            kinds=kinds,
            corrupt_rate=corrupt_rate,
        ) as proxy,
    ):
        async with Engine(
            workers=2,
            connections=8,
            stall_timeout=3.0,
            max_attempts=max_attempts,
            backoff_base=0.05,
            backoff_cap=1.0,
        ) as engine:
            sem = asyncio.Semaphore(parallel)

            async def one(i: int) -> None:
                name, data = sources[i % len(sources)]
                dest = work / "out" / f"{i:04d}-{name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                last = [0]
                repairing = [False]

                def progress(ev: ProgressEvent) -> None:
                    if ev.kind == "chunk_retry" and ev.message.startswith("SHA256 mismatch"):
                        repairing[0] = True
                    # Committed bytes only ever go up, whatever the faults (DESIGN.md).
                    if ev.committed < last[0]:
                        report.progress_went_back.append(f"{name}: {last[0]} -> {ev.committed}")
                    last[0] = max(last[0], ev.committed)

                async with sem:
                    report.file_bytes += len(data)
                    try:
                        await asyncio.wait_for(
                            engine.download(
                                f"{proxy.url}/{name}",
                                dest,
                                expected=expected[name],
                                chunk_size=chunk_size,
                                progress=progress,
                            ),
                            timeout=timeout_s,
                        )
                    except AccelError as exc:
                        report.failed += 1
                        report.failures[exc.code] += 1
                        report.failure_messages.append(f"{name}: [{exc.code}] {exc}")
                        return
                    except Exception as exc:  # the run must not hide these
                        report.foreign.append(f"{name}: {type(exc).__name__}: {exc}")
                        return
                    finally:
                        report.downloads += 1
                    if dest.read_bytes() == data:
                        report.ok += 1
                        report.repaired += repairing[0]
                    else:
                        report.corrupt += 1
                    os.unlink(dest)

            await asyncio.gather(*(one(i) for i in range(downloads)))
        s = proxy.snapshot()
    report.requests = s.requests
    report.faults = s.faults
    report.origin_bytes = s.client_body_bytes
    report.elapsed_s = time.monotonic() - t0
    return report


async def run_silent_chaos(
    work: Path,
    *,
    downloads: int,
    size: int,
    corrupt_rate: float = 0.02,
    rate: float = 0.3,
    seed: int = 11,
    parallel: int = 4,
) -> ChaosReport:
    """``downloads`` downloads of one ``size``-byte file, SHA256 only, through an origin
    that faults ``rate`` of requests loudly and silently corrupts ``corrupt_rate`` of
    the other answers; chunks sized by the engine, as ``accel get`` does."""
    return await run_chaos(
        work,
        downloads=downloads,
        rate=rate,
        seed=seed,
        parallel=parallel,
        kinds=LOUD_KINDS,
        sizes=(size,),
        blocks=False,
        corrupt_rate=corrupt_rate,
        chunk_size=None,
        timeout_s=600,
    )

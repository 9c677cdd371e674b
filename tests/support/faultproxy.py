"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, for tests and scripts.

It sits in front of one upstream (our hub or nginx) and, per request, either forwards
the exchange faithfully or injects one fault: chosen by a rule (the Nth request, a path,
a Range start) or at random at a given rate with a seed, so a failing chaos run can be
replayed. It also adds latency per request and trickles bodies at a byte rate.

Faults (``FaultKind``):

- ``reset``            RST the connection after N body bytes
- ``truncate``         close cleanly after N body bytes; Content-Length kept (short body)
- ``truncate_nolen``   no Content-Length, ``Connection: close``, close after N bytes:
                       a client that does not count bytes reads this as success
- ``flip``             flip one byte of the body (at offset N)
- ``shift``            drop the byte at offset N and send it last: every later byte
                       arrives one place early; length and headers stay right
- ``stall_headers``    sleep T seconds before the status line
- ``stall_body``       send N body bytes, then sleep T seconds, then go on
- ``status_503``       answer 503 with ``Retry-After`` (upstream not contacted)
- ``status_429``       answer 429 with ``Retry-After``
- ``ignore_range``     forward without Range: 200 with the whole file to a Range request
- ``wrong_range``      206 whose Content-Range names other bytes than the ones requested
- ``new_version``      the file "changed": another ETag and Last-Modified, different bytes;
                       a request carrying ``If-Match`` gets 412, one with ``If-Range`` 200

The proxy runs its own asyncio loop in a background thread, so sync tests, async tests
(on their own loop) and the multi-process downloader can all use it through its URL. It
counts requests, faults by kind, and body bytes sent to clients and read from upstream,
so a test can assert "the origin sent at most X".

``corrupt_rate`` is a second, independent draw (its own seeded stream, so the sequence
of ``fault_rate`` faults is the same with or without it): an answer that no other fault
hit is silently corrupted (``flip`` or ``shift``: status, headers and length are right,
some bytes are not), as a bad NIC, a broken middlebox or a faulty cache does. Keep-alive is supported: a client may
send many requests over one connection, as connection pools do.

It is test infrastructure: it never validates what the upstream says and it must never
be pointed at anything but loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import enum
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL


class FaultKind(enum.StrEnum):
    """The faults the proxy can inject; see the module docstring."""

    RESET = "reset"
    TRUNCATE = "truncate"
    TRUNCATE_NOLEN = "truncate_nolen"
    FLIP = "flip"
    SHIFT = "shift"
    STALL_HEADERS = "stall_headers"
    STALL_BODY = "stall_body"
    STATUS_503 = "status_503"
    STATUS_429 = "status_429"
    IGNORE_RANGE = "ignore_range"
    WRONG_RANGE = "wrong_range"
    NEW_VERSION = "new_version"


# Faults that only make sense on a request that carries a Range header.
RANGE_ONLY = frozenset({FaultKind.IGNORE_RANGE, FaultKind.WRONG_RANGE})
# Faults that need a body to act on.
BODY_FAULTS = frozenset(
    {
        FaultKind.RESET,
        FaultKind.TRUNCATE,
        FaultKind.TRUNCATE_NOLEN,
        FaultKind.FLIP,
        FaultKind.SHIFT,
        FaultKind.STALL_BODY,
    }
)
# Faults that change bytes and nothing else: only a digest of the bytes can tell.
SILENT_KINDS: tuple[FaultKind, ...] = (FaultKind.FLIP, FaultKind.SHIFT)
ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)$")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)$")
_PIECE = 64 * 1024
_XOR_5A = bytes(b ^ 0x5A for b in range(256))


@dataclass(frozen=True)
class FaultRule:
    """Inject ``kind`` into requests that match every given criterion.

    ``nth`` is the 1-based number of the request across the whole proxy (``from_nth``:
    that request and every later one); ``path`` a
    substring of the request target (``path_re`` a regex searched in it); ``range_start``
    the first byte of the request's Range. ``times`` is how often the rule fires
    (``None``: every time it matches). ``after_bytes`` positions reset, truncate,
    flip and mid-body stall (default: half of the body); ``stall_s`` is the length of a
    stall; ``retry_after`` the header value sent with 503/429.
    """

    kind: FaultKind
    nth: int | None = None
    from_nth: int | None = None
    path: str | None = None
    path_re: str | None = None
    range_start: int | None = None
    method: str | None = None
    times: int | None = 1
    after_bytes: int | None = None
    stall_s: float = 5.0
    retry_after: str = "1"

    def matches(self, number: int, method: str, target: str, range_start: int | None) -> bool:
        """True when the request numbered ``number`` meets every criterion of the rule."""
        if self.nth is not None and number != self.nth:
            return False
        if self.from_nth is not None and number < self.from_nth:
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self.path is not None and self.path not in target:
            return False
        if self.path_re is not None and not re.search(self.path_re, target):
            return False
        return self.range_start is None or range_start == self.range_start


@dataclass(frozen=True)
class Fault:
    """One decided fault with its parameters (``after_bytes`` None: middle of the body)."""

    kind: FaultKind
    after_bytes: int | None = None
    stall_s: float = 5.0
    retry_after: str = "1"


@dataclass
class RequestRecord:
    """What the proxy saw and did for one request."""

    number: int
    method: str
    target: str
    range: str | None
    fault: FaultKind | None
    status: int = 0
    body_bytes: int = 0


@dataclass
class ProxyStats:
    """Counters, read by tests from another thread (take ``snapshot()``)."""

    requests: int = 0
    connections: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    client_body_bytes: int = 0
    upstream_body_bytes: int = 0
    records: list[RequestRecord] = field(default_factory=list)


class _Reset(Exception):
    """Raised inside a handler to end the connection with an RST."""


def _parse_range(value: str | None) -> tuple[int | None, int | None] | None:
    if not value:
        return None
    m = _RANGE_RE.match(value.strip())
    if not m:
        return None
    start = int(m.group(1)) if m.group(1) else None
    end = int(m.group(2)) if m.group(2) else None
    return start, end


class FaultProxy:
    """The proxy: ``with FaultProxy(upstream, rules=[...], fault_rate=0.3, seed=1) as p``.

    ``p.url`` is its base URL (``http://127.0.0.1:PORT``); append the same paths as on
    the upstream. ``kinds`` limits the faults drawn at random; ``latency_s`` delays
    every request; ``trickle_bps`` caps every body at that many bytes per second;
    ``corrupt_rate`` silently corrupts that share of the other answers (``corrupt_kinds``).
    """

    def __init__(
        self,
        upstream: str,
        rules: Sequence[FaultRule] = (),
        *,
        fault_rate: float = 0.0,
        seed: int = 0,
        kinds: Sequence[FaultKind] = ALL_KINDS,
        latency_s: float = 0.0,
        trickle_bps: int | None = None,
        random_stall_s: float = 2.0,
        retry_after: str = "1",
        port: int = 0,
        only_path: str | None = None,
        corrupt_rate: float = 0.0,
        corrupt_kinds: Sequence[FaultKind] = SILENT_KINDS,
    ) -> None:
        self.upstream = URL(upstream.rstrip("/"))
        self.rules = list(rules)
        self._fired: Counter[int] = Counter()
        self.fault_rate = fault_rate
        self.kinds = tuple(FaultKind(k) for k in kinds)
        self.latency_s = latency_s
        self.trickle_bps = trickle_bps
        self.random_stall_s = random_stall_s
        self.retry_after = retry_after
        self.only_path = only_path
        self._rng = random.Random(seed)
        self.corrupt_rate = corrupt_rate
        self.corrupt_kinds = tuple(FaultKind(k) for k in corrupt_kinds)
        self._corrupt_rng = random.Random(f"corrupt-{seed}")
        self._want_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._stats = ProxyStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Start the loop thread and the listening socket; return once it accepts."""
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._start_error is not None:
            raise RuntimeError("fault proxy failed to start") from self._start_error
        if not self.port:
            raise RuntimeError("fault proxy did not start within 30 s")
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join the thread."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- configuration while running -------------------------------------------------

    def set_rules(self, rules: Sequence[FaultRule]) -> None:
        """Replace the rules (and forget how often the old ones fired)."""
        with self._lock:
            self.rules = list(rules)
            self._fired.clear()

    def set_fault_rate(self, rate: float) -> None:
        """Change the random fault rate."""
        with self._lock:
            self.fault_rate = rate

    # ---- stats -----------------------------------------------------------------------

    def snapshot(self) -> ProxyStats:
        """A consistent copy of the counters."""
        with self._lock:
            s = self._stats
            return ProxyStats(
                requests=s.requests,
                connections=s.connections,
                faults=Counter(s.faults),
                client_body_bytes=s.client_body_bytes,
                upstream_body_bytes=s.upstream_body_bytes,
                records=list(s.records),
            )

    @property
    def requests(self) -> int:
        """Requests received so far."""
        with self._lock:
            return self._stats.requests

    @property
    def faults(self) -> Counter[str]:
        """Faults injected so far, by kind."""
        with self._lock:
            return Counter(self._stats.faults)

    @property
    def client_body_bytes(self) -> int:
        """Body bytes written to clients so far."""
        with self._lock:
            return self._stats.client_body_bytes

    @property
    def upstream_body_bytes(self) -> int:
        """Body bytes read from the upstream so far."""
        with self._lock:
            return self._stats.upstream_body_bytes

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._lock:
            self._stats = ProxyStats()

    # ---- the loop thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._start_error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=connector, auto_decompress=False
        ) as session:
            self._session = session
            server = await asyncio.start_server(
                self._serve_connection, "127.0.0.1", self._want_port, backlog=1024
            )
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                server.close()
                for task in list(self._tasks):
                    task.cancel()
                if self._tasks:
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                await server.wait_closed()

    # ---- per connection --------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._stats.connections += 1
        # Limit 0: drain() returns only once bytes reached the kernel, so "after N body
        # bytes" means N bytes were really sent before a reset.
        writer.transport.set_write_buffer_limits(0)
        rst = False
        try:
            while True:
                keep = await self._serve_one(reader, writer)
                if not keep:
                    break
        except _Reset:
            rst = True
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            if rst:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 5)

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, str, list[tuple[str, str]], bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ConnectionError("bad request line")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        hmap = {k.lower(): v for k, v in headers}
        body = b""
        if "chunked" in hmap.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in hmap:
            body = await reader.readexactly(int(hmap["content-length"]))
        return method, target, version, headers, body

    def _decide(self, number: int, method: str, target: str, range_hdr: str | None) -> Fault | None:
        rng = _parse_range(range_hdr)
        range_start = rng[0] if rng else None
        with self._lock:
            for i, rule in enumerate(self.rules):
                if rule.times is not None and self._fired[i] >= rule.times:
                    continue
                if rule.matches(number, method, target, range_start):
                    self._fired[i] += 1
                    return Fault(rule.kind, rule.after_bytes, rule.stall_s, rule.retry_after)
            if self.only_path and self.only_path not in target:
                return None
            fault = self._draw_fault(method, range_hdr)
            silent = self._draw_corruption(method)
        return fault or silent

    def _draw_fault(self, method: str, range_hdr: str | None) -> Fault | None:
        """The random ``fault_rate`` draw (under the lock)."""
        if self.fault_rate <= 0 or self._rng.random() >= self.fault_rate:
            return None
        kinds = [k for k in self.kinds if range_hdr or k not in RANGE_ONLY]
        if method == "HEAD":
            kinds = [k for k in kinds if k not in BODY_FAULTS]
        if not kinds:
            return None
        kind = self._rng.choice(kinds)
        # A fraction of the body in [0, 1): turned into a byte offset once the length
        # is known; drawn here so that the sequence depends on the seed alone.
        frac = self._rng.random()
        stall = self.random_stall_s * (0.5 + self._rng.random())
        return Fault(kind, -1 - int(frac * 1_000_000), stall, self.retry_after)

    def _draw_corruption(self, method: str) -> Fault | None:
        """The ``corrupt_rate`` draw, from its own stream (under the lock)."""
        if self.corrupt_rate <= 0 or method == "HEAD" or not self.corrupt_kinds:
            return None
        rng = self._corrupt_rng
        if rng.random() >= self.corrupt_rate:
            return None
        kind = rng.choice(self.corrupt_kinds)
        return Fault(kind, -1 - int(rng.random() * 1_000_000), 0.0, self.retry_after)

    @staticmethod
    def _offset(fault: Fault, body_len: int | None) -> int:
        """Byte offset in the body where the fault acts."""
        if fault.after_bytes is not None and fault.after_bytes >= 0:
            return fault.after_bytes
        known = body_len if body_len is not None else 2 * _PIECE
        if fault.after_bytes is None:
            return known // 2
        frac = (-1 - fault.after_bytes) / 1_000_000
        return int(frac * max(known, 1))

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        req = await self._read_request(reader)
        if req is None:
            return False
        method, target, version, headers, body = req
        hmap = {k.lower(): v for k, v in headers}
        client_keep = version == "HTTP/1.1" and hmap.get("connection", "").lower() != "close"
        with self._lock:
            self._stats.requests += 1
            number = self._stats.requests
        range_hdr = hmap.get("range")
        fault = self._decide(number, method, target, range_hdr)
        record = RequestRecord(number, method, target, range_hdr, fault.kind if fault else None)
        with self._lock:
            self._stats.records.append(record)
            if fault is not None:
                self._stats.faults[fault.kind.value] += 1

        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault is not None and fault.kind is FaultKind.STALL_HEADERS:
            await asyncio.sleep(fault.stall_s)

        if fault is not None and fault.kind in (FaultKind.STATUS_503, FaultKind.STATUS_429):
            status = 503 if fault.kind is FaultKind.STATUS_503 else 429
            payload = json.dumps(
                {
                    "error": {
                        "code": "injected_fault",
                        "message": f"fault proxy answered {status}",
                        "status": status,
                    }
                }
            ).encode()
            await self._write_simple(
                writer, status, payload, [("Retry-After", fault.retry_after)], client_keep
            )
            record.status = status
            return client_keep

        up_headers = [
            (k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() != "host"
        ]
        if fault is not None and fault.kind is FaultKind.IGNORE_RANGE:
            up_headers = [(k, v) for k, v in up_headers if k.lower() not in ("range", "if-range")]
        new_version = fault is not None and fault.kind is FaultKind.NEW_VERSION
        if new_version:
            if "if-match" in hmap:
                await self._write_simple(writer, 412, b"", [], client_keep)
                record.status = 412
                return client_keep
            if "if-range" in hmap:
                up_headers = [
                    (k, v) for k, v in up_headers if k.lower() not in ("range", "if-range")
                ]
            up_headers = [(k, v) for k, v in up_headers if not k.lower().startswith("if-")]

        url = URL(str(self.upstream) + target, encoded=True)
        assert self._session is not None
        try:
            resp_cm = self._session.request(
                method,
                url,
                headers=up_headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
            resp = await resp_cm.__aenter__()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            payload = f"fault proxy: upstream unreachable: {exc}".encode()
            await self._write_simple(writer, 502, payload, [], client_keep)
            record.status = 502
            return client_keep
        try:
            return await self._relay(resp, method, writer, fault, record, client_keep)
        finally:
            await resp_cm.__aexit__(None, None, None)

    async def _relay(
        self,
        resp: aiohttp.ClientResponse,
        method: str,
        writer: asyncio.StreamWriter,
        fault: Fault | None,
        record: RequestRecord,
        client_keep: bool,
    ) -> bool:
        kind = fault.kind if fault else None
        status = resp.status
        out_headers: list[tuple[str, str]] = []
        body_len: int | None = None
        for kb, vb in resp.raw_headers:
            k, v = kb.decode("latin-1"), vb.decode("latin-1")
            lk = k.lower()
            if lk in _HOP_BY_HOP:
                continue
            if lk == "content-length":
                body_len = int(v)
                continue
            out_headers.append((k, v))
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        head_len = body_len  # what a HEAD response announces

        if kind is FaultKind.WRONG_RANGE and status == 206:
            out_headers = [self._shift_content_range(k, v) for k, v in out_headers]
        if kind is FaultKind.NEW_VERSION:
            out_headers = [
                (k, '"changed-' + v.strip('"').removeprefix("W/") + '"')
                if k.lower() == "etag"
                else (k, email.utils.formatdate(time.time(), usegmt=True))
                if k.lower() == "last-modified"
                else (k, v)
                for k, v in out_headers
            ]

        keep = client_keep
        chunked = False
        if kind is FaultKind.TRUNCATE_NOLEN and not no_body:
            keep = False
            out_headers.append(("Connection", "close"))
        elif no_body:
            if head_len is not None:
                out_headers.append(("Content-Length", str(head_len)))
        elif body_len is not None:
            out_headers.append(("Content-Length", str(body_len)))
        elif client_keep:
            chunked = True
            out_headers.append(("Transfer-Encoding", "chunked"))
        else:
            keep = False
        if not keep and not any(k.lower() == "connection" for k, _ in out_headers):
            out_headers.append(("Connection", "close"))

        reason = resp.reason or ""
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out_headers)
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        record.status = status
        if no_body:
            return keep

        at = self._offset(fault, body_len) if fault is not None and kind in BODY_FAULTS else -1
        sent = 0
        stalled = False
        dropped = b""  # the byte a shift moves to the end
        async for piece in resp.content.iter_chunked(_PIECE):
            with self._lock:
                self._stats.upstream_body_bytes += len(piece)
            if kind is FaultKind.NEW_VERSION:
                piece = piece.translate(_XOR_5A)
            end = sent + len(piece)
            if kind is FaultKind.FLIP and sent <= at < end:
                buf = bytearray(piece)
                buf[at - sent] ^= 0xFF
                piece = bytes(buf)
            if kind is FaultKind.SHIFT and sent <= at < end:
                dropped = piece[at - sent : at - sent + 1]
                piece = piece[: at - sent] + piece[at - sent + 1 :]
            if kind in (FaultKind.RESET, FaultKind.TRUNCATE, FaultKind.TRUNCATE_NOLEN) and end > at:
                await self._send(writer, piece[: max(at - sent, 0)], chunked, record)
                if kind is FaultKind.RESET:
                    raise _Reset
                return False
            if kind is FaultKind.STALL_BODY and not stalled and end > at:
                assert fault is not None
                cut = max(at - sent, 0)
                await self._send(writer, piece[:cut], chunked, record)
                await asyncio.sleep(fault.stall_s)
                stalled = True
                await self._send(writer, piece[cut:], chunked, record)
            else:
                await self._send(writer, piece, chunked, record)
            sent = end
        if kind is FaultKind.SHIFT and dropped:
            await self._send(writer, dropped, chunked, record)
        if kind in (FaultKind.RESET, FaultKind.TRUNCATE, FaultKind.TRUNCATE_NOLEN):
            # Body shorter than the cut point: still end the exchange abnormally.
            if kind is FaultKind.RESET:
                raise _Reset
            return False
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        return keep

    @staticmethod
    def _shift_content_range(k: str, v: str) -> tuple[str, str]:
        if k.lower() != "content-range":
            return k, v
        m = _CONTENT_RANGE_RE.match(v)
        if not m:
            return k, v
        start, end, total = int(m.group(1)), int(m.group(2)), m.group(3)
        # Claim bytes one block later (or earlier at the end of the file): a client that
        # does not compare Content-Range with its request would write them at the wrong place.
        shift = 4096
        if total != "*" and end + shift >= int(total):
            shift = -min(start, shift) or 1
        return k, f"bytes {start + shift}-{end + shift}/{total}"

    async def _send(
        self, writer: asyncio.StreamWriter, data: bytes, chunked: bool, record: RequestRecord
    ) -> None:
        if not data:
            return
        if self.trickle_bps:
            step = max(1, self.trickle_bps // 20)
            for i in range(0, len(data), step):
                part = data[i : i + step]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                await writer.drain()
                self._count(len(part), record)
                await asyncio.sleep(len(part) / self.trickle_bps)
            return
        writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        await writer.drain()
        self._count(len(data), record)

    def _count(self, n: int, record: RequestRecord) -> None:
        with self._lock:
            self._stats.client_body_bytes += n
            record.body_bytes += n

    async def _write_simple(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        extra: list[tuple[str, str]],
        keep: bool,
    ) -> None:
        reasons = {412: "Precondition Failed", 429: "Too Many Requests", 502: "Bad Gateway"}
        reasons[503] = "Service Unavailable"
        lines = [f"HTTP/1.1 {status} {reasons.get(status, '')}"]
        lines += [f"{k}: {v}" for k, v in extra]
        if payload:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
        if not keep:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.support.faultproxy --upstream URL --rate 0.3 --seed 1``."""
    p = argparse.ArgumentParser(prog="faultproxy", description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0, help="random fault rate per request")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(ALL_KINDS), help="comma-separated fault kinds")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    p.add_argument("--trickle", type=int, default=None, help="body bytes per second")
    p.add_argument("--stall", type=float, default=2.0, help="typical random stall (s)")
    p.add_argument("--corrupt-rate", type=float, default=0.0, help="silent flip/shift rate")
    args = p.parse_args(argv)
    kinds = [FaultKind(k.strip()) for k in args.kinds.split(",") if k.strip()]
    proxy = FaultProxy(
        args.upstream,
        fault_rate=args.rate,
        seed=args.seed,
        kinds=kinds,
        latency_s=args.latency,
        trickle_bps=args.trickle,
        random_stall_s=args.stall,
        port=args.port,
        corrupt_rate=args.corrupt_rate,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with proxy:
        print(proxy.url, flush=True)
        done.wait()
        s = proxy.snapshot()
    summary: dict[str, Any] = {
        "requests": s.requests,
        "connections": s.connections,
        "faults": dict(s.faults),
        "client_body_bytes": s.client_body_bytes,
        "upstream_body_bytes": s.upstream_body_bytes,
    }
    print(json.dumps(summary), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

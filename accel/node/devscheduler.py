"""A minimal scheduler endpoint, for demos, tests and the scheduler team to copy.

It receives MODEL_NOT_AVAILABLE reports by HTTP POST at ``/reports`` and over a
WebSocket at ``/ws`` (answering each with ``{"type": "ACK", "message_id": ...}``, which
:class:`~accel.node.transport.WebSocketTransport` waits for), validates them against
:class:`~accel.schema.ModelNotAvailableMessage` and keeps them in arrival order.
``python -m accel.node.devscheduler --port 9000`` runs it and prints one JSON line per
report on stdout. It is not a scheduler: it assigns no jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from accel.schema import ModelNotAvailableMessage

__all__ = ["DevScheduler", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DevScheduler:
    """Collects reports; ``fail_first`` answers that many HTTP posts with 503 first;
    with ``token`` set, requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        fail_first: int = 0,
        token: str | None = None,
        on_report: Callable[[ModelNotAvailableMessage], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.fail_first = fail_first
        self.token = token
        self.received: list[ModelNotAvailableMessage] = []
        self.raw: list[dict[str, Any]] = []
        self._on_report = on_report
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}/reports"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    async def _store(self, data: Any) -> ModelNotAvailableMessage:
        msg = ModelNotAvailableMessage.model_validate(data)
        async with self._arrived:
            self.raw.append(data)
            self.received.append(msg)
            self._arrived.notify_all()
        if self._on_report is not None:
            self._on_report(msg)
        return msg

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _post(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": "busy"}, status=503)
        try:
            msg = await self._store(await request.json())
        except (ValueError, ValidationError) as exc:
            return web.json_response({"error": str(exc).splitlines()[0]}, status=400)
        return web.json_response({"ok": True, "message_id": msg.message_id})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    break
                try:
                    msg = await self._store(json.loads(frame.data))
                except (ValueError, ValidationError):
                    continue  # no ACK: the sender retries, and a human reads the log
                await ws.send_str(json.dumps({"type": "ACK", "message_id": msg.message_id}))
        finally:
            self._sockets.discard(ws)
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/reports", self._post)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            # A stopping server drops its websockets, as a crashed scheduler would.
            for ws in list(self._sockets):
                await ws.close()
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ModelNotAvailableMessage]:
        """Wait until ``count`` reports have arrived; returns all received so far."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def __aenter__(self) -> DevScheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _main(port: int) -> None:
    def show(msg: ModelNotAvailableMessage) -> None:
        sys.stdout.write(msg.model_dump_json() + "\n")
        sys.stdout.flush()

    sched = DevScheduler(port, on_report=show)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sched:
        sys.stderr.write(f"dev scheduler on {sched.http_url} and {sched.ws_url}\n")
        sys.stderr.flush()
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9000)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().port))

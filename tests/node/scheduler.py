"""A small real scheduler for the node tests: aiohttp on 127.0.0.1.

It accepts MODEL_NOT_AVAILABLE reports by HTTP POST (``/reports``) and over a WebSocket
(``/ws``, answering each with an ACK), validates them against the schema model and keeps
them in order. It can be started late on a port chosen in advance, to test delivery to
a scheduler that is down at first.
"""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import WSMsgType, web

from accel.schema import ModelNotAvailableMessage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Scheduler:
    def __init__(self, port: int | None = None, *, fail_first: int = 0) -> None:
        self.port = port or free_port()
        self.received: list[ModelNotAvailableMessage] = []
        self.raw: list[dict[str, object]] = []
        self.fail_first = fail_first
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/reports"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def _store(self, data: dict[str, object]) -> ModelNotAvailableMessage:
        msg = ModelNotAvailableMessage.model_validate(data)
        async with self._arrived:
            self.raw.append(data)
            self.received.append(msg)
            self._arrived.notify_all()
        return msg

    async def _post(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": "busy"}, status=503)
        msg = await self._store(await request.json())
        return web.json_response({"ok": True, "message_id": msg.message_id})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    break
                msg = await self._store(json.loads(frame.data))
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
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            # A stopping server must drop its websockets, as a crashed scheduler would.
            for ws in list(self._sockets):
                await ws.close()
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ModelNotAvailableMessage]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

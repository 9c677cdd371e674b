"""How a node delivers messages to the scheduler: HTTP POST or WebSocket.

Owns the :class:`SchedulerTransport` protocol and its two aiohttp implementations. A
transport makes one delivery attempt per :meth:`send` call and raises
:class:`DeliveryError` when it cannot say the scheduler has the message; retrying,
queueing and backoff belong to :class:`accel.node.reporter.SchedulerReporter`, so a
transport never sleeps and never loops.

A third transport is one class with ``send`` and ``aclose``; tests use a list-backed one.
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol, runtime_checkable

import aiohttp

from accel.errors import DeliveryError, UsageError
from accel.schema import ModelNotAvailableMessage

__all__ = [
    "DeliveryError",
    "HttpTransport",
    "SchedulerTransport",
    "WebSocketTransport",
    "transport_for_url",
]


@runtime_checkable
class SchedulerTransport(Protocol):
    """Delivers one message per call, or raises :class:`DeliveryError`."""

    async def send(self, message: ModelNotAvailableMessage) -> None:
        """Deliver ``message``; return only once the scheduler has accepted it."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _body(message: ModelNotAvailableMessage) -> str:
    return message.model_dump_json()


class HttpTransport:
    """``POST`` each message as JSON to ``url``; any 2xx answer means delivered."""

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def send(self, message: ModelNotAvailableMessage) -> None:
        session = self._ensure_session()
        try:
            async with session.post(self.url, data=_body(message), headers=self._headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    raise DeliveryError(
                        f"scheduler at {self.url} answered HTTP {resp.status}",
                        url=self.url,
                        status=resp.status,
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(
                f"cannot reach the scheduler at {self.url}: {exc or type(exc).__name__}",
                url=self.url,
            ) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class WebSocketTransport:
    """Send each message as a JSON text frame on one long-lived WebSocket.

    The connection is opened on first use and reopened after any failure. With
    ``require_ack`` (the default) a message counts as delivered only when the scheduler
    answers ``{"type": "ACK", "message_id": <id>}`` within ``ack_timeout_s``; a frame
    written into a socket that dies a moment later would otherwise be lost silently.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        require_ack: bool = True,
        ack_timeout_s: float = 5.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.require_ack = require_ack
        self._ack_timeout_s = ack_timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        self._ws = await self._session.ws_connect(self.url, headers=self._headers, heartbeat=30)
        return self._ws

    async def _drop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _wait_ack(self, ws: aiohttp.ClientWebSocketResponse, message_id: str) -> None:
        async with asyncio.timeout(self._ack_timeout_s):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"websocket closed while waiting for ack ({msg.type})")
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if (
                    isinstance(data, dict)
                    and data.get("type") == "ACK"
                    and data.get("message_id") == message_id
                ):
                    return

    async def send(self, message: ModelNotAvailableMessage) -> None:
        # One message in flight at a time: acks are matched in order on one socket.
        async with self._lock:
            try:
                ws = await self._connect()
                await ws.send_str(_body(message))
                if self.require_ack:
                    await self._wait_ack(ws, message.message_id)
            except (aiohttp.ClientError, TimeoutError, OSError, ConnectionError) as exc:
                await self._drop()
                raise DeliveryError(
                    f"cannot deliver to the scheduler at {self.url}: {exc or type(exc).__name__}",
                    url=self.url,
                ) from exc

    async def aclose(self) -> None:
        await self._drop()
        if self._session is not None:
            await self._session.close()
            self._session = None


def transport_for_url(url: str, *, token: str | None = None) -> SchedulerTransport:
    """``ws://``/``wss://`` -> :class:`WebSocketTransport`; ``http(s)://`` -> HTTP POST."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("ws", "wss"):
        return WebSocketTransport(url, token=token)
    if scheme in ("http", "https"):
        return HttpTransport(url, token=token)
    raise UsageError(
        f"scheduler URL {url!r} must start with http://, https://, ws:// or wss://",
        hint="e.g. --scheduler http://127.0.0.1:9000/api/node-events",
    )

"""Running the hub: bind, serve until SIGTERM/SIGINT, shut down cleanly.

Owns the process-level part of ``accel serve`` (event loop choice, socket, signals) so
the CLI stays a parser and tests can run the same code.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from accel.hub.app import create_app

__all__ = ["run", "serve"]


async def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 8600,
    *,
    tokens: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the store at ``root`` until ``stop`` is set (or SIGTERM/SIGINT arrive)."""
    app = create_app(root, tokens=tokens)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}")
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def run(
    root: Path,
    host: str,
    port: int,
    *,
    tokens: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Blocking entry point: uvloop when installed, else asyncio's default loop."""
    factory = None
    if sys.platform != "win32":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(root, host, port, tokens=tokens, on_ready=on_ready))

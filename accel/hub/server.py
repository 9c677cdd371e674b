"""Running the hub: bind, serve until SIGTERM/SIGINT, shut down cleanly.

Owns the process-level part of ``accel serve`` (event loop choice, socket, signals) so
the CLI stays a parser and tests can run the same code. Connections are accepted by
:class:`accel.listener.LimitedSite` (request-head timeout, connection cap).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from accel.hub.app import create_app
from accel.hub.stores import ModelStore
from accel.listener import LimitedSite, Limits, bind_listening_socket, raise_open_files_limit

__all__ = ["run", "run_workers", "serve"]


async def serve(
    root: Path | ModelStore,
    host: str = "127.0.0.1",
    port: int = 8600,
    *,
    tokens: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    reuse_port: bool = False,
    limits: Limits = Limits(),  # frozen: one shared default is safe
    mirrors: Sequence[str] = (),
    usage_db: str | None = None,
    report_timeout_s: float = 5.0,
    peer_tokens: Sequence[str] = (),
    peer_ttl: float = 30.0,
) -> None:
    """Serve the store ``root`` (a directory or a :class:`ModelStore`) until ``stop`` is set (or SIGTERM/SIGINT arrive).

    ``reuse_port`` joins a ``SO_REUSEPORT`` group: several worker processes bound to one
    port, the kernel spreading connections over them. ``limits`` (per process) close a
    connection whose request head is late and cap the open connections; the open files
    limit is raised to what the cap needs. ``usage_db`` is a ``postgresql://`` URL
    shared by several hubs (default: SQLite beside the store).
    """
    room = raise_open_files_limit(limits.max_connections)
    limits = replace(limits, max_connections=room)
    sock = bind_listening_socket(host, port, reuse_port=reuse_port)  # fails before any setup
    app = create_app(
        root,
        tokens=tokens,
        mirrors=mirrors,
        usage_db=usage_db,
        report_timeout_s=report_timeout_s,
        peer_tokens=peer_tokens,
        peer_ttl=peer_ttl,
    )
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()
        site = LimitedSite(runner, sock, limits, access_log=None)
        await site.start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
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
    root: Path | ModelStore,
    host: str,
    port: int,
    *,
    tokens: Sequence[str] = (),
    on_ready: Callable[[str], None] | None = None,
    reuse_port: bool = False,
    limits: Limits = Limits(),  # frozen: one shared default is safe
    mirrors: Sequence[str] = (),
    usage_db: str | None = None,
    report_timeout_s: float = 5.0,
    peer_tokens: Sequence[str] = (),
    peer_ttl: float = 30.0,
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
        runner.run(
            serve(
                root,
                host,
                port,
                tokens=tokens,
                on_ready=on_ready,
                reuse_port=reuse_port,
                limits=limits,
                mirrors=mirrors,
                usage_db=usage_db,
                report_timeout_s=report_timeout_s,
                peer_tokens=peer_tokens,
                peer_ttl=peer_ttl,
            )
        )


def run_workers(
    child_cmd: Sequence[str],
    host: str,
    port: int,
    workers: int,
    *,
    on_ready: Callable[[str], None] | None = None,
    start_timeout: float = 30.0,
) -> int:
    """Run ``workers`` hub processes on one port (``SO_REUSEPORT``) and supervise them.

    The port is reserved first by a socket that is bound but never listens (so it never
    receives a connection), which also resolves ``port=0``; each worker runs
    ``child_cmd + ["--port", PORT]`` and joins the group. SIGTERM/SIGINT are forwarded;
    if a worker dies on its own, the others are stopped and 1 is returned. A single
    Python process serves one core; this spreads requests over all of them. Usage counts
    stay exact: every worker adds deltas to the same database (SQLite file or PostgreSQL).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserve = socket.socket(family, socket.SOCK_STREAM)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserve.bind((host, port))
    bound = reserve.getsockname()[1]
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(workers):
            procs.append(
                subprocess.Popen([*child_cmd, "--port", str(bound)], stdout=subprocess.PIPE)
            )
        deadline = time.monotonic() + start_timeout
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()  # the worker's ready line
            if b" at http" not in line or time.monotonic() > deadline:
                forward(signal.SIGTERM, None)
                return 1
        reserve.close()
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}")
        while not stopping:
            if any(p.poll() is not None for p in procs):
                forward(signal.SIGTERM, None)
                for p in procs:
                    p.wait()
                return 1
            time.sleep(0.2)
        codes = [p.wait() for p in procs]
        return 0 if all(c == 0 for c in codes) else 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        reserve.close()

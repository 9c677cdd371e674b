"""``accel node``: the long-running daemon that owns one models dir.

Owns the lifecycle of a node: one :class:`~accel.manager.ModelManager`, the scheduler
reporter and job guard, the event broadcaster fed by the manager's events, the
pre-seeding loop over the hub's top-N ranking, the aiohttp server of
:mod:`accel.node.api` (control API, ``/events``, dashboard) and, with ``serve_peers``,
the peer server (:mod:`accel.node.peerserver`, on a listener of its own) and the
announce loop to the hub's tracker (:mod:`accel.node.announce`). On SIGTERM it stops
accepting work, ends the event streams, and closes the manager, which cancels the
transfers and leaves every one resumable; the next start re-queues what was in flight.
Never prints: the CLI wrapper logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from accel.errors import AccelError, NotFoundError, UsageError
from accel.listener import LimitedSite, Limits, bind_listening_socket, raise_open_files_limit
from accel.node.announce import Announcer
from accel.node.events import EventBroadcaster, event_name, to_jsonable
from accel.node.guard import JobGuard
from accel.node.holdings import Holdings
from accel.node.hubinfo import HubInfo, preseed_candidates
from accel.node.peerserver import PeerServer, PeerServerConfig
from accel.node.reporter import SchedulerReporter
from accel.node.transport import transport_for_url
from accel.node.view import model_card, total_line

__all__ = ["IN_FLIGHT", "NodeConfig", "NodeDaemon", "run_node"]

log = logging.getLogger("accel.node")

#: states that a restart picks up again (paused stays paused, error waits for retry)
IN_FLIGHT = frozenset({"queued", "downloading", "verifying"})
#: manager events after which what this node holds may have changed (announce soon)
_HOLDING_EVENTS = frozenset({"progress", "ready", "failed", "removed", "state", "resuming"})
_STATE_RANK = {"ready": 6, "verifying": 5, "downloading": 4, "queued": 3, "paused": 2, "error": 1}


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``accel node`` is started with."""

    models_dir: Path
    hub_url: str
    host: str = "127.0.0.1"
    port: int = 8700
    scheduler_url: str | None = None
    scheduler_token: str | None = None
    preseed_top: int = 0
    preseed_interval_s: float = 600.0
    token: str | None = None
    node_id: str = field(default_factory=socket.gethostname)
    install_missing: bool = True
    max_parallel_files: int = 3
    limit_rate: float | None = None
    #: request-head timeout and connection cap of the daemon's HTTP listener
    listen_limits: Limits = field(default_factory=Limits)
    #: serve this node's files to other nodes (and announce them to the hub's tracker)
    serve_peers: bool = False
    peer_host: str = "0.0.0.0"
    peer_port: int = 8701
    #: the URL other nodes reach the peer server at (default: from the listen address)
    peer_url: str | None = None
    #: the fleet token: peers must send it, and announces carry it
    peer_token: str | None = None
    #: bytes per second sent to peers, all together (None: no cap)
    peer_upload_limit: float | None = None
    #: peer transfers at once (past it: 503 with Retry-After)
    peer_max_clients: int = 32
    #: this node's zone label in announces (the tracker hands out same-zone peers first)
    zone: str = ""


async def call(obj: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.a<name>`` if the manager has an async variant, else ``obj.<name>``."""
    fn = getattr(obj, f"a{name}", None) or getattr(obj, name)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def records_of(status: Any) -> list[dict[str, Any]]:
    """The manager's status answer as a list of per-version dicts (model_id, state...)."""
    data = to_jsonable(status)
    if isinstance(data, dict):
        for key in ("models", "versions", "installs", "items"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data] if "model_id" in data else list(data.values())
    out = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and "model_id" in item:
            item = dict(item)
            item.setdefault("state", item.get("status"))
            out.append(item)
    return out


def best_states(records: list[dict[str, Any]]) -> dict[str, str]:
    """model_id -> its most advanced local state across versions."""
    best: dict[str, str] = {}
    for r in records:
        state = str(r.get("state"))
        mid = str(r["model_id"])
        if _STATE_RANK.get(state, 0) > _STATE_RANK.get(best.get(mid, ""), 0):
            best[mid] = state
    return best


class NodeDaemon:
    """One node: manager + reporter + guard + events + pre-seeding + HTTP server."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        manager_factory: Callable[[NodeConfig], Any] | None = None,
    ) -> None:
        self.config = config
        self._manager_factory = manager_factory or _default_manager
        self.manager: Any = None
        self.events = EventBroadcaster()
        self.hub = HubInfo(config.hub_url, token=config.token)
        self.reporter: SchedulerReporter | None = None
        self.guard: JobGuard | None = None
        self.preseed_status: dict[str, Any] = {
            "top": config.preseed_top,
            "last_run": None,
            "started": [],
            "error": None,
        }
        self.cards: dict[str, dict[str, Any]] = {}
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self._peer_runner: web.AppRunner | None = None
        self.peers: PeerServer | None = None
        self.peer_url: str | None = None
        self.announcer: Announcer | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the manager, start background tasks and the HTTP server."""
        from accel.node.api import make_app

        self.manager = self._manager_factory(self.config)
        if self.config.scheduler_url:
            self.reporter = SchedulerReporter(
                transport_for_url(self.config.scheduler_url, token=self.config.scheduler_token),
                on_delivered=lambda m: self.events.publish(
                    {"job_id": m.job_id, "message_id": m.message_id}, "report_delivered"
                ),
            )
            self.reporter.start()
        self.guard = JobGuard(
            self.manager,
            self.reporter,
            node_id=self.config.node_id,
            install_missing=self.config.install_missing,
        )
        self._tasks.append(asyncio.create_task(self._pump_events(), name="node-events"))
        await self.refresh_cards(publish=False)
        await self._resume_interrupted()
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="node-refresh"))
        if self.config.preseed_top > 0:
            self._tasks.append(asyncio.create_task(self._preseed_loop(), name="node-preseed"))
        limits = self.config.listen_limits
        room = raise_open_files_limit(limits.max_connections)
        self._runner = web.AppRunner(make_app(self), shutdown_timeout=2.0, handle_signals=False)
        await self._runner.setup()
        sock = bind_listening_socket(self.config.host, self.config.port)
        await LimitedSite(self._runner, sock, replace(limits, max_connections=room)).start()
        port = sock.getsockname()[1]
        self.url = f"http://{self.config.host}:{port}"
        log.info("node %s listening on %s", self.config.node_id, self.url)
        if self.config.serve_peers:
            await self._start_peers(replace(limits, max_connections=room))

    async def _start_peers(self, limits: Limits) -> None:
        """The peer server on its own listener, then the announce loop (with a hub)."""
        cfg = self.config
        self.peers = PeerServer(
            Holdings(cfg.models_dir),
            PeerServerConfig(
                token=cfg.peer_token,
                upload_limit=cfg.peer_upload_limit,
                max_clients=cfg.peer_max_clients,
            ),
        )
        self._peer_runner = web.AppRunner(
            self.peers.app(), shutdown_timeout=2.0, handle_signals=False
        )
        await self._peer_runner.setup()
        sock = bind_listening_socket(cfg.peer_host, cfg.peer_port)
        await LimitedSite(self._peer_runner, sock, limits, access_log=None).start()
        port = sock.getsockname()[1]
        self.peer_url = cfg.peer_url or advertised_url(cfg.peer_host, port, cfg.hub_url)
        log.info("node %s serves peers on %s", cfg.node_id, self.peer_url)
        if cfg.hub_url:
            self.announcer = Announcer(
                cfg.hub_url,
                node_id=cfg.node_id,
                url=self.peer_url,
                zone=cfg.zone,
                token=cfg.peer_token,
                holdings=self.peers.holdings.versions,
            )
            self._tasks.append(asyncio.create_task(self.announcer.run(), name="node-announce"))

    async def stop(self) -> None:
        """Graceful stop: end streams, stop tasks, close the manager (downloads resumable)."""
        self.stopping.set()
        self.events.publish({"reason": "node stopping"}, "shutdown")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.announcer is not None:
            await self.announcer.leave()
        if self._peer_runner is not None:
            await self._peer_runner.cleanup()
            self._peer_runner = None
        if self.peers is not None:
            self.peers.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.reporter is not None:
            await self.reporter.aclose()
        await self.hub.aclose()
        if self.manager is not None:
            await self._save_resume_list()
            await call(self.manager, "close")
        log.info("node stopped")

    # -- background work ---------------------------------------------------------------
    async def _pump_events(self) -> None:
        while not self.stopping.is_set():
            try:
                async for event in self.manager.subscribe():
                    try:
                        self.ingest(event)
                    except Exception:  # a malformed event must not kill the stream
                        log.exception("cannot publish event %r", event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the manager's event subscription failed; resubscribing")
            await asyncio.sleep(1.0)

    def ingest(self, event: Any) -> dict[str, Any]:
        """Publish one manager event, with the dashboard card it updates attached."""
        data = to_jsonable(event)
        if not isinstance(data, dict):
            data = {"value": data}
        name = event_name(data, event)
        if self.announcer is not None and name in _HOLDING_EVENTS:
            self.announcer.poke()
        if isinstance(data.get("model_id"), str):
            card = model_card({**data, "event": name}, self.cards.get(_key(data)))
            if name == "removed":
                self.cards.pop(card["key"], None)
            else:
                self.cards[card["key"]] = card
            data["card"] = card
            data["node_total"] = total_line(self.cards.values())
        return self.events.publish(data, name)

    async def local_records(self) -> list[dict[str, Any]]:
        return records_of(await call(self.manager, "status"))

    async def refresh_cards(self, *, publish: bool = True) -> list[dict[str, Any]]:
        """Rebuild the cards from the manager's status (after actions, and periodically)."""
        records = await self.local_records()
        fresh: dict[str, dict[str, Any]] = {}
        for rec in records:
            key = _key(rec)
            fresh[key] = model_card(rec, self.cards.get(key))
            # A status record carries no live speed; keep the last event's while in flight.
            old = self.cards.get(key)
            if old and old.get("state") == fresh[key]["state"] == "downloading":
                fresh[key]["speed_bps"] = old.get("speed_bps")
                fresh[key]["eta_s"] = old.get("eta_s")
        self.cards = fresh
        if publish:
            self.events.publish(
                {"cards": list(fresh.values()), "total": total_line(fresh.values())}, "cards"
            )
        return list(fresh.values())

    async def _refresh_loop(self, interval_s: float = 5.0) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self.stopping.wait()
            try:
                await self.refresh_cards()
            except Exception:
                log.exception("cannot refresh the model list")

    @property
    def resume_file(self) -> Path:
        """Where a graceful stop writes the installs the next start must continue."""
        return self.config.models_dir / ".accel" / "node" / "resume.json"

    async def _save_resume_list(self) -> None:
        # The manager records an install stopped by shutdown as "paused", like one a
        # person paused; this list is what tells the next start which ones to continue.
        try:
            keys = sorted(
                {
                    (r["model_id"], r.get("version"))
                    for r in await self.local_records()
                    if r.get("state") in IN_FLIGHT
                },
                key=str,
            )
            if keys:
                write_json_atomic(
                    self.resume_file, [{"model_id": m, "version": v} for m, v in keys]
                )
            else:
                self.resume_file.unlink(missing_ok=True)
        except (OSError, AccelError) as exc:
            log.warning("cannot record the installs to resume: %s", exc)

    def _interrupted(self, records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
        """Installs to continue: those a graceful stop listed, and those whose owner died.

        A crash (kill -9, power loss) leaves an active state in the registry with a dead
        owner; the manager shows it as paused, but the raw record still says where it was.
        """
        found: set[tuple[str, str | None]] = set()
        with contextlib.suppress(OSError, ValueError):
            for item in json.loads(self.resume_file.read_text(encoding="utf-8")):
                found.add((str(item["model_id"]), item.get("version")))
        registry = getattr(self.manager, "registry", None)
        if registry is not None and hasattr(registry, "read"):
            try:
                raw = {(r.model_id, r.version): r.state for r in registry.read().installs.values()}
            except (OSError, AccelError, ValueError) as exc:
                log.warning("cannot read the registry: %s", exc)
                raw = {}
            for rec in records:
                key = (rec["model_id"], rec.get("version"))
                # Raw state active but shown paused: the manager judged its owner dead.
                if rec.get("state") == "paused" and raw.get(key) in IN_FLIGHT:
                    found.add(key)
        return sorted(found, key=str)

    async def _resume_interrupted(self) -> None:
        for model_id, version in self._interrupted(await self.local_records()):
            log.info("resuming %s@%s", model_id, version)
            try:
                await call(self.manager, "resume", model_id, version)
            except AccelError as exc:
                log.warning("cannot resume %s@%s: %s", model_id, version, exc)
        with contextlib.suppress(FileNotFoundError):
            self.resume_file.unlink()

    async def set_priority(self, model_id: str, version: str | None, priority: int) -> list[str]:
        """Give every unfinished install of ``model_id`` (one ``version``, or all) ``priority``.

        A queued install moves in the manager's queue at once; the registry record (what
        status shows, and what resume re-queues with) takes the new value too, so a paused
        or failed install keeps it and runs with it when resumed. Returns the keys changed.
        Raises NotFoundError when there is no such install, UsageError when it is ready.
        """
        label = f"{model_id}@{version}" if version else model_id
        mine = [
            r
            for r in await self.local_records()
            if r.get("model_id") == model_id and (version is None or r.get("version") == version)
        ]
        pending = [r for r in mine if r.get("state") != "ready"]
        if not pending:
            if mine:
                raise UsageError(
                    f"{label} is installed already: a priority only orders installs still to run"
                )
            raise NotFoundError(
                f"this node has no install of {label}",
                hint="install it with a priority: POST /api/install {model_id, priority}",
            )
        if hasattr(self.manager, "set_priority") or hasattr(self.manager, "aset_priority"):
            await call(self.manager, "set_priority", model_id, version, priority)
        else:
            # Re-queueing with a new priority is how such a manager's queue re-orders work.
            await call(self.manager, "install", model_id, version, priority=priority, wait=False)
        keys = {(str(r["model_id"]), str(r.get("version"))) for r in pending}
        registry = getattr(self.manager, "registry", None)
        if registry is not None and hasattr(registry, "update"):

            def change(reg: Any) -> None:
                for rec in reg.installs.values():
                    if (rec.model_id, rec.version) in keys and rec.state != "ready":
                        rec.priority = priority

            await asyncio.to_thread(registry.update, change)
        return sorted(f"{m}@{v}" for m, v in keys)

    async def preseed_once(self) -> list[str]:
        """Queue the hub's top-N models that this node does not have yet."""
        ranking = await self.hub.ranking(self.config.preseed_top)
        states = best_states(await self.local_records())
        started = []
        for model_id in preseed_candidates(ranking, states, self.config.preseed_top):
            await call(self.manager, "install", model_id, None, priority=0, wait=False)
            started.append(model_id)
        self.preseed_status.update(
            last_run=asyncio.get_running_loop().time(), started=started, error=None
        )
        self.events.publish(
            {
                "top": self.config.preseed_top,
                "started": started,
                "ranking": [e.model_id for e in ranking],
            },
            "preseed",
        )
        return started

    async def _preseed_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.preseed_once()
            except AccelError as exc:
                self.preseed_status["error"] = exc.to_dict()
                log.warning("pre-seeding failed: %s", exc)
            except Exception as exc:  # a bad hub answer must not end pre-seeding for good
                self.preseed_status["error"] = {"code": "internal", "message": str(exc)}
                log.exception("pre-seeding failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.preseed_interval_s):
                    await self.stopping.wait()


def write_json_atomic(path: Path, data: Any) -> None:
    """temp file in the same dir -> fsync -> rename -> fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def advertised_url(host: str, port: int, hub_url: str | None) -> str:
    """The peer server's URL as other nodes reach it: the listen address, or, for a
    wildcard one (``0.0.0.0``, ``::``), this host's address on the route to the hub
    (a UDP connect sends nothing; it only picks the source address), else its name."""
    if host not in ("0.0.0.0", "::", ""):
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"
    address = socket.gethostname()
    hub_host = urlsplit(hub_url).hostname if hub_url else None
    if hub_host:
        family = socket.AF_INET6 if host == "::" and ":" in hub_host else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((hub_host, 9))
            address = probe.getsockname()[0]
    shown = f"[{address}]" if ":" in address else address
    return f"http://{shown}:{port}"


def _key(data: dict[str, Any]) -> str:
    return f"{data.get('model_id')}@{data.get('version')}"


def _default_manager(config: NodeConfig) -> Any:
    from accel.manager import ModelManager

    return ModelManager(
        config.models_dir,
        config.hub_url,
        token=config.token,
        max_parallel_files=config.max_parallel_files,
        limit_rate=config.limit_rate,
        # its installs read from peers with the fleet token (never handed themselves)
        peer_token=config.peer_token,
        node_id=config.node_id,
        peer_zone=config.zone,
    )


async def run_node(config: NodeConfig, *, ready: Callable[..., None] | None = None) -> None:
    """Run a node until SIGTERM or SIGINT, then stop gracefully (``ready(url)`` once it
    listens; ``ready(url, peer_url)`` when it serves peers too)."""
    daemon = NodeDaemon(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
        if ready is not None and daemon.url:
            if daemon.peer_url:
                ready(daemon.url, daemon.peer_url)
            else:
                ready(daemon.url)
        await stop.wait()
    finally:
        await daemon.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

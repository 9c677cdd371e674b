"""A small fake of the ModelManager seam, for the daemon's unit tests.

It keeps states in memory and, for an install, emits progress events over a few ticks
and then ``ready`` (or ``failed`` for models listed in ``fail``). The real manager and a
real hub replace it in tests/node/test_node_process.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from accel.errors import ModelNotAvailableError


class FakeManager:
    def __init__(
        self,
        root: Path,
        *,
        sizes: dict[str, int] | None = None,
        tick_s: float = 0.05,
        ticks: int = 10,
    ) -> None:
        self.root = root
        self.sizes = sizes or {}
        self.tick_s = tick_s
        self.ticks = ticks
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail: set[str] = set()
        self.calls: list[tuple[str, str, str | None]] = []
        self._queues: list[asyncio.Queue[dict[str, Any]]] = []
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.closed = False

    # -- events ----------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        for q in self._queues:
            q.put_nowait(event)

    async def _iter(self, q: asyncio.Queue[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await q.get()

    def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.append(q)
        return self._iter(q)

    # -- API -------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records.values()]

    def get_model_path(self, model_id: str, version: str | None = None) -> Path:
        rec = self.records.get((model_id, version or "1.0"))
        if rec is None:
            raise ModelNotAvailableError(model_id, version, "not_installed")
        if rec["state"] != "ready":
            raise ModelNotAvailableError(
                model_id, version, rec["state"], progress=rec["bytes_done"] / rec["bytes_total"]
            )
        return Path(rec["path"])

    async def ainstall(
        self, model_id: str, version: str | None = None, *, priority: int = 0, wait: bool = True
    ) -> None:
        self.calls.append(("install", model_id, version))
        version = version or "1.0"
        key = (model_id, version)
        rec = self.records.get(key)
        if rec is not None and rec["state"] in ("ready", "downloading", "queued"):
            rec["priority"] = priority
            return
        size = self.sizes.get(model_id, 1_000_000)
        self.records[key] = {
            "model_id": model_id,
            "version": version,
            "state": "queued",
            "priority": priority,
            "bytes_done": 0,
            "bytes_total": size,
            "path": None,
            "files": [{"path": "model.bin", "bytes_done": 0, "bytes_total": size}],
        }
        self._start(key)

    def _start(self, key: tuple[str, str]) -> None:
        self._tasks[key] = asyncio.create_task(self._run(key))

    async def _run(self, key: tuple[str, str]) -> None:
        rec = self.records[key]
        rec["state"] = "downloading"
        step = rec["bytes_total"] // self.ticks
        while rec["bytes_done"] < rec["bytes_total"]:
            await asyncio.sleep(self.tick_s)
            rec["bytes_done"] = min(rec["bytes_total"], rec["bytes_done"] + step)
            rec["files"][0]["bytes_done"] = rec["bytes_done"]
            if key[0] in self.fail and rec["bytes_done"] >= rec["bytes_total"] // 2:
                rec["state"] = "error"
                rec["error"] = {"code": "checksum_mismatch", "message": "model.bin: sha256 differs"}
                self._emit(
                    {"type": "failed", "model_id": key[0], "version": key[1], "error": rec["error"]}
                )
                return
            self._emit(
                {
                    "type": "progress",
                    "model_id": key[0],
                    "version": key[1],
                    "bytes_done": rec["bytes_done"],
                    "bytes_total": rec["bytes_total"],
                    "speed_bps": step / self.tick_s,
                    "eta_s": 1.0,
                    "state": "downloading",
                    "files": rec["files"],
                }
            )
        rec["state"] = "ready"
        rec["path"] = str(self.root / key[0] / key[1])
        self._emit({"type": "ready", "model_id": key[0], "version": key[1], "path": rec["path"]})

    async def apause(self, model_id: str, version: str | None = None) -> None:
        key = (model_id, version or "1.0")
        self.calls.append(("pause", model_id, version))
        self._tasks.pop(key).cancel()
        self.records[key]["state"] = "paused"

    async def aresume(self, model_id: str, version: str | None = None) -> None:
        key = (model_id, version or "1.0")
        self.calls.append(("resume", model_id, version))
        self._start(key)

    async def aretry(self, model_id: str, version: str | None = None) -> None:
        key = (model_id, version or "1.0")
        self.calls.append(("retry", model_id, version))
        self.fail.discard(model_id)
        self.records[key].pop("error", None)
        self._start(key)

    async def aremove(self, model_id: str, version: str | None = None) -> None:
        key = (model_id, version or "1.0")
        self.calls.append(("remove", model_id, version))
        self.records.pop(key)
        self._emit({"type": "removed", "model_id": model_id, "version": key[1]})

    async def aclose(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        self.closed = True

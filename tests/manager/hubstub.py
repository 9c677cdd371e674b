"""A stand-in for the hub, used by the manager tests until (or besides) the real one.

A real HTTP server on 127.0.0.1 (aiohttp, in a subprocess) serving the hub API of
DESIGN.md from a store laid out like the hub's (``models/<id>/model.json``,
``models/<id>/<version>/manifest.json``, files under ``files/``): catalog with strong
ETags and 304s, manifests with blake3 block digests, storage with Range (FileResponse),
a bearer token, and an access log (``<root>/access.log``: status, bytes, path per line)
so tests count what the origin really sent. ``publish`` writes a version into a store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _digests(path: Path) -> tuple[str, list[str]]:
    import blake3

    sha = hashlib.sha256()
    blocks = []
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK):
            sha.update(chunk)
            blocks.append(blake3.blake3(chunk).hexdigest())
    return sha.hexdigest(), blocks


def publish(
    root: Path,
    model_id: str,
    version: str,
    files: dict[str, int | bytes],
    *,
    default: bool = True,
    seed: int = 0,
) -> dict[str, object]:
    """Write a version into the store (sizes become seeded random bytes); returns manifest."""
    from accel.schema import ManifestFile, version_checksum

    vdir = root / "models" / model_id / version
    fdir = vdir / "files"
    entries = []
    for i, (rel, content) in enumerate(sorted(files.items())):
        dest = fdir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            rnd = hashlib.sha256(f"{model_id}/{version}/{rel}/{seed}/{i}".encode()).digest()
            data = (rnd * (content // 32 + 1))[:content]
            # vary blocks so content is not a repeating pattern across files
            data = os.urandom(min(content, 64)) + data[min(content, 64) :]
        else:
            data = content
        dest.write_bytes(data)
        sha, blocks = _digests(dest)
        entries.append(
            {
                "path": rel,
                "size_bytes": len(data),
                "sha256": sha,
                "chunks": {"algo": "blake3", "size": BLOCK, "digests": blocks},
            }
        )
    checksum = version_checksum([ManifestFile.model_validate(e) for e in entries])
    manifest = {
        "model_id": model_id,
        "version": version,
        "size_bytes": sum(int(e["size_bytes"]) for e in entries),  # type: ignore[call-overload]
        "files": entries,
        "checksum_sha256": checksum,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    meta_path = root / "models" / model_id / "model.json"
    meta = (
        json.loads(meta_path.read_text())
        if meta_path.exists()
        else {"name": model_id, "task": "asr", "languages": ["en"], "default_version": None}
    )
    if default or meta.get("default_version") is None:
        meta["default_version"] = version
    meta_path.write_text(json.dumps(meta))
    return manifest


def republish_file(root: Path, model_id: str, version: str, rel: str, data: bytes) -> None:
    """Change one file of a published version (a hub-side edit) and its manifest."""
    mpath = root / "models" / model_id / version / "manifest.json"
    manifest = json.loads(mpath.read_text())
    dest = root / "models" / model_id / version / "files" / rel
    dest.write_bytes(data)
    sha, blocks = _digests(dest)
    for e in manifest["files"]:
        if e["path"] == rel:
            e.update(
                size_bytes=len(data),
                sha256=sha,
                chunks={"algo": "blake3", "size": BLOCK, "digests": blocks},
            )
    from accel.schema import ManifestFile, version_checksum

    manifest["checksum_sha256"] = version_checksum(
        [ManifestFile.model_validate(e) for e in manifest["files"]]
    )
    manifest["size_bytes"] = sum(e["size_bytes"] for e in manifest["files"])
    mpath.write_text(json.dumps(manifest))


@dataclass
class StubHub:
    url: str
    root: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> list[tuple[int, int, str]]:
        path = self.root / "access.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            status, n, p = line.split(" ", 2)
            out.append((int(status), int(n), p))
        return out

    def storage_bytes(self, prefix: str = "/storage/") -> int:
        return sum(n for _, n, p in self.log() if p.startswith(prefix))

    def requests(self, path: str) -> int:
        """Requests for exactly ``path`` (query included)."""
        return sum(1 for _, _, p in self.log() if p == path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def running_stub(
    root: Path, token: str | None = None, port: int | None = None
) -> Iterator[StubHub]:
    """Run the stub hub over ``root`` until the block ends."""
    port = port or _free_port()
    cmd = [sys.executable, "-m", "tests.manager.hubstub", str(root), str(port)]
    if token:
        cmd.append(token)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hub = StubHub(f"http://127.0.0.1:{port}", root, proc)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("stub hub did not start")
            time.sleep(0.02)
        yield hub
    finally:
        hub.stop()


def _serve(root: Path, port: int, token: str | None) -> None:
    from aiohttp import web

    log = open(root / "access.log", "a", buffering=1)  # noqa: SIM115

    def error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(
            {"error": {"code": code, "message": message, "status": status}}, status=status
        )

    @web.middleware
    async def mw(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if (
            token
            and request.path != "/healthz"
            and request.headers.get("Authorization") != f"Bearer {token}"
        ):
            resp = error(401, "unauthorized", "token required")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return await handler(request)

    async def on_prepare(request: web.Request, resp: web.StreamResponse) -> None:
        n = int(resp.headers.get("Content-Length", "0") or 0)
        log.write(f"{resp.status} {n if request.method != 'HEAD' else 0} {request.path_qs}\n")

    def model_item(mid: str) -> dict[str, object] | None:
        mdir = root / "models" / mid
        meta_path = mdir / "model.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        versions = []
        for mpath in sorted(mdir.glob("*/manifest.json")):
            m = json.loads(mpath.read_text())
            versions.append(
                {
                    "version": m["version"],
                    "size_bytes": m["size_bytes"],
                    "files": [
                        {k: f[k] for k in ("path", "size_bytes", "sha256")} for f in m["files"]
                    ],
                    "checksum_sha256": m["checksum_sha256"],
                    "updated_at": m["updated_at"],
                }
            )
        return {
            "id": mid,
            "name": meta["name"],
            "versions": versions,
            "default_version": meta["default_version"],
            "task": meta.get("task"),
            "languages": meta.get("languages", []),
        }

    def etagged(request: web.Request, body: object) -> web.Response:
        raw = json.dumps(body, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=raw, content_type="application/json", headers={"ETag": etag})

    async def models(request: web.Request) -> web.Response:
        items = [model_item(p.name) for p in sorted((root / "models").glob("*")) if p.is_dir()]
        return etagged(request, [i for i in items if i])

    async def model(request: web.Request) -> web.Response:
        item = model_item(request.match_info["mid"])
        if item is None:
            return error(404, "not_found", "no such model")
        return etagged(request, item)

    async def manifest(request: web.Request) -> web.Response:
        mid, ver = request.match_info["mid"], request.match_info["ver"]
        mpath = root / "models" / mid / ver / "manifest.json"
        if ".." in mid or ".." in ver or not mpath.exists():
            return error(404, "not_found", "no such version")
        counts = root / "usage.json"
        usage = json.loads(counts.read_text()) if counts.exists() else {}
        usage[mid] = usage.get(mid, 0) + 1
        counts.write_text(json.dumps(usage))
        return etagged(request, json.loads(mpath.read_text()))

    async def ranking(request: web.Request) -> web.Response:
        counts = root / "usage.json"
        usage = json.loads(counts.read_text()) if counts.exists() else {}
        limit = int(request.query.get("limit", "10"))
        rows = sorted(usage.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return web.json_response(
            [{"model_id": m, "request_count": c, "rank": i + 1} for i, (m, c) in enumerate(rows)]
        )

    async def storage(request: web.Request) -> web.StreamResponse:
        mid, ver, rel = (request.match_info[k] for k in ("mid", "ver", "path"))
        mpath = root / "models" / mid / ver / "manifest.json"
        if not mpath.exists():
            return error(404, "not_found", "no such file")
        listed = {f["path"] for f in json.loads(mpath.read_text())["files"]}
        path = root / "models" / mid / ver / "files" / rel
        if rel not in listed or not path.is_file():
            return error(404, "not_found", "no such file")
        resp = web.FileResponse(path)
        return resp

    app = web.Application(middlewares=[mw])
    app.on_response_prepare.append(on_prepare)
    app.router.add_get("/healthz", lambda r: web.json_response({"ok": True}))
    app.router.add_get("/api/models", models)
    app.router.add_get("/api/models/{mid}", model)
    app.router.add_get("/api/models/{mid}/versions/{ver}/manifest", manifest)
    app.router.add_get("/api/model-usage/ranking", ranking)
    app.router.add_get("/storage/models/{mid}/{ver}/{path:.+}", storage)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)

"""``accel get URL``: download one file, fast, verified and resumable.

Parses and renders only: a rich progress bar on a terminal, one line per second when
stderr is not a terminal, newline-delimited JSON events with ``--json``. The work is
:func:`accel.fetch.adownload`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import re
import signal
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from accel._cli._paths import local_path_str
from accel.errors import AccelError, NotADirectoryPathError, UsageError
from accel.meter import RateMeter, Received, eta
from accel.units import format_bytes, format_progress, format_rate, parse_rate, parse_size

__all__ = ["register"]

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "get",
        help="download one URL with many connections, verified and resumable",
        description="Download URL into a file. Rerun the same command after an "
        "interruption: finished chunks are kept and only the rest is fetched.",
    )
    p.epilog = (
        "Example: accel get https://example.org/model.bin -o model.bin -x 8 --limit-rate 25M "
        "--sha256 HEX; with mirrors: accel get URL --mirror URL2 --mirror URL3 --sha256 HEX"
    )
    p.add_argument("url", metavar="URL", help="http:// or https:// URL of the file")
    p.add_argument(
        "-o", "--output", metavar="PATH", type=local_path_str, help="file or directory to write"
    )
    p.add_argument(
        "--mirror",
        metavar="URL",
        action="append",
        default=[],
        help="another full URL of the same file (repeatable): chunks go to every source "
        "by measured speed, none is trusted (blocks and sizes are checked; pass "
        "--manifest for block digests, else --sha256), and URL stays the last resort",
    )
    p.add_argument(
        "--max-connections-per-source",
        metavar="N",
        default="16",
        help="connections to each source at once when there are several (default: 16)",
    )
    p.add_argument("--sha256", metavar="HEX", help="expected SHA256 of the file")
    p.add_argument("--size", metavar="BYTES", help="expected size (e.g. 1GiB)")
    p.add_argument("--manifest", metavar="URL_OR_FILE", help="a hub version manifest")
    p.add_argument("--file", metavar="PATH", help="the file's path inside --manifest")
    p.add_argument("--workers", metavar="N", help="worker processes (default: one per core)")
    p.add_argument(
        "--connections",
        "-x",
        "--max-connection-per-server",
        "-s",
        "--split",
        dest="connections",
        metavar="N|auto",
        default="auto",
        help="connections to the server (default: auto). aria2c's -x and -s are accepted "
        "and both set this one number: accel splits by chunks, not per connection",
    )
    p.add_argument(
        "--chunk-size",
        "-k",
        "--min-split-size",
        dest="chunk_size",
        metavar="SIZE",
        help="bytes per Range request, e.g. 8M (default: chosen from the size and connections)",
    )
    p.add_argument(
        "--limit-rate",
        "--max-download-limit",
        dest="limit_rate",
        metavar="RATE",
        help="total rate cap in binary units: 25M = 25 MiB/s, 500K = 500 KiB/s; "
        "25MB/s = 25,000,000 B/s (default: none)",
    )
    p.add_argument(
        "-c",
        "--continue",
        dest="continue_",
        action="store_true",
        help="accepted for curl/aria2c/wget habits: accel always resumes",
    )
    p.add_argument(
        "--header",
        metavar="'K: V'",
        action="append",
        default=[],
        help="extra request header (repeatable)",
    )
    p.add_argument(
        "--header-secret",
        metavar="'K: V'",
        action="append",
        default=[],
        help="a request header never sent to another origin on a redirect (repeatable); "
        "Authorization, Proxy-Authorization, Cookie, X-Api-Key, X-Auth-Token, "
        "Private-Token and X-Amz-Security-Token always are",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="re-hash a file already there even when its record says it is verified",
    )
    p.add_argument("--json", action="store_true", help="print NDJSON events on stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(func=handler)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Validate every option; a bad value is a UsageError naming the option."""
    url = args.url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(
            f"URL: expected an http:// or https:// URL, got {url!r}",
            hint="e.g. accel get https://example.org/model.bin -o model.bin",
        )
    if args.sha256 is not None and not _HEX64.match(args.sha256):
        raise UsageError(f"--sha256: expected 64 hex digits, got {args.sha256!r}")
    size = parse_size(args.size, option="--size") if args.size is not None else None
    chunk = parse_size(args.chunk_size, option="--chunk-size") if args.chunk_size else None
    if chunk is not None and chunk <= 0:
        raise UsageError(f"--chunk-size: must be greater than zero, got {args.chunk_size!r}")
    rate = parse_rate(args.limit_rate, option="--limit-rate") if args.limit_rate else None
    workers = None
    if args.workers is not None:
        if not args.workers.isdigit() or int(args.workers) < 1:
            raise UsageError(f"--workers: expected a whole number >= 1, got {args.workers!r}")
        workers = int(args.workers)
    connections: int | str = args.connections
    if connections != "auto":
        if not str(connections).isdigit() or int(connections) < 1:
            raise UsageError(
                f"--connections: expected a whole number >= 1 or 'auto', got {connections!r}"
            )
        connections = int(connections)
    headers: dict[str, str] = {}
    secret: set[str] = set()
    for option, values in (("--header", args.header), ("--header-secret", args.header_secret)):
        for h in values:
            name, sep, value = h.partition(":")
            if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
                raise UsageError(f"{option}: expected 'Name: value', got {h!r}")
            headers[name.strip()] = value.strip()
            if option == "--header-secret":
                secret.add(name.strip().lower())
    if args.check and args.sha256 is None and args.manifest is None:
        raise UsageError("--check: nothing to check against", hint="pass --sha256 or --manifest")
    mirrors: list[str] = []
    for m in args.mirror:
        ms = urllib.parse.urlsplit(m)
        if ms.scheme not in ("http", "https") or not ms.netloc:
            raise UsageError(f"--mirror: expected an http:// or https:// URL, got {m!r}")
        if m != url and m not in mirrors:
            mirrors.append(m)
    per_source = str(args.max_connections_per_source)
    if not per_source.isdigit() or int(per_source) < 1:
        raise UsageError(
            f"--max-connections-per-source: expected a whole number >= 1, got {per_source!r}"
        )
    if (args.manifest is None) != (args.file is None):
        raise UsageError("--manifest and --file go together: name the file inside the manifest")
    return {
        "url": url,
        "dest": _destination(url, args.output),
        "size": size,
        "chunk_size": chunk,
        "limit_rate": rate,
        "workers": workers,
        "connections": connections,
        "headers": headers,
        "secret_headers": frozenset(secret),
        "check": args.check,
        "mirrors": tuple(mirrors),
        "max_connections_per_source": int(per_source),
    }


def _destination(url: str, output: str | None) -> Path:
    """The local name: ``-o``, else the URL's last path segment (never the server's)."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if output is not None:
        out = Path(output)
        if not out.is_dir():
            _check_parents(out)
            return out
    else:
        out = Path(".")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(
            f"-o: cannot take a file name from {url!r}", hint="pass -o PATH to name the file"
        )
    return out / name


def _check_parents(dest: Path) -> None:
    """Refuse ``-o FILE/sub`` before anything starts, naming the file in the way.

    Found later, the same mistake surfaces as ``mkdir``'s EEXIST on FILE ("file exists"),
    which names the wrong problem.
    """
    for parent in dest.parents:  # nearest first; exists() is False below a regular file
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryPathError(
                    f"cannot write {dest}: {parent} is a file, not a directory",
                    hint=f"-o names a path inside {parent}, which is a file: choose another path",
                    path=str(dest),
                    action="write",
                    errno=errno.ENOTDIR,
                    errno_name="ENOTDIR",
                )
            return


def _expected(args: argparse.Namespace, size: int | None, headers: dict[str, str]) -> Any:
    from accel.fetch import Expected

    sha = args.sha256.lower() if args.sha256 else None
    if args.manifest is None:
        if sha is None and "/resolve/" in urllib.parse.urlsplit(args.url).path:
            # A Hugging Face resolve URL announces its file's sha256: hold the bytes to it.
            from accel.manager.hfsource import linked_digest

            sha, linked_size = linked_digest(args.url, headers)
            size = size if size is not None else linked_size
        return Expected(size=size, sha256=sha)
    from urllib.request import Request, urlopen  # here: email + http.client cost every get

    from pydantic import ValidationError

    from accel.schema import VersionManifest

    src = args.manifest
    try:
        if src.startswith(("http://", "https://")):
            req = Request(src, headers=headers)
            with urlopen(req, timeout=30) as resp:
                raw = resp.read()
        else:
            raw = Path(src).read_bytes()
        manifest = VersionManifest.model_validate_json(raw)
    except (OSError, ValidationError, ValueError) as exc:
        raise UsageError(f"--manifest: cannot read a version manifest from {src!r}: {exc}") from exc
    entry = next((f for f in manifest.files if f.path == args.file), None)
    if entry is None:
        raise UsageError(
            f"--file: {args.file!r} is not in the manifest of "
            f"{manifest.model_id}@{manifest.version}",
            hint="files: " + ", ".join(f.path for f in manifest.files[:10]),
        )
    if sha and sha != entry.sha256:
        raise UsageError("--sha256: disagrees with the manifest's SHA256 for --file")
    if size is not None and size != entry.size_bytes:
        raise UsageError("--size: disagrees with the manifest's size for --file")
    return Expected(size=entry.size_bytes, sha256=entry.sha256, chunks=entry.chunks)


def handler(args: argparse.Namespace) -> int:
    opts = _options(args)
    expected = _expected(args, opts["size"], opts["headers"])
    if opts["limit_rate"] is None:
        # The workers' interpreters start now, while this one imports the engine.
        from accel.fetch.pool import DEFAULT_WORKER_NICE, default_workers, prespawn

        prespawn(opts["workers"] or default_workers(), nice=DEFAULT_WORKER_NICE)
    renderer: _Renderer
    if args.json:
        renderer = _JsonRenderer()
    elif args.quiet:
        renderer = _Renderer()
    elif sys.stderr.isatty():
        renderer = _BarRenderer()
    else:
        renderer = _LineRenderer()
    try:
        import uvloop

        run: Any = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    held = _held(opts["dest"])
    if held is not None:
        renderer.resuming(opts["dest"], *held)
        renderer.kept(held[0])
    try:
        result = run(_main(opts, expected, renderer))
    except AccelError as exc:
        renderer.failed(exc)
        raise
    finally:
        renderer.close()
    renderer.finished(result)
    return 0


def _held(dest: Path) -> tuple[int, int] | None:
    """(bytes kept, file size) from an earlier run's checkpoint, None if nothing is held.

    The engine re-reads each recorded chunk before trusting it; this is what a rerun
    starts from, said before it starts.
    """
    from accel.fetch.checkpoint import load_checkpoint, part_path

    try:
        cp = load_checkpoint(dest)
        if cp is None or not part_path(dest).exists():
            return None
    except (AccelError, OSError):
        return None
    kept = min(cp.size, sum(c.end - c.start for c in cp.chunks))
    return (kept, cp.size) if kept else None


async def _main(opts: dict[str, Any], expected: Any, renderer: _Renderer) -> Any:
    from accel.fetch import adownload

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        # SIGTERM like Ctrl-C: cancel, which saves the checkpoint before exiting.
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await adownload(
            opts["url"],
            opts["dest"],
            expected=expected,
            limit_rate=opts["limit_rate"],
            workers=opts["workers"],
            connections=opts["connections"],
            chunk_size=opts["chunk_size"],
            headers=opts["headers"],
            secret_headers=opts["secret_headers"],
            progress=renderer.event,
            check=opts["check"],
            mirrors=opts["mirrors"],
            max_connections_per_source=opts["max_connections_per_source"],
        )
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


class _Renderer:
    """Quiet: renders nothing. Every renderer folds events into the one progress model
    (:mod:`accel.meter`): bytes received never shown decreasing, speed over a window."""

    def __init__(self) -> None:
        self.shown = Received()
        self.meter = RateMeter()

    def figures(self, ev: Any) -> tuple[int, float, float | None]:
        """(bytes done, speed, ETA) of ``ev`` as every view shows them."""
        self.shown.total = ev.total
        done = self.shown.see(ev.committed + ev.inflight)
        now = time.monotonic()
        self.meter.add(now, done)
        speed = self.meter.speed(now)
        left = eta(ev.total - done, speed) if ev.total is not None else None
        return done, speed, left

    def event(self, ev: Any) -> None:
        pass

    def kept(self, kept: int) -> None:
        """A rerun starts from ``kept`` bytes: shown at once, and not counted as speed
        (the first frame read 116 MiB/s under a 40M cap when they were)."""
        now = time.monotonic()
        self.meter.add(now, self.shown.see(kept))

    def resuming(self, dest: Path, kept: int, size: int) -> None:
        """A rerun: say what the earlier run left and what is still to fetch."""

    def failed(self, exc: AccelError) -> None:
        pass

    def finished(self, result: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _run_rate(r: Any) -> float | None:
    """The rate of this run: bytes fetched now over the time taken (not the file size)."""
    return r.bytes_fetched / r.elapsed_s if r.elapsed_s > 0 and r.bytes_fetched else None


class _JsonRenderer(_Renderer):
    def event(self, ev: Any) -> None:
        if ev.kind in ("done", "error"):
            return  # printed with the result or the error, below
        done, speed, left = self.figures(ev)
        line = ev.to_dict()
        line.update(
            bytes_done=done,
            bytes_total=ev.total,
            speed_bps=round(speed, 1),
            eta_s=left,
        )
        _print_json(line)

    def resuming(self, dest: Path, kept: int, size: int) -> None:
        _print_json(
            {
                "event": "resuming",
                "dest": str(dest),
                "bytes_kept": kept,
                "bytes_total": size,
                "bytes_to_fetch": size - kept,
            }
        )

    def failed(self, exc: AccelError) -> None:
        _print_json({"event": "error", **exc.to_dict()})

    def finished(self, r: Any) -> None:
        rate = _run_rate(r)
        _print_json(
            {
                "event": "done",
                "path": str(r.path),
                "size": r.size,
                "sha256": r.sha256,
                "elapsed_s": round(r.elapsed_s, 3),
                "speed_bps": round(rate, 1) if rate is not None else None,
                "bytes_fetched": r.bytes_fetched,
                "resumed_bytes": r.resumed_bytes,
                "ranged": r.ranged,
                "connections": r.connections,
                "retries": r.retries,
                "verify_tail_s": round(r.verify_tail_s, 4),
                "verified": r.verified,
                **({"sources": [s.to_dict() for s in r.sources]} if r.sources else {}),
            }
        )


def _print_json(obj: dict[str, Any]) -> None:
    from accel._cli._models import NDJSON_SCHEMA

    obj.setdefault("schema", NDJSON_SCHEMA)
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _LineRenderer(_Renderer):
    """One progress line per second on stderr (logs, CI, pipes)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = 0.0

    def event(self, ev: Any) -> None:
        now = time.monotonic()
        if ev.kind in ("started", "verified", "already_complete", "done", "error"):
            return  # the result or the error gets its own line
        if ev.kind == "source_quarantined":
            print(f"accel: warning: {ev.message}", file=sys.stderr, flush=True)
            return
        done, speed, left = self.figures(ev)
        if ev.kind == "progress" and not ev.message and now - self.last < 1.0:
            return
        self.last = now
        pct = f"{100 * done / ev.total:5.1f}%" if ev.total else "   ?%"
        line = f"accel: {pct} {format_progress(done, ev.total, speed, left)}"
        if ev.message:
            line += f" - {ev.message}"
        print(line, file=sys.stderr, flush=True)

    def resuming(self, dest: Path, kept: int, size: int) -> None:
        print(
            f"resuming {dest.name}: {format_bytes(kept)} kept, "
            f"{format_bytes(size - kept)} to fetch",
            file=sys.stderr,
            flush=True,
        )

    def finished(self, r: Any) -> None:
        rate = _run_rate(r)
        state = "verified" if r.verified else "complete, not verified"
        how = f"fetched {format_bytes(r.bytes_fetched)} in {r.elapsed_s:.2f} s"
        if rate is not None:
            how += f", {format_rate(rate)}"
        if r.resumed_bytes:
            how += f"; {format_bytes(r.resumed_bytes)} kept from before"
        if r.already_complete:
            how = "nothing fetched"
        for s in r.sources:
            state = " (quarantined)" if s.quarantined else ""
            dropped = f", {format_bytes(s.discarded)} discarded" if s.discarded else ""
            print(
                f"accel: source {s.url.split('?', 1)[0]}: {format_bytes(s.bytes)} in "
                f"{s.chunks} chunks{dropped}{state}",
                file=sys.stderr,
            )
        print(
            f"{'already complete, verified:' if r.already_complete else 'saved'} {r.path} "
            f"({format_bytes(r.size)}, sha256 {r.sha256}, {state}): {how}"
        )
        if not r.verified:
            print(
                "accel: hint: pass --sha256 HEX (or --manifest URL --file PATH) to verify "
                "the bytes; without a digest only the server's validators were checked",
                file=sys.stderr,
            )


class _BarRenderer(_LineRenderer):
    """A live bar on a terminal: bytes, MiB/s, ETA (the same figures as lines), drawn by
    :class:`accel._cli._live.LiveBlock` (columns that hold still, no torn frame on
    Ctrl-C or a resize)."""

    def __init__(self) -> None:
        super().__init__()
        from accel._cli._live import LiveBlock

        self.live = LiveBlock(sys.stderr)

    def event(self, ev: Any) -> None:
        from accel._cli._live import Row, Widths, figures_room

        done, speed, left = self.figures(ev)
        if ev.kind == "done" and ev.total is not None:
            figures = f"{format_bytes(done)} / {format_bytes(ev.total)} done"
        else:
            figures = format_progress(done, ev.total, speed, left)
        fraction = done / ev.total if ev.total else None
        size = format_bytes(ev.total) if ev.total is not None else "?"
        self.live.show([Row(ev.dest.name, fraction, figures)], Widths(0, figures_room(size)))
        if ev.message and ev.kind in ("chunk_retry", "progress", "source_quarantined"):
            self.live.print_above(ev.message)

    def resuming(self, dest: Path, kept: int, size: int) -> None:
        self.live.print_above(
            f"resuming {dest.name}: {format_bytes(kept)} kept, {format_bytes(size - kept)} to fetch"
        )

    def close(self) -> None:
        self.live.close()

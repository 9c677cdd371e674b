"""Shared plumbing of the model-management subcommands (install, path, list, ...).

Options with their environment defaults (ACCEL_HUB, ACCEL_MODELS_DIR, ACCEL_TOKEN),
``MODEL[@VERSION]`` parsing, and the one renderer of manager events: a rich progress
display with a total line on a terminal, plain lines otherwise, NDJSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from accel._cli._paths import local_path_str
from accel.errors import UsageError
from accel.units import format_bytes, format_rate

__all__ = ["Renderer", "add_common", "emit_json", "manager_from", "split_ref"]


def add_common(p: argparse.ArgumentParser, *, hub: bool = True, json_flag: bool = True) -> None:
    """``--models-dir`` (and ``--hub``, ``--token``, ``--json``) with env defaults."""
    p.add_argument(
        "--models-dir",
        default=os.environ.get("ACCEL_MODELS_DIR"),
        type=local_path_str,
        help="models dir (default: $ACCEL_MODELS_DIR)",
    )
    if hub:
        p.add_argument(
            "--hub", default=os.environ.get("ACCEL_HUB"), help="hub URL (default: $ACCEL_HUB)"
        )
        p.add_argument(
            "--token", default=os.environ.get("ACCEL_TOKEN"), help="hub token ($ACCEL_TOKEN)"
        )
        p.add_argument(
            "--hf-endpoint",
            default=os.environ.get("HF_ENDPOINT"),
            help="Hugging Face compatible endpoint for hf://REPO[@REV] ($HF_ENDPOINT; "
            "no default); its token is $HF_TOKEN",
        )
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output (NDJSON)")


def split_ref(ref: str) -> tuple[str, str | None]:
    """``MODEL[@VERSION]`` -> (model, version or None)."""
    model, sep, version = ref.rpartition("@")
    if not sep:
        return ref, None
    if not model or not version:
        raise UsageError(f"{ref!r} is not MODEL[@VERSION]", hint="e.g. whisper-small@1.0")
    return model, version


def manager_from(args: argparse.Namespace, *, need_hub: bool = False, **kw: Any) -> Any:
    """A ModelManager for the parsed options (imported here: `accel --help` stays fast)."""
    from accel.manager import ModelManager

    if not args.models_dir:
        raise UsageError(
            "no models dir given", hint="pass --models-dir DIR or set ACCEL_MODELS_DIR"
        )
    hub = getattr(args, "hub", None)
    if need_hub and not hub:
        raise UsageError("no hub given", hint="pass --hub URL or set ACCEL_HUB")
    return ModelManager(
        Path(args.models_dir),
        hub,
        token=getattr(args, "token", None),
        hf_endpoint=getattr(args, "hf_endpoint", None),
        hf_token=os.environ.get("HF_TOKEN") or None,
        **kw,
    )


def emit_json(obj: Any) -> None:
    """One NDJSON line on stdout."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


class Renderer:
    """Renders manager events: rich on a tty (a line per version, one per file being
    fetched, a total line), lines otherwise, NDJSON with --json."""

    def __init__(self, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not as_json and not quiet
        self._last_line = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._file_tasks: dict[tuple[str, str], Any] = {}
        self._total: Any = None

    def __enter__(self) -> Renderer:
        if self.tty:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TextColumn("{task.fields[speed]:>10}"),
                TextColumn("ETA {task.fields[eta]:>6}"),
            )
            self._progress.start()
            self._total = self._progress.add_task("[bold]total", total=None, speed="", eta="-")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Any) -> None:
        if self.as_json:
            emit_json(event)
            return
        if self.quiet:
            if event.type == "failed":
                print(
                    f"failed {event.model_id}@{event.version}: {event.error.message}",
                    file=sys.stderr,
                )
            return
        if self._progress is not None:
            self._rich(event)
        else:
            self._lines(event)

    def _rich(self, event: Any) -> None:
        key = _key(event)
        prog = self._progress
        if event.type == "progress":
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = prog.add_task(
                    key, total=event.bytes_total, speed="", eta="-"
                )
            prog.update(
                task,
                completed=event.bytes_done,
                total=event.bytes_total,
                speed=format_rate(event.speed_bps),
                eta=_eta(event.eta_s),
            )
            self._update_files(key, event.files)
            self._update_total(event.total)
        elif event.type == "ready":
            self._update_files(key, [])
            task = self._tasks.get(key)
            if task is not None:
                total = next(t.total for t in prog.tasks if t.id == task)
                prog.update(task, completed=total, speed="", eta="done")
            self._update_total(None)
            prog.console.print(f"ready   {key} -> {event.path}", markup=False, highlight=False)
        elif event.type == "failed":
            self._update_files(key, [])
            prog.console.print(f"failed  {key}: {event.error.message}", markup=False)
        elif event.type == "warning":
            prog.console.print(f"warning {event.message}", markup=False)

    def _update_files(self, key: str, files: Any) -> None:
        """One line per file being fetched, under its version's line; gone when done."""
        prog = self._progress
        active = {f.path: f for f in files if f.state == "downloading"}
        for (k, path), task in list(self._file_tasks.items()):
            if k == key and path not in active:
                prog.remove_task(task)
                del self._file_tasks[(k, path)]
        for path, f in active.items():
            name = path if len(path) <= 40 else "..." + path[-37:]
            fields = {"speed": format_rate(f.speed_bps), "eta": _eta(f.eta_s)}
            done = min(f.bytes_total, f.bytes_done + f.inflight)
            task = self._file_tasks.get((key, path))
            if task is None:
                self._file_tasks[(key, path)] = prog.add_task(
                    f"  {name}", total=f.bytes_total, completed=done, **fields
                )
            else:
                prog.update(task, completed=done, **fields)

    def _update_total(self, total: Any) -> None:
        # Summed over every version shown, so the line never shrinks when one finishes.
        prog = self._progress
        # (tasks by id: prog.tasks is a list, and file lines come and go)
        shown = {t.id: t for t in prog.tasks}
        done = sum(shown[t].completed for t in self._tasks.values())
        size = sum(shown[t].total or 0 for t in self._tasks.values())
        fields: dict[str, str] = {}
        if total is not None:
            fields = {"speed": format_rate(total.speed_bps), "eta": _eta(total.eta_s)}
        prog.update(self._total, completed=done, total=size, **fields)

    def _lines(self, event: Any) -> None:
        key = _key(event)
        out = sys.stderr
        if event.type == "progress":
            now = time.monotonic()
            if now - self._last_line < 2.0 and event.bytes_done < event.bytes_total:
                return
            self._last_line = now
            t = event.total
            line = (
                f"{key}: {format_bytes(event.bytes_done)}/{format_bytes(event.bytes_total)} "
                f"{format_rate(event.speed_bps)}"
            )
            if t is not None:
                eta = f"{t.eta_s:.0f}s" if t.eta_s is not None else "-"
                line += (
                    f" | total {format_bytes(t.bytes_done)}/{format_bytes(t.bytes_total)} "
                    f"{format_rate(t.speed_bps)} ETA {eta}"
                )
            print(line, file=out, flush=True)
        elif event.type == "state":
            print(f"{key}: {event.state}", file=out, flush=True)
        elif event.type == "ready":
            print(f"ready {key} -> {event.path}", file=out, flush=True)
        elif event.type == "failed":
            print(f"failed {key}: {event.error.message}", file=out, flush=True)
        elif event.type == "warning":
            print(f"warning: {event.message}", file=out, flush=True)


def _key(event: Any) -> str:
    key = f"{getattr(event, 'model_id', '')}@{getattr(event, 'version', '')}"
    # A staged update: the ready version stays usable, whatever its update shows.
    return key + " (update)" if getattr(event, "update", False) else key


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h"

"""Shared plumbing of the model-management subcommands (install, path, list, ...).

Options with their environment defaults (ACCEL_HUB, ACCEL_MODELS_DIR, ACCEL_TOKEN),
``MODEL[@VERSION]`` parsing, and the one renderer of manager events: a rich progress
display with a total line on a terminal, plain lines otherwise, NDJSON with ``--json``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from accel._cli._paths import local_path_str
from accel.errors import NotADirectoryPathError, PathNotFoundError, UsageError, from_os_error
from accel.meter import eta
from accel.units import format_bytes, format_progress, format_rate

__all__ = [
    "NDJSON_SCHEMA",
    "Renderer",
    "add_common",
    "apply_settings",
    "emit_json",
    "manager_from",
    "settings",
    "split_ref",
]


def add_common(p: argparse.ArgumentParser, *, hub: bool = True, json_flag: bool = True) -> None:
    """``--models-dir`` (and ``--hub``, ``--token``, ``--json``); unset flags are filled
    from the environment, then the config file (:mod:`accel.config`, ``accel config``)."""
    p.add_argument(
        "--models-dir",
        default=None,
        type=local_path_str,
        help="where models are installed (default: $ACCEL_MODELS_DIR, the config file's "
        "models_dir, else ~/.local/share/accel/models; /var/lib/accel/models as root)",
    )
    if hub:
        p.add_argument(
            "--hub",
            default=None,
            help="hub URL, e.g. http://127.0.0.1:8600 (default: $ACCEL_HUB, the config file's hub)",
        )
        p.add_argument(
            "--token",
            default=None,
            help="hub token (default: $ACCEL_TOKEN, the config file's token_file)",
        )
        p.add_argument(
            "--hf-endpoint",
            default=os.environ.get("HF_ENDPOINT"),
            help="Hugging Face compatible endpoint for hf://REPO[@REV] ($HF_ENDPOINT; "
            "no default); its token is $HF_TOKEN",
        )
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output (NDJSON)")


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Each shared setting in effect with its source: flag > environment > config file >
    default. The parser already filled the command's own options (and noted where each
    came from: ``args.config_sources``); :func:`accel.config.resolve` gives the rest
    (``token_file``, the default models dir)."""
    from accel.config import KEYS, resolve

    sources = getattr(args, "config_sources", {})
    flags = {
        key: getattr(args, key, None)
        for key in KEYS
        if key in sources and sources[key].source.startswith("--")
    }
    got = resolve(flags, os.environ)
    for key in KEYS:
        if key in sources and sources[key].source != "default":
            got[key] = sources[key]
    return got


def apply_settings(args: argparse.Namespace) -> None:
    """Fill the unset options of ``args`` from the environment and the config file."""
    from accel.config import read_token

    got = settings(args)
    models_dir = got["models_dir"].value
    args.models_dir = local_path_str(models_dir) if models_dir else None
    if hasattr(args, "hub") or got["hub"].source != "unset":
        args.hub = got["hub"].value
    if getattr(args, "limit_rate", None) is None and got["limit_rate"].value is not None:
        args.limit_rate = got["limit_rate"].value
    if getattr(args, "token", None) is None:
        token = os.environ.get("ACCEL_TOKEN") or None
        if token is None and got["token_file"].value:
            token = read_token(got["token_file"].value)
        args.token = token


def split_ref(ref: str) -> tuple[str, str | None]:
    """``MODEL[@VERSION]`` -> (model, version or None)."""
    model, sep, version = ref.rpartition("@")
    if not sep:
        return ref, None
    if not model or not version:
        raise UsageError(f"{ref!r} is not MODEL[@VERSION]", hint="e.g. whisper-small@1.0")
    return model, version


def manager_from(
    args: argparse.Namespace, *, need_hub: bool = False, existing: bool = False, **kw: Any
) -> Any:
    """A ModelManager for the parsed options (imported here: `accel --help` stays fast).

    ``existing``: a command that only looks (status, list, verify, locks, path, remove)
    refuses a models dir that does not exist, rather than creating it from a typo.
    """
    from accel.manager import ModelManager

    apply_settings(args)
    if "limit_rate" in kw and kw["limit_rate"] is None:
        kw["limit_rate"] = getattr(args, "limit_rate", None)
    if not args.models_dir:
        raise UsageError(
            "no models dir given", hint="pass --models-dir DIR or set ACCEL_MODELS_DIR"
        )
    if existing:
        _check_models_dir(Path(args.models_dir))
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


def _check_models_dir(path: Path) -> None:
    """A models dir to read must exist: a typo is an error, not a new empty directory."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PathNotFoundError(
            f"no models dir at {path}",
            hint="check --models-dir (or ACCEL_MODELS_DIR); `accel install` creates it",
            path=str(path),
            action="open",
            errno=errno.ENOENT,
            errno_name="ENOENT",
        ) from None
    except OSError as exc:
        raise from_os_error(exc, action="open the models dir", path=path) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryPathError(
            f"the models dir {path} is a file, not a directory",
            hint="check --models-dir (or ACCEL_MODELS_DIR)",
            path=str(path),
            action="open",
            errno=errno.ENOTDIR,
            errno_name="ENOTDIR",
        )


#: the version of the NDJSON lines (`accel schema events` prints their JSON Schema)
NDJSON_SCHEMA = 1


def emit_json(obj: Any) -> None:
    """One NDJSON line on stdout, in the one schema: every line names its ``event`` and
    carries ``schema``; a manager event keeps ``type`` (the same name) for older readers."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    if isinstance(obj, dict):
        if "event" not in obj and "type" in obj:
            obj = {"event": obj["type"], **obj}
        obj.setdefault("schema", NDJSON_SCHEMA)
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


class Renderer:
    """Renders manager events: rich on a tty (a line per version, one per file being
    fetched, a "N files done" line, a total line), lines otherwise, NDJSON with --json.

    Every text view prints the same figures with :func:`accel.units.format_progress`:
    the events carry bytes received (in flight included), a windowed speed and its ETA
    (:mod:`accel.meter`), so the total line is the sum of the lines above it.
    """

    def __init__(self, *, as_json: bool, quiet: bool, failures: bool = True) -> None:
        """``failures``: print a ``failed`` line per failed install (``accel update``,
        whose failures are not raised); ``accel install`` prints the error line itself."""
        self.as_json = as_json
        self.quiet = quiet
        self.failures = failures
        self.tty = sys.stderr.isatty() and not as_json and not quiet
        self._last_line = 0.0
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._file_tasks: dict[tuple[str, str], Any] = {}
        self._done_tasks: dict[str, Any] = {}
        self._total: Any = None
        #: per version: (bytes done, bytes total, speed) as last shown
        self._shown: dict[str, tuple[int, int, float]] = {}
        #: per version and file: the last figures (events carry only changed files)
        self._files: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> Renderer:
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn

            # Redrawn after each event, never by rich's timer thread: a frame drawn
            # between the version's update and the total's would not add up.
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[figures]}"),
                auto_refresh=False,
            )
            self._progress.start()
            self._total = self._progress.add_task("[bold]total", total=None, figures="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Any) -> None:
        if self.as_json:
            if not self.quiet or event.type == "failed":
                emit_json(event)  # --json --quiet: results and errors only
            return
        if event.type == "failed" and self.failures:
            line = f"failed {_key(event)}: [{event.error.code}] {event.error.message}"
            if self._progress is not None:
                self._progress.console.print(line, markup=False, highlight=False)
            else:
                print(line, file=sys.stderr, flush=True)
            return
        if self.quiet:
            return
        if self._progress is not None:
            self._rich(event)
            self._progress.refresh()
        else:
            self._lines(event)

    def _see(self, key: str, event: Any) -> tuple[int, int, float, list[Any]]:
        """Fold a progress event into what is shown: never decreasing, every file."""
        files = self._files.setdefault(key, {})
        for f in event.files:
            files[f.path] = f
        old = self._shown.get(key, (0, 0, 0.0))
        done = min(event.bytes_total, max(old[0], event.bytes_done))
        self._shown[key] = (done, event.bytes_total, event.speed_bps)
        return done, event.bytes_total, event.speed_bps, list(files.values())

    def _rich(self, event: Any) -> None:
        key = _key(event)
        prog = self._progress
        if event.type == "progress":
            done, size, speed, files = self._see(key, event)
            task = self._tasks.get(key)
            figures = format_progress(done, size, speed, eta(size - done, speed))
            if task is None:
                task = self._tasks[key] = prog.add_task(key, total=size, figures="")
            prog.update(task, completed=done, total=size, figures=figures)
            self._update_files(key, files)
            self._update_total(event.total)
        elif event.type == "ready":
            self._update_files(key, [])
            task = self._tasks.get(key)
            if task is not None:
                size = self._shown.get(key, (0, event.bytes_total, 0.0))[1] or event.bytes_total
                self._shown[key] = (size, size, 0.0)
                figures = f"{format_bytes(size)} / {format_bytes(size)} done"
                prog.update(task, completed=size, total=size, figures=figures)
            self._update_total(None)
            prog.console.print(ready_line(event), markup=False, highlight=False)
        elif event.type == "resuming":
            prog.console.print(resume_line(event), markup=False, highlight=False)
        elif event.type == "failed":
            self._update_files(key, [])
        elif event.type == "warning":
            prog.console.print(f"warning {event.message}", markup=False)

    def _update_files(self, key: str, files: list[Any]) -> None:
        """One line per file being fetched, under its version's line, and one line for
        the files already done, so the lines of a version add up to it."""
        prog = self._progress
        active = {f.path: f for f in files if f.state == "downloading" and f.bytes_done}
        for (k, path), task in list(self._file_tasks.items()):
            if k == key and path not in active:
                prog.remove_task(task)
                del self._file_tasks[(k, path)]
        for path, f in active.items():
            name = path if len(path) <= 40 else "..." + path[-37:]
            done = min(f.bytes_total, f.bytes_done)
            figures = format_progress(done, f.bytes_total, f.speed_bps, f.eta_s)
            task = self._file_tasks.get((key, path))
            if task is None:
                self._file_tasks[(key, path)] = prog.add_task(
                    f"  {name}", total=f.bytes_total, completed=done, figures=figures
                )
            else:
                prog.update(task, completed=done, figures=figures)
        # the rest: done files and those not started (their bytes_done: reused or kept)
        rest = [f for f in files if f.path not in active]
        n_done = sum(1 for f in rest if f.state == "done")
        held = sum(min(f.bytes_total, f.bytes_done) for f in rest)
        task = self._done_tasks.get(key)
        if not files or held == 0:
            if task is not None:
                prog.remove_task(task)
                del self._done_tasks[key]
            return
        size = sum(f.bytes_total for f in rest)
        label = f"  {n_done} file{'s' if n_done != 1 else ''} done"
        if len(rest) > n_done:
            label += f", {len(rest) - n_done} waiting"
        figures = f"{format_bytes(held)} / {format_bytes(size)}"
        if task is None:
            self._done_tasks[key] = prog.add_task(
                label, total=size, completed=held, figures=figures
            )
        else:
            prog.update(task, description=label, total=size, completed=held, figures=figures)

    def _update_total(self, total: Any) -> None:
        # Summed over every version shown, so the line never shrinks when one finishes.
        prog = self._progress
        done = sum(d for d, _, _ in self._shown.values())
        size = sum(t for _, t, _ in self._shown.values())
        speed = total.speed_bps if total is not None else 0.0
        figures = format_progress(done, size, speed, eta(size - done, speed))
        prog.update(self._total, completed=done, total=size, figures=figures)

    def _lines(self, event: Any) -> None:
        key = _key(event)
        out = sys.stderr
        if event.type == "progress":
            done, size, speed, _files = self._see(key, event)
            now = time.monotonic()
            if now - self._last_line < 1.0 and done < size:
                return
            self._last_line = now
            line = f"{key}: {format_progress(done, size, speed, eta(size - done, speed))}"
            if event.total is not None:
                all_done = sum(d for d, _, _ in self._shown.values())
                all_size = sum(t for _, t, _ in self._shown.values())
                t_speed = event.total.speed_bps
                line += " | total " + format_progress(
                    all_done, all_size, t_speed, eta(all_size - all_done, t_speed)
                )
            print(line, file=out, flush=True)
        elif event.type == "state":
            print(f"{key}: {event.state}", file=out, flush=True)
        elif event.type == "ready":
            print(ready_line(event), file=out, flush=True)
        elif event.type == "resuming":
            print(resume_line(event), file=out, flush=True)
        elif event.type == "warning":
            print(f"warning: {event.message}", file=out, flush=True)


def resume_line(event: Any) -> str:
    """``resuming m@1: 28.1 MiB kept, 30.2 MiB to fetch`` (what a rerun starts from)."""
    line = f"resuming {_key(event)}: {format_bytes(event.bytes_kept)} kept"
    if event.bytes_reused:
        line += f", {format_bytes(event.bytes_reused)} linked from installed versions"
    return line + f", {format_bytes(event.bytes_to_fetch)} to fetch"


def ready_line(event: Any) -> str:
    """``ready m@1 -> PATH (fetched 30.2 MiB in 6.1 s, 4.9 MiB/s; 28.1 MiB kept)``: the
    rate is over the bytes fetched by this run, not the version's size."""
    how = f"fetched {format_bytes(event.bytes_fetched)} in {event.elapsed_s:.2f} s"
    if event.bytes_fetched and event.elapsed_s > 0:
        how += f", {format_rate(event.bytes_fetched / event.elapsed_s)}"
    held = [
        f"{format_bytes(n)} {word}"
        for n, word in ((event.bytes_kept, "kept"), (event.bytes_reused, "linked"))
        if n
    ]
    if held:
        how += "; " + ", ".join(held)
    return f"ready {_key(event)} -> {event.path} ({how})"


def _key(event: Any) -> str:
    key = f"{getattr(event, 'model_id', '')}@{getattr(event, 'version', '')}"
    # A staged update: the ready version stays usable, whatever its update shows.
    return key + " (update)" if getattr(event, "update", False) else key

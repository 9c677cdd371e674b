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
    "NO_HUB_HINT",
    "Renderer",
    "add_common",
    "apply_settings",
    "emit_json",
    "manager_from",
    "settings",
    "split_ref",
    "token_from_settings",
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
    got = settings(args)
    models_dir = got["models_dir"].value
    args.models_dir = local_path_str(models_dir) if models_dir else None
    if hasattr(args, "hub") or got["hub"].source != "unset":
        args.hub = got["hub"].value
    if getattr(args, "limit_rate", None) is None and got["limit_rate"].value is not None:
        args.limit_rate = got["limit_rate"].value
    if getattr(args, "token", None) is None:
        args.token = token_from_settings(got)


def token_from_settings(got: dict[str, Any]) -> str | None:
    """The hub token when no --token was given: $ACCEL_TOKEN, else the token file."""
    from accel.config import read_token

    token = os.environ.get("ACCEL_TOKEN") or None
    if token is None and got["token_file"].value:
        token = read_token(got["token_file"].value)
    return token


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
        raise UsageError("no hub given", hint=NO_HUB_HINT)
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


#: what to do when no hub is set: every place one can be given
NO_HUB_HINT = (
    'pass --hub URL, set ACCEL_HUB, or put hub = "http://HOST:8600" in '
    "~/.config/accel/config.toml (see `accel config --help`)"
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
    """Renders manager events: a live block on a terminal (a total row, a row per
    version, under it one per file being fetched and one "N files done" row), lines
    otherwise, NDJSON with --json.

    Every text view prints the same figures with :func:`accel.units.format_progress`:
    the events carry bytes received (in flight included), a windowed speed and its ETA
    (:mod:`accel.meter`), so the total row is the sum of the rows under it. Its size is
    every version asked for from the first frame (the manager's ``total`` counts the
    versions not shown yet), and it keeps its speed until the last version is done.
    """

    def __init__(
        self, *, as_json: bool, quiet: bool, failures: bool = True, expect: int = 0
    ) -> None:
        """``failures``: print a ``failed`` line per failed install (``accel update``,
        whose failures are not raised); ``accel install`` prints the error line itself.
        ``expect``: how many versions were asked for: the total row waits until each
        has a size (or has failed), so it never starts as the total of some of them."""
        self.expect = expect
        self.as_json = as_json
        self.quiet = quiet
        self.failures = failures
        self.tty = sys.stderr.isatty() and not as_json and not quiet
        self._last_line = 0.0
        self._last_text = ""
        self._live: Any = None
        #: per version, in the order first seen: (bytes done, bytes total, speed) as shown
        self._shown: dict[str, tuple[int, int, float]] = {}
        #: versions whose row reads "done" (or "failed")
        self._ended: dict[str, str] = {}
        #: per version and file: the last figures (events carry only changed files)
        self._files: dict[str, dict[str, Any]] = {}
        #: the manager's figures for what it still runs: (bytes total, speed)
        self._running = (0, 0.0)
        self._first_seen: float | None = None

    def __enter__(self) -> Renderer:
        if self.tty:
            from accel._cli._live import LiveBlock

            self._live = LiveBlock(sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.close()

    def __call__(self, event: Any) -> None:
        if self.as_json:
            if not self.quiet or event.type == "failed":
                emit_json(event)  # --json --quiet: results and errors only
            return
        if event.type == "failed" and self.failures:
            self._say(f"failed {_key(event)}: [{event.error.code}] {event.error.message}")
        if event.type == "failed":
            self._end(_key(event), "failed")
        if self.quiet:
            return
        if self._live is not None:
            self._terminal(event)
        else:
            self._lines(event)

    def _say(self, line: str) -> None:
        if self._live is not None:
            self._live.print_above(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def _see(self, key: str, event: Any) -> tuple[int, int, float, list[Any]]:
        """Fold a progress event into what is shown: never decreasing, every file."""
        files = self._files.setdefault(key, {})
        for f in event.files:
            files[f.path] = f
        old = self._shown.get(key, (0, 0, 0.0))
        done = min(event.bytes_total, max(old[0], event.bytes_done))
        self._shown[key] = (done, event.bytes_total, event.speed_bps)
        if event.total is not None:
            self._running = (event.total.bytes_total, event.total.speed_bps)
        return done, event.bytes_total, event.speed_bps, list(files.values())

    def dropped(self) -> None:
        """One of the versions asked for failed before it had a row (an unknown model)."""
        self.expect = max(0, self.expect - 1)

    def _end(self, key: str, how: str) -> None:
        """A version's row ends: it leaves what the manager still runs."""
        if key in self._ended:
            return
        self._ended[key] = how
        size = self._shown.get(key, (0, 0, 0.0))[1]
        self._running = (max(0, self._running[0] - size), self._running[1])

    def _total(self) -> tuple[int, int, float, bool]:
        """(done, size, speed, all ended) of the total row: the sum of the version rows,
        plus the versions the manager runs that have no row yet."""
        done = sum(d for d, _, _ in self._shown.values())
        size = sum(t for _, t, _ in self._shown.values())
        running = sum(t for k, (_, t, _) in self._shown.items() if k not in self._ended)
        size += max(0, self._running[0] - running)
        ended = bool(self._shown) and all(k in self._ended for k in self._shown)
        return done, size, (0.0 if ended else self._running[1]), ended

    def _terminal(self, event: Any) -> None:
        key = _key(event)
        if event.type == "progress":
            self._see(key, event)
        elif event.type == "ready":
            size = self._shown.get(key, (0, event.bytes_total, 0.0))[1] or event.bytes_total
            self._shown[key] = (size, size, 0.0)
            self._end(key, "done")
            self._live.print_above(ready_line(event))
        elif event.type == "resuming":
            self._live.print_above(resume_line(event))
            return
        elif event.type == "warning":
            self._live.print_above(f"warning: {event.message}")
            return
        elif event.type != "failed":
            return
        if self._first_seen is None:
            self._first_seen = time.monotonic()
        if not self._all_known() and time.monotonic() - self._first_seen < _HOLD_S:
            return  # the first frame waits for every version's files: columns set once
        self._live.show(self._rows(), self._reserve())

    def _all_known(self) -> bool:
        """Every version asked for has a row (its size and files) or has ended."""
        return len(self._shown.keys() | self._ended.keys()) >= self.expect

    def _reserve(self) -> Any:
        """The widest label and figures any row of the versions shown will need."""
        from accel._cli._live import Widths, figures_room

        label, figures = len("total"), 0
        for key, (_, size, _) in self._shown.items():
            label = max(label, len(key))
            files = self._files.get(key, {})
            if files:
                n = len(files)
                label = max(label, len(_done_label(n, n)), len(_done_label(n, 0)),
                            *(len(_file_label(p)) for p in files))  # fmt: skip
            figures = max(figures, figures_room(format_bytes(size)))
        return Widths(label, figures)

    def _rows(self) -> list[Any]:
        from accel._cli._live import Row

        done, size, speed, ended = self._total()
        rows = []
        if self._shown and self._all_known():
            rows.append(Row("total", done / size if size else None,
                            _figures(done, size, speed, "done" if ended else None), bold=True))  # fmt: skip
        for key, (v_done, v_size, v_speed) in self._shown.items():
            end = self._ended.get(key)
            rows.append(Row(key, v_done / v_size if v_size else None,
                            _figures(v_done, v_size, v_speed, end)))  # fmt: skip
            if end is None:
                rows.extend(self._file_rows(list(self._files.get(key, {}).values())))
        return rows

    def _file_rows(self, files: list[Any]) -> list[Any]:
        """One row per file being fetched, and one for the files already done, so the
        rows of a version add up to it."""
        from accel._cli._live import Row

        rows = []
        active = [f for f in files if f.state == "downloading" and f.bytes_done]
        for f in active:
            done = min(f.bytes_total, f.bytes_done)
            # no ETA per file (the version's row has it): 80 columns keep a bar
            rate = format_rate(f.speed_bps)
            figures = f"{format_bytes(done)} / {format_bytes(f.bytes_total)} {rate}"
            rows.append(
                Row(_file_label(f.path), done / f.bytes_total if f.bytes_total else 1.0, figures)
            )
        # the rest: done files and those not started (their bytes_done: reused or kept)
        rest = [f for f in files if f not in active]
        n_done = sum(1 for f in rest if f.state == "done")
        held = sum(min(f.bytes_total, f.bytes_done) for f in rest)
        if not rest or held == 0:
            return rows
        size = sum(f.bytes_total for f in rest)
        label = _done_label(n_done, len(rest) - n_done)
        rows.append(Row(label, held / size if size else 1.0,
                        f"{format_bytes(held)} / {format_bytes(size)}"))  # fmt: skip
        return rows

    def _lines(self, event: Any) -> None:
        key = _key(event)
        out = sys.stderr
        if event.type == "progress":
            done, size, speed, _files = self._see(key, event)
            now = time.monotonic()
            if now - self._last_line < 1.0 and done < size:
                return
            line = f"{key}: {format_progress(done, size, speed, eta(size - done, speed))}"
            if event.total is not None:
                all_done, all_size, t_speed, _ = self._total()
                line += " | total " + format_progress(
                    all_done, all_size, t_speed, eta(all_size - all_done, t_speed)
                )
            if line == self._last_text:
                return  # a line that says nothing new (the version's last, then verifying)
            self._last_line, self._last_text = now, line
            print(line, file=out, flush=True)
        elif event.type == "state":
            print(f"{key}: {event.state}", file=out, flush=True)
        elif event.type == "ready":
            size = self._shown.get(key, (0, event.bytes_total, 0.0))[1] or event.bytes_total
            self._shown[key] = (size, size, 0.0)
            self._end(key, "done")
            print(ready_line(event), file=out, flush=True)
        elif event.type == "resuming":
            print(resume_line(event), file=out, flush=True)
        elif event.type == "warning":
            print(f"warning: {event.message}", file=out, flush=True)


#: how long the first frame may wait for the other versions' first event
_HOLD_S = 1.5


def _done_label(done: int, waiting: int) -> str:
    """``  118 files done``, or ``  62 done, 58 waiting`` (short: 80 columns keep a bar)."""
    if waiting:
        return f"  {done} done, {waiting} waiting"
    return f"  {done} file{'s' if done != 1 else ''} done"


def _file_label(path: str) -> str:
    """A file's row label: its path, the start cut (the name at the end says most)."""
    return "  " + (path if len(path) <= 30 else "…" + path[-29:])


def _figures(done: int, size: int, speed: float, end: str | None) -> str:
    """``X / Y speed ETA t``, or ``X / Y done`` (``failed``) once the row has ended."""
    if end is not None:
        return f"{format_bytes(done)} / {format_bytes(size)} {end}"
    return format_progress(done, size, speed, eta(size - done, speed))


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

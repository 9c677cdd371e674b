"""The CLI's failures as a user meets them: real processes on real filesystems.

Each command that writes (get, install, status, logs export, publish) is run against each
bad destination, each produced the real way:

- ``eacces``: another user's directory (``nobody``'s, mode 0700) the CLI may not enter
  or write; as root the CLI runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
  (``setpriv``), the capabilities that let root ignore mode bits, so the kernel checks
  them as for any user (and the checkout stays readable wherever it was cloned);
- ``eperm``: a directory made immutable with ``chattr +i`` (EPERM even for root);
- ``erofs``: a tmpfs mounted read-only;
- ``enotdir``: a path below a regular file (``-o FILE/sub``).

and each command that takes a local root, models dir or destination against ``scheme://``
values. Every case: exit 1, stderr exactly one ``accel: error [code]: ...`` line, never a
traceback, and nothing created (no temp file, no ``s3:`` folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.hub import RunningHub, publish_model, running_hub

ACCEL = [sys.executable, "-m", "accel"]
_NO_DAC = "-dac_override,-dac_read_search"
WITHOUT_DAC_OVERRIDE = ["setpriv", f"--inh-caps={_NO_DAC}", f"--bounding-set={_NO_DAC}", "--"]
MODEL, VERSION, FILE = "tiny", "1.0", "a.bin"


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """One real hub for the module, serving ``tiny@1.0`` (one 100 kB file)."""
    root = tmp_path_factory.mktemp("store")
    publish_model(root, MODEL, VERSION, {FILE: 100_000})
    with running_hub(root) as h:
        yield h


@dataclass
class Place:
    """A destination the CLI cannot use, and everything needed to run the CLI against it."""

    kind: str
    bad: Path  # the directory (or file) that fails; new paths go below it
    code: str  # the error code every command must report
    area: Path  # the test's whole tree: must look the same after the run
    models: Path  # a models dir the runner can use (for `logs export`)
    src: Path  # a file the runner can read (for `publish`)
    prefix: list[str] = field(default_factory=list)  # argv prefix: how the CLI is run

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        for name in ("ACCEL_MODELS_DIR", "ACCEL_HUB", "ACCEL_DEBUG"):
            env.pop(name, None)
        return subprocess.run(
            [*self.prefix, *ACCEL, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=self.area,
        )


def _tree(area: Path) -> set[str]:
    """Every path under ``area``, but the state dir a ModelManager keeps in a models dir."""
    names = {str(p.relative_to(area)) for p in area.rglob("*")}
    return {n for n in names if not n.startswith("models/.accel")}


@pytest.fixture
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    kind: str = request.param
    undo: list[Callable[[], None]] = []
    area = tmp_path
    models = area / "models"
    models.mkdir()
    src = area / "src.bin"
    src.write_bytes(b"x" * 1000)
    prefix: list[str] = []
    bad = area / kind
    if kind == "eacces":
        bad.mkdir()
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("setpriv (util-linux) is needed to drop root's DAC override")
            os.chown(bad, 65534, 65534)  # nobody's; we are "other" once the override is gone
            bad.chmod(0o700)
            prefix = WITHOUT_DAC_OVERRIDE
        else:
            bad.chmod(0o000)
            undo.append(lambda: bad.chmod(0o700))
        code = "permission_denied"
    elif kind == "eperm":
        bad.mkdir()
        r = subprocess.run(["chattr", "+i", str(bad)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {r.stderr.strip()}")
        undo.append(lambda: subprocess.run(["chattr", "-i", str(bad)], check=False))
        code = "permission_denied"
    elif kind == "erofs":
        bad.mkdir()
        # Roomy enough for the engine's free-space check (a 16 MiB margin): the write fails.
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=256m", "tmpfs", str(bad)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs (needs root): {r.stderr.strip()}")
        undo.append(lambda: subprocess.run(["umount", "-l", str(bad)], check=False))
        code = "read_only"
    else:
        bad.write_bytes(b"a regular file, not a directory\n")
        bad = bad / "sub"
        code = "not_a_directory"
    try:
        yield Place(kind, bad, code, area, models, src, prefix)
    finally:
        for step in reversed(undo):
            step()


def _get(p: Place, hub: RunningHub) -> list[str]:
    return ["get", hub.file_url(MODEL, VERSION, FILE), "-o", str(p.bad / "out.bin")]


def _install(p: Place, hub: RunningHub) -> list[str]:
    return ["install", f"{MODEL}@{VERSION}", "--hub", hub.url, "--models-dir", str(p.bad)]


def _status(p: Place, hub: RunningHub) -> list[str]:
    return ["status", "--models-dir", str(p.bad)]


def _logs_export(p: Place, hub: RunningHub) -> list[str]:
    return ["logs", "export", str(p.bad / "report.tar.gz"), "--models-dir", str(p.models)]


def _publish(p: Place, hub: RunningHub) -> list[str]:
    args = ["--model", MODEL, "--version", VERSION]
    return ["publish", str(p.src), "--root", str(p.bad / "store"), *args]


COMMANDS = {
    "get": _get,
    "install": _install,
    "status": _status,
    "logs-export": _logs_export,
    "publish": _publish,
}
# A directory that can be read but not written is a fine models dir for `status` (it only
# reads); `status` is held to an error where it cannot read or where no directory can be.
CASES = [
    pytest.param(
        kind, name, id=f"{name}-{kind}", marks=[pytest.mark.root] if kind != "enotdir" else []
    )
    for kind in ("eacces", "eperm", "erofs", "enotdir")
    for name in COMMANDS
    if not (name == "status" and kind in ("eperm", "erofs"))
]


def assert_one_error_line(r: subprocess.CompletedProcess[str], code: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"accel: error [{code}]: "), lines[0]


@pytest.mark.parametrize(("place", "command"), CASES, indirect=["place"])
def test_a_bad_destination_is_one_error_line_and_leaves_nothing(
    place: Place, command: str, tiny_hub: RunningHub
) -> None:
    args = COMMANDS[command](place, tiny_hub)
    before = _tree(place.area)
    r = place.run(args)
    assert_one_error_line(r, place.code)
    assert _tree(place.area) == before


def test_logs_export_onto_a_directory_is_one_line_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "exists").mkdir()
    p = Place("isdir", tmp_path / "exists", "is_a_directory", tmp_path, tmp_path, tmp_path)
    before = _tree(tmp_path)
    r = p.run(
        ["logs", "export", str(tmp_path / "exists"), "--models-dir", str(tmp_path / "models")]
    )
    assert_one_error_line(r, "is_a_directory")
    assert "exists/accel-report.tar.gz" in r.stderr  # the hint names a file to give instead
    assert _tree(tmp_path) == before


# FILE_URL stands for a file:// URL into the test's own temp dir (never a shared path
# such as /tmp/x, which another process on the machine may create).
FILE_URL = "file://TMP/x"
SCHEMES = ["s3://bucket/x", "gs://bucket/x", FILE_URL]
SCHEME_COMMANDS: dict[str, Callable[[str, Path], tuple[list[str], dict[str, str]]]] = {
    "publish-root": lambda u, d: (
        ["publish", str(d / "src.bin"), "--root", u, "--model", "m", "--version", "1"],
        {},
    ),
    "publish-src": lambda u, d: (
        ["publish", u, "--root", str(d / "store"), "--model", "m", "--version", "1"],
        {},
    ),
    "get-output": lambda u, d: (["get", "http://127.0.0.1:9/x.bin", "-o", u], {}),
    "install-models-dir": lambda u, d: (
        ["install", "m", "--hub", "http://127.0.0.1:9", "--models-dir", u],
        {},
    ),
    "status-models-dir": lambda u, d: (["status", "--models-dir", u], {}),
    "status-env": lambda u, d: (["status"], {"ACCEL_MODELS_DIR": u}),
    "logs-export": lambda u, d: (["logs", "export", u, "--models-dir", str(d / "models")], {}),
    "demo-store": lambda u, d: (["demo-store", u, "--size-scale", "0.001"], {}),
}


# A store may be an S3 bucket (tests/hub/test_s3_store.py): there s3:// is supported.
S3_STORES = {"publish-root"}
SCHEME_CASES = [
    pytest.param(command, url, id=f"{command}-{url.split(':', 1)[0]}")
    for command in sorted(SCHEME_COMMANDS)
    for url in SCHEMES
    if not (command in S3_STORES and url.startswith("s3://"))
]


@pytest.mark.parametrize(("command", "url"), SCHEME_CASES)
def test_a_scheme_root_is_unsupported_and_creates_nothing(
    command: str, url: str, tmp_path: Path
) -> None:
    (tmp_path / "src.bin").write_bytes(b"x" * 1000)
    target = tmp_path / "target"
    target.mkdir()
    url = url.replace("TMP", str(target))
    args, extra_env = SCHEME_COMMANDS[command](url, tmp_path)
    before = _tree(tmp_path)
    env = dict(os.environ, **extra_env)
    if "ACCEL_MODELS_DIR" not in extra_env:
        env.pop("ACCEL_MODELS_DIR", None)
    r = subprocess.run(
        [*ACCEL, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
    )
    assert_one_error_line(r, "unsupported_scheme")
    assert url in r.stderr
    assert _tree(tmp_path) == before  # nothing made, at the URL's path (target/x) either

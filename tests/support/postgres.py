"""A real PostgreSQL for tests, on loopback: ``initdb`` into a temp dir, ``postgres -D``.

The Debian ``postgresql`` package (``apt-get install postgresql``; ``scripts/setup`` does
it as root) ships ``initdb`` and ``postgres`` under ``/usr/lib/postgresql/N/bin``. The
server runs as the ``postgres`` user when we are root (PostgreSQL refuses to run as
root), on a free port of 127.0.0.1 with its socket in the temp dir, trust auth for
loopback, and is stopped with SIGINT (PostgreSQL's "fast shutdown"). Without the
binaries the tests that need it skip, except under ``CI=true``, where they fail and say
what to install: a CI run must not go green by skipping the PostgreSQL tests.

Fixtures: ``postgres`` (one server per session) and ``pg_url`` (a fresh, empty database
on it per test: ``postgresql://postgres@127.0.0.1:PORT/NAME``). By hand:
``python -m tests.support.postgres`` prints a database URL and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Postgres", "find_pg_bin", "pg_url", "postgres", "require_postgres", "running_postgres"]

INSTALL_HINT = "install PostgreSQL: apt-get install postgresql (./scripts/setup does it as root)"


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (PATH first, then Debian's)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    """The binaries' directory, or skip (fail under CI=true) with what to install."""
    bindir = find_pg_bin()
    if bindir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is missing on this CI machine: {INSTALL_HINT}")
        pytest.skip(f"no PostgreSQL here: {INSTALL_HINT}")
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Postgres:
    """A running PostgreSQL: ``url`` of its ``postgres`` database; ``start``/``stop`` it."""

    bindir: Path
    data: Path
    sockdir: Path
    port: int
    fsync: bool
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(self.url_of(dbname), autocommit=True, connect_timeout=5)

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = f"t_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def start(self) -> None:
        """Start the server (again, on the same port and data dir) and wait until it answers."""
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.sockdir),
               "-p", str(self.port), "-h", "127.0.0.1", "-c", "max_connections=200"]  # fmt: skip
        if not self.fsync:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.data.parent / "postgres.log", "ab")  # noqa: SIM115 - the server's own
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **_as_postgres()
        )
        log.close()
        deadline = time.monotonic() + 30
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: {self.log()}")
            try:
                with self.connect():
                    return
            except Exception as exc:
                last = exc
                time.sleep(0.05)
        raise RuntimeError(f"postgres did not answer on port {self.port}: {last!r}")

    def stop(self) -> None:
        """SIGINT (fast shutdown: clients are disconnected, data is kept) and wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log(self) -> str:
        path = self.data.parent / "postgres.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[Postgres]:
    """``initdb`` a temp cluster and run it until the block ends (``fsync`` off for tests)."""
    bindir = require_postgres()
    base = Path(tempfile.mkdtemp(prefix="accel-pg-"))
    try:
        data, sockdir = base / "data", base / "sock"
        sockdir.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for path in (base, sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions"]  # fmt: skip
        subprocess.run(
            initdb,
            check=True,
            capture_output=True,
            cwd=base,
            **_as_postgres(),
        )
        last: BaseException | None = None
        for _ in range(5):  # a free port can be taken between the probe and the bind
            server = Postgres(bindir, data, sockdir, _free_port(), fsync)
            try:
                server.start()
            except RuntimeError as exc:
                last = exc
                server.stop()
                continue
            try:
                yield server
            finally:
                server.stop()
            return
        raise RuntimeError(f"postgres did not start: {last}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole session."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.create_database()


def main() -> None:
    """``python -m tests.support.postgres``: a throwaway PostgreSQL for trying hubs by hand
    (prints a fresh database's URL, runs until Ctrl-C or SIGTERM, then removes it all)."""
    import sys

    stop = [False]

    def ask_stop(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)
    with running_postgres() as server:
        print(server.create_database(), flush=True)
        print(f"postgres running on port {server.port}; Ctrl-C stops it", file=sys.stderr)
        while not stop[0] and server.proc is not None and server.proc.poll() is None:
            time.sleep(0.2)


if __name__ == "__main__":
    main()

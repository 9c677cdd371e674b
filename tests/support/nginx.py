"""A real nginx on 127.0.0.1 (ephemeral port) serving a directory, for tests and benches.

Options: a per-connection ``limit_rate`` (as CDNs cap each connection), ranges disabled
(``max_ranges 0``: every Range request gets the whole file with 200), no ETag at all
(``etag off``, as some origins are: Last-Modified is then the only validator), and an access log
with ``$bytes_sent`` so a test can count what the origin really sent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Nginx", "nginx", "start_nginx"]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass
class Nginx:
    """A running nginx: ``url`` is ``http://127.0.0.1:PORT``; ``root`` the served dir."""

    url: str
    port: int
    root: Path
    prefix: Path
    proc: subprocess.Popen[bytes]

    def file_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def bytes_sent(self) -> int:
        """Total ``$bytes_sent`` over the access log (headers included)."""
        if not self.access_log.exists():
            return 0
        total = 0
        for line in self.access_log.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1].isdigit():
                total += int(parts[-1])
        return total

    def statuses(self) -> list[int]:
        if not self.access_log.exists():
            return []
        return [int(line.split()[0]) for line in self.access_log.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(
    port: int, root: Path, prefix: Path, limit_rate: str | None, ranges: bool, etag: bool = True
) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    # A small sendfile_max_chunk makes the cap real for short Range responses too:
    # with the default (2m) nginx pushes the first 2 MiB of every response at full speed
    # and only then starts pacing, so a client with small chunks would never see the cap.
    limits = f"limit_rate {limit_rate}; sendfile_max_chunk 64k;" if limit_rate else ""
    no_ranges = "" if ranges else "max_ranges 0;"
    no_etag = "" if etag else "etag off;"
    return f"""
{user}
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    log_format bytes '$status $request_length $bytes_sent';
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        access_log {prefix}/access.log bytes;
        {limits}
        {no_ranges}
        {no_etag}
        location / {{ }}
    }}
}}
"""


@contextlib.contextmanager
def start_nginx(
    root: Path,
    *,
    limit_rate: str | None = None,
    ranges: bool = True,
    workers: int = 1,
    etag: bool = True,
) -> Iterator[Nginx]:
    """Run nginx serving ``root`` until the block ends."""
    prefix = Path(tempfile.mkdtemp(prefix="accel-nginx-"))
    last_error = ""
    try:
        for _ in range(5):
            port = _free_port()
            conf = prefix / "nginx.conf"
            text = _config(port, root.resolve(), prefix, limit_rate, ranges, etag)
            if workers != 1:
                text = text.replace("worker_processes 1;", f"worker_processes {workers};")
            conf.write_text(text)
            proc = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            server = Nginx(f"http://127.0.0.1:{port}", port, root, prefix, proc)
            if _wait_listening(port, proc):
                try:
                    yield server
                finally:
                    server.stop()
                    if proc.stderr is not None:
                        proc.stderr.close()
                return
            server.stop()
            if proc.stderr is not None:
                last_error = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
        raise RuntimeError(f"nginx did not start: {last_error}")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


@pytest.fixture
def nginx() -> Iterator[Callable[..., Nginx]]:
    """A factory: ``nginx(root, limit_rate="25m", ranges=False)`` -> a running Nginx."""
    with contextlib.ExitStack() as stack:

        def start(root: Path, **options: Any) -> Nginx:
            return stack.enter_context(start_nginx(root, **options))

        yield start

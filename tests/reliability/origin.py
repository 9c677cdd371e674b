"""A real nginx origin on 127.0.0.1 serving a directory, for the reliability tests.

nginx gives Range, ETag, Last-Modified, If-Range and keep-alive exactly as a production
origin would, so the fault proxy's tests check its behaviour against the real thing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_CONF = """
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    keepalive_requests 100000;
    types {{ application/octet-stream bin; application/json json; }}
    default_type application/octet-stream;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    """An ephemeral port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NginxOrigin:
    """``with NginxOrigin(root) as o: o.url`` — nginx serving ``root``; stopped on exit."""

    def __init__(
        self, root: Path, *, host: str = "127.0.0.1", launcher: Sequence[str] = ()
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.launcher = list(launcher)  # e.g. ["ip", "netns", "exec", NAME]
        self.port = 0
        self._tmp = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the origin."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> NginxOrigin:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._tmp = tempfile.mkdtemp(prefix="nginx-origin-")
        for attempt in range(5):
            self.port = free_port()
            conf = Path(self._tmp) / "nginx.conf"
            # As root, nginx's workers would drop to nobody and could not read pytest's tmp dirs.
            user = "user root;\n" if os.geteuid() == 0 else ""
            conf.write_text(
                _CONF.format(
                    user=user, tmp=self._tmp, host=self.host, port=self.port, root=self.root
                )
            )
            self._proc = subprocess.Popen(
                [*self.launcher, nginx, "-c", str(conf), "-p", self._tmp],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    socket.create_connection((self.host, self.port), 0.2).close()
                    return self
                except OSError:
                    time.sleep(0.02)
            self._kill()
            if attempt == 4:
                log = (Path(self._tmp) / "error.log").read_text(errors="replace")
                raise RuntimeError(f"nginx did not start: {log[-2000:]}")
        return self

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._kill()
        shutil.rmtree(self._tmp, ignore_errors=True)

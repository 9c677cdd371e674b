"""nginx as the load balancer in front of several hubs (an ``upstream`` with each of them).

``start_balancer(["http://127.0.0.1:P1", "http://127.0.0.1:P2"])`` runs nginx on a free
loopback port proxying to the hubs the way the README's "Several hubs" example does:
round robin, a hub that refuses a connection or answers 502/503/504 is skipped for the
request (``proxy_next_upstream``; a POST is passed on only when no hub got it, since a
hub that died after getting it may have counted it) and taken out for
``fail_timeout``; responses are streamed, not buffered to disk. The
access log records which upstream answered each request (``upstreams()``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.nginx import NGINX, _free_port, _wait_listening

__all__ = ["Balancer", "balancer_config", "start_balancer"]


@dataclass
class Balancer:
    """A running nginx in front of ``hubs``; ``url`` is the one address clients use."""

    url: str
    port: int
    hubs: list[str]
    prefix: Path
    proc: subprocess.Popen[bytes]

    def upstreams(self) -> list[str]:
        """``$upstream_addr`` of every logged request (e.g. ``127.0.0.1:P1, 127.0.0.1:P2``)."""
        log = self.prefix / "access.log"
        if not log.exists():
            return []
        return [line.split(" ", 1)[1] for line in log.read_text().splitlines() if " " in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def balancer_config(port: int, hubs: Sequence[str], prefix: Path | None = None) -> str:
    """The nginx configuration (the README shows the ``upstream`` and ``location`` parts)."""
    servers = "\n".join(
        f"        server {urlsplit(h).netloc} max_fails=1 fail_timeout=2s;" for h in hubs
    )
    user = "user root;" if os.geteuid() == 0 else ""
    p = prefix or Path("/tmp")
    return f"""
{user}
worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format up '$status $upstream_addr';
    access_log {p}/access.log up;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    upstream accel_hubs {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://accel_hubs;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


@contextlib.contextmanager
def start_balancer(hubs: Sequence[str]) -> Iterator[Balancer]:
    """nginx balancing over ``hubs`` (base URLs) until the block ends."""
    prefix = Path(tempfile.mkdtemp(prefix="accel-lb-"))
    try:
        for _ in range(5):
            port = _free_port()
            conf = prefix / "nginx.conf"
            conf.write_text(balancer_config(port, hubs, prefix))
            proc = subprocess.Popen(
                [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            lb = Balancer(f"http://127.0.0.1:{port}", port, list(hubs), prefix, proc)
            if _wait_listening(port, proc):
                try:
                    yield lb
                finally:
                    lb.stop()
                return
            lb.stop()
        raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text()}")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)

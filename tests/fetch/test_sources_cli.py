"""``accel get URL --mirror URL2``: per-source figures in --json, bad mirrors refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fetch.conftest import sha256_of
from tests.support.nginx import Nginx

ACCEL = [sys.executable, "-m", "accel"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ACCEL, *args], capture_output=True, text=True, timeout=120)


def test_get_with_a_mirror_reports_each_source(nginx: object, www: Path, tmp_path: Path) -> None:
    a, b = nginx(www), nginx(www)  # type: ignore[operator]
    assert isinstance(a, Nginx) and isinstance(b, Nginx)
    sha = sha256_of(www / "big.bin")
    out = run(
        "get", a.file_url("big.bin"), "--mirror", b.file_url("big.bin"),
        "--sha256", sha, "-o", str(tmp_path / "big.bin"), "--json", "-k", "1M",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    done = lines[-1]
    assert done["event"] == "done" and done["sha256"] == sha and done["verified"]
    assert [s["url"] for s in done["sources"]] == [a.file_url("big.bin"), b.file_url("big.bin")]
    assert sum(s["bytes"] for s in done["sources"]) >= 24 << 20
    assert all("sources" in x for x in lines if x["event"] in ("started", "progress"))
    assert any(x["event"] == "started" for x in lines)
    assert sha256_of(tmp_path / "big.bin") == sha


def test_a_bad_mirror_is_one_usage_line(tmp_path: Path) -> None:
    out = run("get", "http://127.0.0.1:9/f", "--mirror", "ftp://x/f", "-o", str(tmp_path / "f"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "accel: get: --mirror: expected an http:// or https:// URL, got 'ftp://x/f'"
    ]
    out = run("get", "http://127.0.0.1:9/f", "--max-connections-per-source", "0")
    assert out.returncode == 2 and "--max-connections-per-source" in out.stderr
    assert "Traceback" not in out.stderr

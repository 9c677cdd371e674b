"""The node part of ./scripts/demo, end to end against a real hub."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.node.stack import REPO, publish, running_hub

MiB = 1 << 20


def test_demo_story_runs_every_step(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    publish(store, "whisper-small-zh", "1.0.0", {"encoder.onnx": 6 * MiB, "config.json": b"{}"})
    publish(store, "marian-zh-en", "1.0.0", {f"shards/{i}.bin": 100_000 for i in range(20)})
    with running_hub(store) as hub:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "accel.node.demo",
                "--hub",
                hub.url,
                "--models-dir",
                str(tmp_path / "models"),
                "--limit-rate",
                "20M",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # A fresh hub: usage is reported in catalog order, so marian ranks first.
    assert "pre-seeding the top 1: marian-zh-en" in out
    assert "ready: marian-zh-en@1.0.0" in out
    assert "job guard refused it: not_installed; install queued: True" in out
    assert '"type":"MODEL_NOT_AVAILABLE"' in out and '"job_id":"job-0001"' in out
    # the job named no version: the report names the one the node resolved and installs
    assert '"model_id":"whisper-small-zh","version":"1.0.0"' in out
    assert "ready: whisper-small-zh@1.0.0 at" in out
    assert "the next job for whisper-small-zh runs: path" in out
    assert "node stopped with SIGTERM (exit 0)" in out
    assert (tmp_path / "models" / "whisper-small-zh" / "1.0.0" / "encoder.onnx").exists()


def test_demo_sigterm_stops_its_node(tmp_path: Path) -> None:
    import signal
    import time
    import urllib.error
    import urllib.request

    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    publish(store, "big", "1.0", {"weights.bin": 40 * MiB})
    publish(store, "small", "1.0", {"w.bin": 100_000})
    with running_hub(store) as hub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "accel.node.demo",
                "--hub",
                hub.url,
                "--models-dir",
                str(tmp_path / "models"),
                "--limit-rate",
                "2M",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "dashboard" in line:
                url = line.split("dashboard ")[1].split()[0]
        assert url, "the demo never started its node"
        urllib.request.urlopen(url + "healthz", timeout=5).read()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 143, out
        assert "node stopped with SIGTERM (exit 0)" in out
        try:
            urllib.request.urlopen(url + "healthz", timeout=5)
            raise AssertionError("the node outlived the demo")
        except urllib.error.URLError:
            pass

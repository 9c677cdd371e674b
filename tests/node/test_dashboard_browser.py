"""The dashboard in a real headless chromium: install from the ranking, live progress,
pause/resume, one-click retry of a failed install, and a screenshot.

The node here runs in a thread over the manager fake (slow, controllable ticks) so
each UI state can be seen and clicked; test_node_process.py drives the real stack.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from accel.node.daemon import NodeConfig, NodeDaemon
from tests.node.browser import chromium, screenshot
from tests.node.fakes import FakeManager

pytestmark = pytest.mark.browser

RANKING = [
    {"model_id": "whisper-zh", "request_count": 12, "rank": 1},
    {"model_id": "marian-zh-en", "request_count": 7, "rank": 2},
]
SIZES = {"whisper-zh": 300 * 2**20, "marian-zh-en": 120 * 2**20}


class NodeThread:
    """A mini hub and a node daemon on an event loop in a background thread."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.fake = FakeManager(tmp, sizes=SIZES, tick_s=0.25, ticks=24)
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        async def ranking(r: web.Request) -> web.Response:
            return web.json_response(RANKING)

        async def models(r: web.Request) -> web.Response:
            return web.json_response(
                [
                    {
                        "id": m,
                        "name": m.replace("-", " ").title(),
                        "task": "asr",
                        "languages": ["zh"],
                        "default_version": "1.0",
                        "versions": [
                            {
                                "version": "1.0",
                                "size_bytes": n,
                                "files": [],
                                "checksum_sha256": "0" * 64,
                                "updated_at": "2026-01-01T00:00:00Z",
                            }
                        ],
                    }
                    for m, n in SIZES.items()
                ]
            )

        app = web.Application()
        app.router.add_get("/api/model-usage/ranking", ranking)
        app.router.add_get("/api/models", models)
        self.hub_runner = web.AppRunner(app)
        await self.hub_runner.setup()
        await web.TCPSite(self.hub_runner, "127.0.0.1", 0).start()
        hub = f"http://127.0.0.1:{self.hub_runner.addresses[0][1]}"
        cfg = NodeConfig(models_dir=self.tmp, hub_url=hub, port=0, node_id="gpu-node-1")
        self.daemon = NodeDaemon(cfg, manager_factory=lambda c: self.fake)
        await self.daemon.start()
        assert self.daemon.url
        self.url = self.daemon.url

    async def _stop(self) -> None:
        await self.daemon.stop()
        await self.hub_runner.cleanup()

    def __enter__(self) -> NodeThread:
        self._thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeThread]:
    with NodeThread(tmp_path) as n:
        yield n


def _js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _card_state(driver: Any, key: str) -> str | None:
    # The page re-renders cards on every event, so read through JS, never keep elements.
    return _js(
        driver,
        "const c = document.querySelector(`.card[data-key='${arguments[0]}']`);"
        "return c ? c.dataset.state : null;",
        key,
    )


def _text(driver: Any, css: str) -> str:
    return str(
        _js(
            driver,
            "const e = document.querySelector(arguments[0]);return e ? e.textContent : '';",
            css,
        )
    )


def _percent(driver: Any, key: str) -> float:
    width = _js(
        driver,
        "const f = document.querySelector(`.card[data-key='${arguments[0]}'] > .bar .fill`);"
        "return f ? f.style.width : '0%';",
        key,
    )
    return float(str(width).rstrip("%") or 0)


def _click(driver: Any, css: str) -> None:
    """Click like a person: a real WebDriver click, retried if a re-render raced it."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except (StaleElementReferenceException, NoSuchElementException):
            time.sleep(0.05)
    raise AssertionError(f"cannot click {css}")


def test_dashboard_install_progress_pause_resume_retry(node: NodeThread) -> None:
    node.fake.fail.add("marian-zh-en")
    with chromium() as driver:
        wait = WebDriverWait(driver, 20, poll_frequency=0.1)
        driver.get(node.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")) == 2)
        order = _js(
            driver,
            "return [...document.querySelectorAll('#ranking tbody tr')].map(r => r.dataset.model)",
        )
        assert order == ["whisper-zh", "marian-zh-en"]

        # Install the top-ranked model and watch its bar move, without reloading.
        driver.execute_script("window.__marker = 42")
        _click(driver, '#ranking tr[data-model="whisper-zh"] button[data-action=install]')
        key = "whisper-zh@1.0"
        card = f'.card[data-key="{key}"]'
        wait.until(lambda d: _card_state(d, key) == "downloading")
        first = _percent(driver, key)
        wait.until(lambda d: _percent(d, key) > first + 10)
        figures = _text(driver, f"{card} [data-role=figures]")
        assert "MB/s" in figures and "ETA" in figures and "MiB" in figures, figures
        assert "1 active" in _text(driver, "#total-text")
        assert "model.bin" in _text(driver, f"{card} .files")

        # Pause: the state and the button change; resume continues from where it was.
        _click(driver, f"{card} button[data-action=pause]")
        wait.until(lambda d: _card_state(d, key) == "paused")
        paused_at = _percent(driver, key)
        time.sleep(0.6)
        assert _percent(driver, key) == paused_at  # nothing moves while paused
        _click(driver, f"{card} button[data-action=resume]")
        wait.until(lambda d: _card_state(d, key) == "downloading")
        wait.until(lambda d: _card_state(d, key) == "ready")
        assert _percent(driver, key) == 100.0 >= paused_at
        assert "ready at" in driver.find_element(By.CSS_SELECTOR, f'.card[data-key="{key}"]').text

        # A failed install shows the error in words, and one click retries it.
        row = driver.find_element(By.CSS_SELECTOR, '#ranking tr[data-model="marian-zh-en"]')
        row.find_element(By.CSS_SELECTOR, "button[data-action=install]").click()
        key2 = "marian-zh-en@1.0"
        wait.until(lambda d: _card_state(d, key2) == "error")
        err = driver.find_element(
            By.CSS_SELECTOR, f'.card[data-key="{key2}"] [data-role=error]'
        ).text
        assert "Checksum mismatch" in err and "Retry" in err
        screenshot(driver, "node-dashboard-error.png")
        driver.find_element(
            By.CSS_SELECTOR, f'.card[data-key="{key2}"] button[data-action=retry]'
        ).click()
        wait.until(lambda d: _card_state(d, key2) == "downloading")
        screenshot(driver, "node-dashboard.png")
        wait.until(lambda d: _card_state(d, key2) == "ready")
        # The page was never reloaded: the marker set before the first click survived.
        assert driver.execute_script("return window.__marker") == 42
        shot = screenshot(driver, "node-dashboard-ready.png")
        assert shot.stat().st_size > 10_000

"""The dashboard in Debian's headless chromium, over the real stack: a hub subprocess,
``accel node`` as a subprocess with the real ModelManager. Clicks install on a ranked
model, watches the bars move and reach ready, pauses and resumes, sees a failed install
explained in words and retries it with one click; saves screenshots in test-artifacts/.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import (
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.node.browser import ARTIFACTS, chromium, screenshot
from tests.node.stack import NodeProcess, publish, running_hub, running_node

pytestmark = pytest.mark.browser
MiB = 1 << 20


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
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            css,
        )
    )


def _percent(driver: Any, key: str) -> float:
    """How full the card's bar is drawn: verified fill plus the in-flight tail."""
    widths = _js(
        driver,
        "const b = document.querySelector(`.card[data-key='${arguments[0]}'] > .bar`);"
        "if (!b) return ['0%'];"
        "return [...b.querySelectorAll('.fill, .inflight')].map(e => e.style.width);",
        key,
    )
    return sum(float(str(w).rstrip("%") or 0) for w in widths)


def _bar_and_text(driver: Any, key: str) -> tuple[float, float]:
    """(bar %, the % the figures print) read in one script, from one render."""
    got = _js(
        driver,
        "const c = document.querySelector(`.card[data-key='${arguments[0]}']`);"
        "const b = c.querySelector(':scope > .bar');"
        "const w = [...b.querySelectorAll('.fill, .inflight')]"
        "  .reduce((s, e) => s + parseFloat(e.style.width || '0'), 0);"
        "const t = c.querySelector('[data-role=figures]').textContent;"
        "const m = t.match(/(\\d+)%/);"
        "return [w, m ? parseFloat(m[1]) : -1];",
        key,
    )
    return float(got[0]), float(got[1])


#: what a WebDriver call raises when the live page re-rendered the element under it
_RERENDERED = (
    StaleElementReferenceException,
    NoSuchElementException,
    ElementNotInteractableException,
)


def _click(driver: Any, css: str) -> None:
    """Click like a person: a real WebDriver click, retried if a re-render raced it."""
    for _ in range(40):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except _RERENDERED:
            time.sleep(0.05)
    raise AssertionError(f"cannot click {css}")


# The README's picture is refreshed on request (ACCEL_UPDATE_SCREENS=1); an ordinary run
# saves it with the other artifacts, so running the suite leaves the checkout clean.
SCREENS = (
    Path(__file__).resolve().parents[2] / "bench" / "screens"
    if os.environ.get("ACCEL_UPDATE_SCREENS") == "1"
    else ARTIFACTS
)


def _keep_for_readme(driver: Any, name: str, css: str) -> None:
    """Save the page under bench/screens/ (the README shows it), once the element it is
    about is laid out as a person would see it: visible, wide, and its text on a line."""
    box = _js(
        driver,
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return [r.width, r.height];",
        css,
    )
    assert box[0] >= 300 and 40 <= box[1] <= 900, box
    names = _js(
        driver,
        "return [...document.querySelectorAll('#ranking tbody tr td:nth-child(2) > div')]"
        ".map(d => d.getBoundingClientRect().height)",
    )
    assert names and max(names) < 30, names  # a popular model's name does not wrap
    SCREENS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENS / name))
    assert (SCREENS / name).stat().st_size > 10_000


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[NodeProcess, Path]]:
    store = tmp_path / "store"
    (store / "models").mkdir(parents=True)
    publish(
        store,
        "whisper-zh",
        "1.0",
        {"model.bin": 24 * MiB, "tokenizer.json": 200_000, "enc/encoder.bin": 8 * MiB},
    )
    publish(store, "marian-zh-en", "1.0", {"weights.bin": 6 * MiB, "spm.model": 500_000})
    with running_hub(store) as hub:
        # Give the hub a ranking: each manifest request counts as one use.
        for model_id, uses in (("whisper-zh", 3), ("marian-zh-en", 1)):
            for _ in range(uses):
                manifest = f"{hub.url}/api/models/{model_id}/versions/1.0/manifest"
                urllib.request.urlopen(manifest, timeout=10).read()
        with running_node(tmp_path / "models", hub.url, "--limit-rate", "3M") as node:
            yield node, store


def test_dashboard_install_progress_pause_resume_retry(
    stack: tuple[NodeProcess, Path],
) -> None:
    node, store = stack
    # Damage one file of marian on the hub: its install must fail its checksum.
    weights = store / "models" / "marian-zh-en" / "1.0" / "files" / "weights.bin"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))

    with chromium() as driver:
        wait = WebDriverWait(driver, 60, poll_frequency=0.1)
        driver.get(node.url + "/")
        wait.until(lambda d: _text(d, "#conn") == "live")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")) == 2)
        order = _js(
            driver,
            "return [...document.querySelectorAll('#ranking tbody tr')].map(r => r.dataset.model)",
        )
        assert order == ["whisper-zh", "marian-zh-en"]
        assert "32.2 MiB" in _text(driver, '#ranking tr[data-model="whisper-zh"]')

        # Install the top-ranked model and watch its bar move, without reloading.
        driver.execute_script("window.__marker = 42")
        _click(driver, '#ranking tr[data-model="whisper-zh"] button[data-action=install]')
        key = "whisper-zh@1.0"
        card = f'.card[data-key="{key}"]'
        wait.until(lambda d: _card_state(d, key) == "downloading" and _percent(d, key) > 0)
        first = _percent(driver, key)
        wait.until(lambda d: _percent(d, key) > first + 5)
        figures = _text(driver, f"{card} [data-role=figures]")
        assert "MiB/s" in figures and "ETA" in figures and "MiB" in figures, figures
        # the percentage printed is how full the bar is drawn (in-flight bytes included)
        bar_pct, text_pct = _bar_and_text(driver, key)
        assert text_pct >= 0 and abs(bar_pct - text_pct) <= 1.0, (bar_pct, text_pct)
        assert "1 active" in _text(driver, "#total-text")
        assert "enc/encoder.bin" in _text(driver, f"{card} .files")
        # Files in flight have bars; the finished ones fold into one "N file(s) done" line.
        wait.until(lambda d: "done" in _text(d, f"{card} [data-role=files-rest] summary"))
        active_rows = _js(
            driver,
            "return document.querySelectorAll(arguments[0]).length",
            f"{card} [data-role=files-active] .path",
        )
        assert active_rows <= 3, active_rows
        assert "Priority" in _text(driver, f"{card} label.prio-label")
        screenshot(driver, "node-dashboard-progress.png")
        _keep_for_readme(driver, "dashboard-install.png", card)

        # Pause keeps the bytes; nothing moves while paused; resume goes on to ready.
        _click(driver, f"{card} button[data-action=pause]")
        wait.until(lambda d: _card_state(d, key) == "paused")
        paused_at = _percent(driver, key)
        time.sleep(1.0)
        assert _percent(driver, key) == paused_at
        assert paused_at < 100
        _click(driver, f"{card} button[data-action=resume]")
        wait.until(lambda d: _card_state(d, key) in ("queued", "downloading"))

        # The priority control: a focused input is not re-rendered under the typing hand.
        for _ in range(40):
            try:
                box = driver.find_element(By.CSS_SELECTOR, f"{card} input[data-role=priority]")
                box.click()
                box.clear()
                box.send_keys("7")
                driver.find_element(By.CSS_SELECTOR, f"{card} button[data-action=priority]").click()
                break
            except _RERENDERED:
                time.sleep(0.05)
        wait.until(lambda d: "priority of whisper-zh set to 7" in _text(d, "#toast"))
        wait.until(
            lambda d: (
                _js(
                    d,
                    "const i = document.querySelector(arguments[0]);return i ? i.value : null;",
                    f"{card} input[data-role=priority]",
                )
                in ("7", None)
            )
        )
        wait.until(lambda d: _card_state(d, key) == "ready")
        assert _percent(driver, key) == 100.0
        assert "ready at" in _text(driver, card)

        # The damaged model fails, explained in words; fix the hub, one click retries.
        _click(driver, '#ranking tr[data-model="marian-zh-en"] button[data-action=install]')
        key2 = "marian-zh-en@1.0"
        card2 = f'.card[data-key="{key2}"]'
        wait.until(lambda d: _card_state(d, key2) == "error")
        err = _text(driver, f"{card2} [data-role=error]")
        assert "Checksum mismatch" in err and "Retry" in err, err
        screenshot(driver, "node-dashboard-error.png")
        weights.write_bytes(good)
        _click(driver, f"{card2} button[data-action=retry]")
        wait.until(lambda d: _card_state(d, key2) == "ready")
        # The page was never reloaded: the marker set before the first click survived.
        assert driver.execute_script("return window.__marker") == 42
        shot = screenshot(driver, "node-dashboard.png")
        assert shot.stat().st_size > 10_000

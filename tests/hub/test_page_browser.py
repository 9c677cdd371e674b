"""The hub's page at ``/`` in headless Debian chromium: the catalog and the ranking render."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from selenium.webdriver.common.by import By

from tests.node.browser import chromium, screenshot
from tests.support.hub import RunningHub

SCREENS = Path(__file__).resolve().parents[2] / "bench" / "screens"


def test_page_in_chromium(live: RunningHub) -> None:
    for _ in range(3):  # make demo-mt the most requested model
        with urllib.request.urlopen(f"{live.url}/api/models/demo-mt/versions/1.0.0/manifest"):
            pass
    with urllib.request.urlopen(f"{live.url}/api/models/demo-asr/versions/1.1.0/manifest"):
        pass  # and demo-asr once: two bars to compare
    with chromium() as driver:
        driver.get(live.url + "/")
        assert driver.title == "accel hub"
        rows = driver.find_elements(By.CSS_SELECTOR, "#catalog tbody tr")
        ids = [r.find_element(By.CSS_SELECTOR, "td code").text for r in rows]
        assert ids[:2] == ["demo-asr", "demo-mt"]
        asr = rows[0].text
        assert "1.1.0 (default)" in asr and "1.0.0" in asr and "asr" in asr and "MiB" in asr
        ranking = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
        first = ranking[0].find_elements(By.TAG_NAME, "td")
        assert [c.text for c in first[:2]] == ["1", "demo-mt"]
        assert int(first[2].text) >= 3
        # per version: the command to copy and a manifest link that answers
        assert "accel pull demo-asr@1.1.0" in asr and "accel pull demo-asr@1.0.0" in asr
        link = rows[0].find_element(By.CSS_SELECTOR, "a.manifest").get_attribute("href")
        with urllib.request.urlopen(link) as resp:
            assert json.loads(resp.read())["model_id"] == "demo-asr"
        # the ranking as bars: the most requested is the longest, full width of its cell
        widths = [
            b.size["width"] for b in driver.find_elements(By.CSS_SELECTOR, "#ranking .rankbar")
        ]
        assert len(widths) >= 2 and widths[0] == max(widths) and widths[0] > 100, widths
        assert all(w > 0 for w in widths)
        screenshot(driver, "hub-page.png")
        SCREENS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENS / "hub-page.png"))

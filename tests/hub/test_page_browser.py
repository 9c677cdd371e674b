"""The hub's page at ``/`` in headless Debian chromium: the catalog and the ranking render."""

from __future__ import annotations

import urllib.request

from selenium.webdriver.common.by import By

from tests.node.browser import chromium, screenshot
from tests.support.hub import RunningHub


def test_page_in_chromium(live: RunningHub) -> None:
    for _ in range(3):  # make demo-mt the most requested model
        with urllib.request.urlopen(f"{live.url}/api/models/demo-mt/versions/1.0.0/manifest"):
            pass
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
        screenshot(driver, "hub-page.png")

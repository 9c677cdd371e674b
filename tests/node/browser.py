"""Debian's chromium, headless, driven by selenium with Debian's chromedriver.

Never downloads a browser: the binary and the driver are the system's. Each session gets
a fresh profile directory and is quit on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# Both binaries are given explicitly, so selenium-manager has nothing to look up; this
# also keeps it from trying to send usage statistics.
os.environ.setdefault("SE_AVOID_STATS", "true")


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="accel-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


_RUNNING_ANIMATIONS = (
    "return document.getAnimations().filter(a => a.playState === 'running').length"
)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save a picture once the page's CSS transitions (the bars' 0.3 s) have finished.

    A live page may start a new transition at any time, so the wait is bounded (3 s);
    the picture is an artifact, never an assertion.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    deadline = time.monotonic() + 3
    while driver.execute_script(_RUNNING_ANIMATIONS) and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.save_screenshot(str(path))
    return path

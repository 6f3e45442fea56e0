"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium, for the lineage
page's tests and benchmarks/lineage_scale.py. scripts/setup.sh installs both when root; nothing is
downloaded at run time (selenium-manager is never asked: the driver's path is given)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver",)
# Flags for a closed network and a root user: no sandbox (root), no GPU, no background connections
# (update checks, sync, component downloads), a fresh profile each time.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-extensions", "--mute-audio")


def _first(paths) -> Optional[str]:
    return next((p for p in paths if Path(p).exists()), None)


def missing() -> Optional[str]:
    """Why a browser session cannot start here, or None when it can."""
    try:
        import selenium  # noqa: F401  -- optional (the 'test' extra): is it installed?
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]'; scripts/setup.sh does it)"
    if not _first(CHROMIUM_PATHS) or not _first(DRIVER_PATHS):
        return "chromium / chromedriver not found (apt-get install chromium chromium-driver; scripts/setup.sh does it as root)"
    return None


def chromium(width: int = 1600, height: int = 1000):
    """A selenium driver for headless Chromium with a fresh profile (removed on ``quit``)."""
    # selenium is optional (the 'test' extra): only for a browser session
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    profile = tempfile.mkdtemp(prefix="evo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM_PATHS)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=_first(DRIVER_PATHS)), options=options)
    quit_ = driver.quit

    def quit_and_clean():
        try:
            quit_()
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    driver.quit = quit_and_clean
    return driver


def wait_ready(driver, timeout: float = 60.0) -> None:
    """Wait until the page has decompressed its data and drawn (body[data-ready]), or raise its error."""
    from selenium.webdriver.support.ui import WebDriverWait   # optional (the 'test' extra)

    def done(d):
        return d.execute_script("return document.body && (document.body.dataset.ready || document.body.dataset.error)")
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(done)
    error = driver.execute_script("return document.body.dataset.error || null")
    if error:
        raise AssertionError(f"the page failed: {error}")

"""Headless Debian chromium driven by selenium, offline: every host but loopback unresolvable.

    with chromium() as driver:
        driver.get(url); ...; assert severe_console_entries(driver) == []

Debian's packages (scripts/setup-debian.sh): /usr/bin/chromium and /usr/bin/chromedriver;
giving selenium the driver's path keeps Selenium Manager from downloading one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from selenium import webdriver

__all__ = ["chromium", "severe_console_entries"]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make setup` (scripts/setup-debian.sh)")
    return path


@contextmanager
def chromium(width: int = 1400, height: int = 1800) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI and the dev machines run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        # Offline: a page asking a CDN fails to resolve it, which shows up as a console error.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=_binary("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def severe_console_entries(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console errors since the last call (the browser log is drained by reading it)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [e for e in entries if e.get("level") == "SEVERE"]

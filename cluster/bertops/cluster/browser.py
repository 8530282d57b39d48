"""Headless Chromium for screenshots: Debian's ``/usr/bin/chromium`` driven by playwright
(no browser download), with the flags a container or CI machine needs.

Used by :func:`bertops.cluster.demo_report.screenshot` and by the browser tests of
``bertops ui`` (tests/ui/test_browser.py), so both launch it the same way. playwright is
imported only when a browser is launched: it is a dev dependency, not a runtime one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "needs Debian's chromium (apt-get install chromium; .ci/run installs it)"


def available() -> bool:
    return CHROMIUM.exists()


@contextmanager
def launch() -> Iterator[Any]:
    """A playwright Browser on Debian's chromium; FileNotFoundError when it is absent."""
    if not available():
        raise FileNotFoundError(f"{CHROMIUM}: {INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()

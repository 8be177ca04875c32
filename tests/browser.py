"""A real headless Chromium (Debian's `chromium`, driven by Playwright) for the page tests.

Every request that leaves the machine (anything but file://, data:, blob: and 127.0.0.1) is
blocked and recorded in `Browser.outside`, so a test can assert that nothing went out.
"""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest

LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in LOCAL_SCHEMES or parsed.hostname in LOCAL_HOSTS


class Browser:
    def __init__(self, browser):
        self.browser = browser
        self.outside: list[str] = []

    def page(self, width: int = 1200, height: int = 900):
        page = self.browser.new_page(viewport={"width": width, "height": height})

        def route(route):
            if is_local(route.request.url):
                route.continue_()
            else:
                self.outside.append(route.request.url)
                route.abort()

        page.route("**/*", route)
        return page


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, headless, as root (--no-sandbox); skips where it cannot start."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("needs Debian's chromium (.ci/system-packages.sh installs it)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("needs playwright (a dev dependency: ./uvrun installs it)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except Error as err:
            pytest.skip(f"chromium did not start: {str(err).splitlines()[0]}")
        try:
            yield Browser(browser)
        finally:
            browser.close()

"""Driving the UI in the browser: a page's elements read in one script (a list
being redrawn cannot go stale), full-page screenshots, the XSS check, and the
sign-in form."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WAIT = 10.0


class Browser:
    def __init__(self, driver: Any, base: str, screenshots: Path) -> None:
        self.driver, self.base, self.screenshots = driver, base, screenshots

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        # Read in one script: the page may reload itself (signing in again for
        # a scope its token lacks) between finding the body and reading it.
        self.wait(lambda d: d.execute_script(
            "return document.body !== null && document.body.dataset.ready === '1'"))

    def wait(self, condition: Any, timeout: float = WAIT) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait
        return WebDriverWait(self.driver, timeout).until(condition)

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements("css selector", css)

    def texts(self, css: str) -> list[str]:
        """The elements' text, read in one script: a list being replaced cannot go stale."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(e => e.innerText.trim())", css)

    def shot(self, name: str) -> None:
        """The whole page, not only the window."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        image = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                     "scale": 1}})
        (self.screenshots / f"{name}.png").write_bytes(base64.b64decode(image["data"]))

    def assert_inert(self) -> None:
        """No payload ran: nothing set window.__xss, no alert, no injected element."""
        assert self.driver.execute_script("return window.__xss === undefined")
        assert not self.all("main script, main img"), "markup from the registry was rendered"
        assert self.driver.execute_script(
            "return document.querySelectorAll('script').length") == 1


@contextmanager
def browsing(driver: Any, base: str, screenshots: Path) -> Iterator[Browser]:
    """A desktop-sized window on `base`; the tab forgets its sign-in afterwards."""
    driver.set_window_size(1280, 900)
    yield Browser(driver, base, screenshots)
    if driver.current_url.startswith(base):
        driver.execute_script("sessionStorage.clear()")
    driver.delete_all_cookies()


def sign_in(browser: Browser, user: str, password: str) -> None:
    dialog = browser.find("#login")
    browser.wait(lambda d: dialog.is_displayed())
    for field, value in (("#login-user", user), ("#login-password", password)):
        browser.find(field).clear()
        browser.find(field).send_keys(value)
    dialog.find_element("css selector", "button[value=login]").click()


def delete_buttons_shown(browser: Browser) -> int:
    return browser.driver.execute_script(
        "return [...document.querySelectorAll('button.delete')].filter(b => !b.hidden).length")

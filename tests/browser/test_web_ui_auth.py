"""The UI's sign-in, token and permission handling in a real browser, against a
stand-in token service (`token_gate`) that puts Docker's token flow in front of
the registry API: 401 with a Bearer challenge, tokens from the realm with
HTTP Basic credentials, a JWT ``access`` claim saying what was granted.

alice may pull and delete; bob may only pull. The pages themselves are
rendered by dockyard (which has no access control of its own), so these tests
are about the script: the login form, keeping and dropping the sign-in, a
delete refused and its buttons hidden, a delete allowed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.seed import push_image
from tests.browser.test_web_ui import Browser
from tests.browser.token_gate import TokenGate, serving
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def gate(dockyard: Dockyard) -> Iterator[TokenGate]:
    with serving(dockyard.url) as g:
        yield g


@pytest.fixture(scope="module")
def repo(client: RegistryClient) -> str:
    name = f"webui-auth-{uuid.uuid4().hex[:8]}/app"
    for tag in ("one", "two", "three"):
        push_image(client, name, tag)
    return name


@pytest.fixture
def browser(driver: Any, gate: TokenGate, screenshots: Path) -> Iterator[Browser]:
    driver.set_window_size(1280, 900)
    yield Browser(driver, gate.base, screenshots)


def sign_in(browser: Browser, user: str, password: str) -> None:
    dialog = browser.find("#login")
    browser.wait(lambda d: dialog.is_displayed())
    browser.find("#login-user").send_keys(user)
    browser.find("#login-password").send_keys(password)
    dialog.find_element("css selector", "button[value=login]").click()


def delete_buttons_shown(browser: Browser) -> int:
    return browser.driver.execute_script(
        "return [...document.querySelectorAll('button.delete')].filter(b => !b.hidden).length")


def test_a_refused_delete_asks_to_sign_in_then_hides_delete(
        browser: Browser, repo: str, client: RegistryClient) -> None:
    browser.open(f"/ui/r/{repo}")
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])
    assert delete_buttons_shown(browser) == 3  # nobody signed in: the API decides
    browser.find('tr[data-tag="two"] button.delete').click()
    browser.find("#confirm-delete").click()
    sign_in(browser, "bob", "wrong")
    browser.wait(lambda d: browser.texts("#login-error") == [
        "Those credentials were not accepted."])
    browser.shot("sign-in")
    for field in ("#login-user", "#login-password"):
        browser.find(field).clear()
    sign_in(browser, "bob", "secret")
    browser.wait(lambda d: browser.texts("#status") == [f"You may not delete in {repo}."])
    assert delete_buttons_shown(browser) == 0
    assert client.json("GET", f"/v2/{repo}/tags/list")[2]["tags"] == ["one", "three", "two"]

    # Signed in as bob: the token's access claim says no delete, so none is offered.
    browser.open(f"/ui/r/{repo}")
    browser.wait(lambda d: browser.texts("#session strong") == ["bob"])
    assert delete_buttons_shown(browser) == 0
    browser.find("#sign-out").click()
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])
    browser.wait(lambda d: delete_buttons_shown(browser) == 3)
    assert browser.driver.execute_script("return sessionStorage.length") == 0


def test_signed_in_with_delete_permission_deletes(browser: Browser, repo: str,
                                                  client: RegistryClient) -> None:
    browser.open(f"/ui/r/{repo}")
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])
    browser.find("#sign-in").click()
    sign_in(browser, "alice", "secret")
    browser.wait(lambda d: browser.texts("#session strong") == ["alice"])
    browser.wait(lambda d: d.find_element("css selector", "body").get_attribute(
        "data-ready") == "1")
    assert delete_buttons_shown(browser) == 3
    cookie = browser.driver.get_cookie("dockyard_ui_token")
    assert cookie and cookie["path"] == "/ui" and cookie["sameSite"] == "Strict"
    browser.find('tr[data-tag="one"] button.delete').click()
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: "one" not in browser.texts("#tags tbody th"))
    assert client.json("GET", f"/v2/{repo}/tags/list")[2]["tags"] == ["three", "two"]
    browser.find("#sign-out").click()
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])
    assert browser.driver.get_cookie("dockyard_ui_token") is None

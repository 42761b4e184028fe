"""The UI's sign-in, token and permission handling in a real browser, with the
UI reading through a stand-in token service (`token_gate`) that puts Docker's
token flow in front of the registry API: 401 with a Bearer challenge, tokens
from the realm with HTTP Basic credentials, a JWT ``access`` claim saying what
was granted.

alice may pull and delete, bob may only pull, carol may do nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.driving import Browser, browsing, delete_buttons_shown, sign_in
from tests.browser.seed import push_image
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
    with browsing(driver, gate.base, screenshots) as b:
        yield b


def test_with_anonymous_pull_a_refused_delete_asks_to_sign_in_then_hides_delete(
        browser: Browser, gate: TokenGate, repo: str, client: RegistryClient) -> None:
    gate.anonymous_pull = True
    browser.open(f"/ui/r/{repo}")
    browser.wait(lambda d: browser.texts("#session") == ["Sign in"])
    assert browser.texts("#tags tbody th") == ["one", "three", "two"]
    assert delete_buttons_shown(browser) == 3  # nobody signed in: the API decides
    browser.find('tr[data-tag="two"] button.delete').click()
    browser.find("#confirm-delete").click()
    browser.find("#login button[value=cancel]").click()
    browser.wait(lambda d: browser.texts("#status") == [
        f"Deleting in {repo} needs you to sign in."])
    assert delete_buttons_shown(browser) == 3
    browser.find('tr[data-tag="two"] button.delete').click()
    browser.find("#confirm-delete").click()
    sign_in(browser, "bob", "wrong")
    browser.wait(lambda d: browser.texts("#login-error") == [
        "Those credentials were not accepted."])
    browser.shot("sign-in")
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


def test_a_page_that_needs_sign_in_asks_then_shows_and_deletes(
        browser: Browser, gate: TokenGate, repo: str, client: RegistryClient) -> None:
    gate.anonymous_pull = False
    browser.open(f"/ui/r/{repo}")
    assert browser.find("#auth-required").text.startswith("Sign in required")
    assert not browser.all("#tags")
    sign_in(browser, "alice", "secret")
    # The script keeps the token in the pages' cookie and reloads: the server's own
    # reads now carry it.
    browser.wait(lambda d: browser.texts("#session strong") == ["alice"])
    browser.wait(lambda d: d.find_element("css selector", "body").get_attribute(
        "data-ready") == "1")
    assert browser.texts("#tags tbody th") == ["one", "three", "two"]
    cookie = browser.driver.get_cookie("dockyard_ui_token")
    assert cookie and cookie["path"] == "/ui" and cookie["sameSite"] == "Strict"
    assert delete_buttons_shown(browser) == 3
    browser.find('tr[data-tag="one"] button.delete').click()
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: "one" not in browser.texts("#tags tbody th"))
    assert client.json("GET", f"/v2/{repo}/tags/list")[2]["tags"] == ["three", "two"]

    # Another page, another scope: the stored sign-in gets its token without asking.
    browser.open(f"/ui/r/{repo}/-/manifests/two")
    browser.wait(lambda d: browser.texts("h1") == [f"{repo}:two"])
    assert not browser.find("#login").is_displayed()
    browser.open("/ui/")
    browser.wait(lambda d: repo in browser.texts("#repos tbody th"))

    browser.find("#sign-out").click()
    browser.wait(lambda d: browser.all("#auth-required"))
    assert browser.driver.get_cookie("dockyard_ui_token") is None


def test_a_sign_in_that_does_not_reach_a_page_says_so_without_looping(
        browser: Browser, gate: TokenGate, repo: str) -> None:
    gate.anonymous_pull = False
    browser.open(f"/ui/r/{repo}")
    sign_in(browser, "carol", "secret")
    browser.wait(lambda d: browser.texts("#status") == [
        "Signed in as carol, you may not see this page."])
    loads = browser.driver.execute_script("return performance.getEntriesByType("
                                          "'navigation')[0].type")
    assert loads == "reload"
    assert browser.all("#auth-required")

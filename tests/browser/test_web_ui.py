"""The web UI in a real browser (Debian's chromium, headless, through selenium),
against the session's `dockyard serve`, with images pushed through the API.

Each page is opened, checked against what was pushed, and saved as a
screenshot; the filter, sorting, copying and deleting are driven the way a
user drives them; every XSS payload stays text. The tests of one module
share its pushes and run in order: the deleting ones come last.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.browser.driving import Browser, browsing
from tests.browser.seed import COSIGN, XSS, Seed, push_image, seed
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pushed(client: RegistryClient) -> Seed:
    return seed(client)


@pytest.fixture
def browser(driver: Any, dockyard: Dockyard, screenshots: Path) -> Iterator[Browser]:
    with browsing(driver, dockyard.url, screenshots) as b:
        yield b


def test_root_sends_browsers_to_the_ui_and_api_clients_get_the_api(
        client: RegistryClient) -> None:
    r = client.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert (r.status, r.headers["Location"]) == (302, "/ui/")
    r = client.request("GET", "/", headers={"Accept": "application/json"})
    assert r.status == 404 and b"NOT_FOUND" in r.data
    assert client.request("GET", "/v2/").status == 200
    page = client.request("GET", "/ui/")
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["Cache-Control"] == "no-store"
    script = re.search(rb'src="(/ui/static/app\.js\?v=\w+)"', page.data).group(1).decode()
    asset = client.request("GET", script)
    assert asset.headers["Content-Type"].startswith("text/javascript")
    assert "immutable" in asset.headers["Cache-Control"]
    again = client.request("GET", "/ui/static/api.js")
    assert again.headers["Cache-Control"] == "no-cache"
    assert client.request("GET", "/ui/static/api.js", headers={
        "If-None-Match": again.headers["ETag"]}).status == 304
    assert client.request("GET", "/ui/static/../app.py").status == 404


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href and href.startswith("/ui/"):
            self.links.append(href)


def test_every_page_is_reachable_by_links_without_javascript(
        client: RegistryClient, pushed: Seed) -> None:
    """From the home page's search to a signature's page, by following plain links."""
    def links(path: str) -> list[str]:
        r = client.request("GET", path)
        assert r.status == 200, (path, r.status)
        parser = _Links()
        parser.feed(r.data.decode())
        return parser.links

    repo_link = f"/ui/r/{pushed.app}"
    assert repo_link in links(f"/ui/?q={pushed.prefix}")
    multi = f"{repo_link}/-/manifests/multi"
    assert multi in links(repo_link)
    signature = f"{repo_link}/-/manifests/{pushed.digests['signature']}"
    child = f"{repo_link}/-/manifests/{pushed.digests['arm64']}"
    found = links(multi)
    assert signature in found and child in found
    assert repo_link in links(signature)


def test_the_repository_list_pages_by_cursor(client: RegistryClient) -> None:
    """60 repositories: 50 on the page from `last`, the rest after its Next link."""
    prefix = f"webui-pages-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}/r{i:02d}" for i in range(60)]
    for name in names:
        push_image(client, name, "latest", layer_size=16)

    def page(path: str) -> tuple[list[str], str | None]:
        r = client.request("GET", path)
        assert r.status == 200, r.status
        text = r.data.decode()
        listed = re.findall(r'<th scope="row"><a href="/ui/r/([^"]+)">', text)
        following = re.search(r'<a rel="next" href="([^"]+)">', text)
        return listed, following and following.group(1).replace("&amp;", "&")

    first, following = page(f"/ui/?last={prefix}/")
    assert first == names[:50]
    assert following == f"/ui/?last={prefix}%2Fr49"
    second, _ = page(following)
    assert second[:10] == names[50:]
    assert client.request("HEAD", following).status == 200
    assert client.request("GET", f"/ui/?q={prefix}&page=x").status == 200
    assert client.request("GET", f"/ui/r/{names[0]}?page=-1&sort=<b>").status == 200


def test_home_lists_repositories_with_their_summary(browser: Browser, pushed: Seed) -> None:
    browser.open(f"/ui/?q={pushed.prefix}")
    rows = {r.find_element("css selector", "th").text: r.text
            for r in browser.all("#repos tbody tr")}
    assert set(rows) == {pushed.app, *pushed.others}
    app_row = rows[pushed.app]
    assert f"The demo app {XSS}" in app_row
    assert re.search(r"\s3\s", app_row), app_row  # alpha, zeta, multi
    assert "just now" in app_row or "minute" in app_row
    assert "kB" in app_row
    browser.shot("home")
    browser.assert_inert()


def test_the_filter_narrows_the_list_as_one_types(browser: Browser, pushed: Seed) -> None:
    browser.open("/ui/")
    box = browser.find("#q")
    box.send_keys(f"{pushed.prefix}/findme")
    browser.wait(lambda d: sorted(browser.texts("#repos tbody th")) == sorted(pushed.others[:2]))
    assert browser.find("#count").text == "2 repositories match"
    assert browser.driver.current_url.endswith(f"/ui/?q={pushed.prefix}%2Ffindme")
    box.send_keys("-two")
    browser.wait(lambda d: browser.texts("#repos tbody th") == [pushed.others[1]])
    browser.shot("home-filtered")
    for _ in range(len(f"{pushed.prefix}/findme-two")):
        box.send_keys("\ue003")  # backspace
    browser.wait(lambda d: not browser.texts("#count"))
    browser.assert_inert()


def test_repository_page_shows_tags_sorted_and_copies_the_pull_command(
        browser: Browser, pushed: Seed, dockyard: Dockyard) -> None:
    browser.open(f"/ui/r/{pushed.app}")
    assert browser.texts("#tags tbody th") == ["alpha", "multi", "zeta"]
    multi = browser.find('#tags tr[data-tag="multi"]')
    assert [c.text for c in multi.find_elements("css selector", ".chip")] == [
        "linux/amd64", "linux/arm64/v8"]
    assert pushed.digests["multi"][:19] in multi.text
    size = multi.find_element("css selector", "td.num span").get_attribute("title")
    assert size == f"{pushed.sizes['multi']:,} bytes"
    browser.shot("repository")

    def sort_by(column: int, expected_url: str, sort_state: str) -> list[str]:
        header = browser.all("#tags thead th")[column]
        header.find_element("css selector", "a").click()
        browser.wait(lambda d: d.current_url.endswith(expected_url))
        assert browser.all("#tags thead th")[column].get_attribute("aria-sort") == sort_state
        return browser.texts("#tags tbody th")

    # Push times newest first, then oldest first; names Z to A, then A to Z.
    assert sort_by(4, "?sort=pushed", "descending") == ["multi", "zeta", "alpha"]
    assert sort_by(4, "?sort=-pushed", "ascending") == ["alpha", "zeta", "multi"]
    assert sort_by(0, "?sort=name", "ascending") == ["alpha", "multi", "zeta"]
    assert sort_by(0, "?sort=-name", "descending") == ["zeta", "multi", "alpha"]

    browser.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": dockyard.url, "permissions": ["clipboardReadWrite",
                                                "clipboardSanitizedWrite"]})
    command = f"docker pull {dockyard.addr}/{pushed.app}:zeta"
    browser.find(f'#tags tr[data-tag="zeta"] button.copy[data-copy="{command}"]').click()
    browser.wait(lambda d: browser.texts("#status") == [f"Copied: {command}"])
    assert browser.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0])") == command
    podman = browser.all("section .command code")[1].text
    assert podman.startswith(f"podman pull {dockyard.addr}/{pushed.app}:")
    browser.assert_inert()


def test_image_manifest_page_shows_config_layers_and_annotations(
        browser: Browser, pushed: Seed) -> None:
    browser.open(f"/ui/r/{pushed.app}/-/manifests/alpha")
    facts = browser.find("main").text
    assert pushed.digests["alpha"] in facts
    assert "application/vnd.oci.image.manifest.v1+json" in facts
    assert "linux/amd64" in facts
    assert "/bin/serve --port=8080" in facts
    assert f"GREETING={XSS}" in browser.texts("ul.env li")
    labels = dict(zip(browser.texts("section table th[scope=row]"),
                      browser.texts("section table td"), strict=False))
    assert labels["org.example.team"] == "yard"
    assert labels[f"x{XSS}"] == XSS
    assert len(browser.all("#layers tbody tr")) == 1
    assert browser.find("#layers tbody td.num span").get_attribute("title") == "2,048 bytes"
    browser.shot("manifest-image")
    browser.assert_inert()


def test_index_page_shows_platforms_and_referrers_grouped(browser: Browser,
                                                          pushed: Seed) -> None:
    browser.open(f"/ui/r/{pushed.app}/-/manifests/multi")
    assert browser.texts("#platforms tbody th") == ["linux/amd64", "linux/arm64/v8"]
    heading = browser.find("#referrers h3").text
    assert heading == f"Signature (cosign) {COSIGN}"
    link = browser.find(f'#referrers a[href$="{pushed.digests["signature"]}"]')
    assert XSS in browser.find("#referrers li").text
    browser.shot("manifest-index")
    browser.assert_inert()
    link.click()
    browser.wait(lambda d: pushed.digests["signature"][:19] in d.title)
    assert pushed.digests["multi"] in browser.find("dl.facts").text
    browser.assert_inert()


def test_keyboard_reaches_the_skip_link_and_the_filter(browser: Browser) -> None:
    from selenium.webdriver.common.keys import Keys
    browser.open("/ui/")
    browser.find("body").send_keys(Keys.TAB)
    active = browser.driver.switch_to.active_element
    assert active.text == "Skip to content"
    active.send_keys(Keys.ENTER)
    for _ in range(10):
        browser.driver.switch_to.active_element.send_keys(Keys.TAB)
        if browser.driver.switch_to.active_element.get_attribute("id") == "q":
            break
    assert browser.driver.switch_to.active_element.get_attribute("id") == "q"
    label = browser.find('label[for="q"]').text
    assert label == "Filter repositories by name or description"


def test_pages_fit_a_phone(browser: Browser, pushed: Seed) -> None:
    browser.driver.set_window_size(390, 844)
    for path, name in ((f"/ui/r/{pushed.app}", "repository-phone"),
                       (f"/ui/r/{pushed.app}/-/manifests/alpha", "manifest-phone")):
        browser.open(path)
        assert browser.driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"), path
        browser.shot(name)


def test_deleting_a_tag_asks_first_then_removes_it(browser: Browser, pushed: Seed,
                                                  client: RegistryClient) -> None:
    browser.open(f"/ui/r/{pushed.app}")
    button = browser.find('#tags tr[data-tag="zeta"] button.delete')
    button.click()
    dialog = browser.find("#confirm")
    browser.wait(lambda d: dialog.is_displayed())
    assert browser.texts("#confirm-title") == ["Delete tag zeta?"]
    assert f"removes the tag “zeta” from {pushed.app}" in dialog.text
    browser.shot("confirm-delete-tag")
    dialog.find_element("css selector", "button[value=cancel]").click()
    browser.wait(lambda d: not dialog.is_displayed())
    assert "zeta" in browser.texts("#tags tbody th")

    # From the keyboard: Enter on the button opens it, Escape cancels.
    from selenium.webdriver.common.keys import Keys
    browser.driver.execute_script("arguments[0].focus()", button)
    button.send_keys(Keys.ENTER)
    browser.wait(lambda d: dialog.is_displayed())
    assert browser.driver.switch_to.active_element.get_attribute("value") == "cancel"
    browser.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    browser.wait(lambda d: not dialog.is_displayed())
    assert "zeta" in browser.texts("#tags tbody th")

    button.click()
    browser.wait(lambda d: dialog.is_displayed())
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: "zeta" not in browser.texts("#tags tbody th"))
    assert browser.find("#status").text == f"Deleted tag zeta from {pushed.app}."
    tags = client.json("GET", f"/v2/{pushed.app}/tags/list")[2]["tags"]
    assert tags == ["alpha", "multi"]
    browser.open(f"/ui/r/{pushed.app}")
    assert browser.texts("#tags tbody th") == ["alpha", "multi"]


def test_deleting_a_manifest_names_it_and_removes_it(browser: Browser, pushed: Seed,
                                                     client: RegistryClient) -> None:
    digest = pushed.digests["alpha"]
    browser.open(f"/ui/r/{pushed.app}/-/manifests/alpha")
    browser.find("section.actions button.delete").click()
    dialog = browser.find("#confirm")
    browser.wait(lambda d: dialog.is_displayed())
    assert f"the manifest {digest} of {pushed.app}, which tag alpha points to" in dialog.text
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: d.current_url.endswith(f"/ui/r/{pushed.app}"))
    browser.wait(lambda d: browser.texts("#status") == [
        f"Deleted manifest {digest} from {pushed.app}."])
    assert browser.texts("#tags tbody th") == ["multi"]
    assert client.get_manifest(pushed.app, digest).status == 404


def test_with_deletes_turned_off_a_delete_says_so_and_hides_the_buttons(
        driver: Any, fresh_dockyard: Dockyard, screenshots: Path) -> None:
    fresh_dockyard.env["DOCKYARD_STORAGE_DELETE_ENABLED"] = "false"
    fresh_dockyard.start()
    client = RegistryClient(fresh_dockyard.url)
    push_image(client, "fixed/app", "v1")
    browser = Browser(driver, fresh_dockyard.url, screenshots)
    browser.open("/ui/r/fixed/app")
    browser.find('tr[data-tag="v1"] button.delete').click()
    browser.find("#confirm-delete").click()
    browser.wait(lambda d: browser.texts("#status") == [
        "This registry does not allow deleting."])
    assert not browser.driver.execute_script(
        "return [...document.querySelectorAll('button.delete')].some(b => !b.hidden)")
    assert client.json("GET", "/v2/fixed/app/tags/list")[2]["tags"] == ["v1"]

"""The usage page (/ui/usage) in a real browser, against the session's `dockyard serve`
(no access control): two images that share a layer are pushed, usage is computed
with `dockyard usage`, and every figure the page shows is the endpoint's.
The refusal under access control is in test_web_ui_secured.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.driving import Browser, browsing
from tests.support.processes import VENV_BIN, Dockyard
from tests.support.registry_client import RegistryClient

pytestmark = pytest.mark.timeout(120)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def browser(driver: Any, dockyard: Dockyard, screenshots: Path) -> Iterator[Browser]:
    with browsing(driver, dockyard.url, screenshots) as b:
        yield b


def push_sharing(client: RegistryClient, names: tuple[str, str], shared: bytes) -> None:
    """One image in each repository: its own config and layer, and the `shared` layer."""
    for name in names:
        config, own = json.dumps({"nonce": os.urandom(8).hex()}).encode(), os.urandom(3000)
        def descriptor(media_type: str, data: bytes, name: str = name) -> dict[str, Any]:
            return {"mediaType": media_type, "size": len(data),
                    "digest": client.push_blob(name, data)}
        body = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", data)
                       for data in (shared, own)],
        }).encode()
        assert client.put_manifest(name, "v1", body).status == 201


def shown_bytes(browser: Browser, css: str) -> list[int]:
    return [int(e.get_attribute("title").split()[0].replace(",", ""))
            for e in browser.all(css)]


def test_the_usage_page_shows_the_endpoints_figures(
        browser: Browser, client: RegistryClient, dockyard: Dockyard) -> None:
    prefix = f"usage-{uuid.uuid4().hex[:8]}"
    names = (f"{prefix}/big", f"{prefix}/small")
    shared = os.urandom(50_000)
    push_sharing(client, names, shared)
    out = subprocess.run([str(VENV_BIN / "dockyard"), "usage", "--data-dir",
                          str(dockyard.data_dir), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    computed = json.loads(out.stdout)
    assert all(n in computed["repositories"] for n in names)
    for name in names:  # the shared layer is in each one's tagged bytes, in neither's own
        figures = computed["repositories"][name]
        assert figures["tagged_bytes"] - figures["exclusive_bytes"] == len(shared)
    assert computed["registry"]["dedup_ratio"] > 1.0

    # The endpoint serves that answer until it is gc.usage_max_age old; a background
    # computation (other tests push meanwhile) may replace it while the page loads:
    # compare the page with an answer that did not change around it.
    deadline = time.monotonic() + 30
    while True:
        before = client.json("GET", "/api/v1/usage")[2]
        browser.open("/ui/usage")
        browser.wait(lambda d: browser.all("#usage tbody tr"))
        rows = {e.get_attribute("data-repository"): e for e in browser.all("#usage tbody tr")}
        facts = dict(zip(browser.texts("#registry-usage dt"),
                         browser.all("#registry-usage dd"), strict=True))
        shown = {name: [int(td.get_attribute("data-bytes"))
                        for td in rows[name].find_elements("css selector", "td[data-bytes]")]
                 for name in names if name in rows}
        registry = {k: int(facts[k].find_element("css selector", "span")
                           .get_attribute("title").split()[0].replace(",", ""))
                    for k in ("Physical", "Logical", "Referenced", "Reclaimable")}
        ratio = facts["Dedup ratio"].text
        after = client.json("GET", "/api/v1/usage")[2]
        if before == after:
            break
        assert time.monotonic() < deadline, "usage kept changing"
    reg = before["registry"]
    assert registry == {"Physical": reg["physical_bytes"], "Logical": reg["logical_bytes"],
                        "Referenced": reg["referenced_bytes"],
                        "Reclaimable": reg["reclaimable_bytes"]}
    assert ratio == str(reg["dedup_ratio"])
    for name in names:
        want = before["repositories"][name]
        assert shown[name] == [want["tagged_bytes"], want["exclusive_bytes"]]
    # Largest tagged first; every repository links to its page.
    tagged = shown_bytes(browser, "#usage tbody td:nth-of-type(3) span")
    assert tagged == sorted(tagged, reverse=True)
    assert rows[names[0]].find_element("css selector", "a").get_attribute(
        "href").endswith(f"/ui/r/{names[0]}")
    assert browser.find("#nav-usage").get_attribute("aria-current") == "page"
    browser.shot("usage")

    # Sorting by exclusive bytes, ascending after the second click; by plain links.
    browser.find('#usage th[aria-sort] a[href*="exclusive"]').click()
    browser.wait(lambda d: "sort=exclusive" in d.current_url)
    browser.find('#usage th[aria-sort="descending"] a[href*="exclusive"]').click()
    browser.wait(lambda d: "sort=-exclusive" in d.current_url)
    only = shown_bytes(browser, "#usage tbody td:nth-of-type(4) span")
    assert only == sorted(only)
    browser.assert_inert()


def test_the_usage_page_escapes_and_rejects_unknown_sorts(client: RegistryClient) -> None:
    page = client.request("GET", '/ui/usage?sort="><script>x</script>')
    assert page.status == 200 and b"<script>x" not in page.data
    assert b'aria-sort="descending"' in page.data  # the default: largest tagged first

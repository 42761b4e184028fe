"""services/storage/manifest_format: any body is a Manifest or a RegistryError (a 400
the client can act on), never another exception (a 500)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.storage import manifest_format as mf
from shared import errors
from shared.validation import parse_digest
from tests.unit.props import FEW, PROPERTY, json_values, nasty_text

MEDIA_TYPES = [*sorted(mf.MANIFEST_TYPES), "application/json", "application/octet-stream",
               "text/plain", "application/vnd.oci.image.manifest"]
content_types = st.one_of(st.none(), st.sampled_from(MEDIA_TYPES),
                          st.sampled_from(MEDIA_TYPES).map(lambda t: t.upper() + "; charset=x"),
                          nasty_text)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
good_digests = hex64.map(lambda h: f"sha256:{h}")


@st.composite
def descriptors(draw: st.DrawFn) -> Any:
    """Mostly well-formed descriptors, with any one field sometimes replaced by junk."""
    desc: dict[str, Any] = {
        "mediaType": draw(st.sampled_from(MEDIA_TYPES)),
        "digest": draw(good_digests),
        "size": draw(st.integers(0, 2**40)),
    }
    if draw(st.booleans()):
        desc["platform"] = draw(st.fixed_dictionaries(
            {"os": st.sampled_from(["linux", "windows"]),
             "architecture": st.sampled_from(["amd64", "arm64"])}) | json_values)
    if draw(st.booleans()):
        desc["urls"] = draw(st.lists(st.text(max_size=5), max_size=2) | json_values)
    if draw(st.integers(0, 3)) == 0:
        desc[draw(st.sampled_from(["mediaType", "digest", "size"]))] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    return desc


@st.composite
def manifest_docs(draw: st.DrawFn) -> Any:
    """Documents with the vocabulary of manifests, so the checks past JSON get exercised."""
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        doc["schemaVersion"] = draw(st.sampled_from([2, 2.0, 1, "2", True]) | json_values)
    if draw(st.booleans()):
        doc["mediaType"] = draw(st.sampled_from(MEDIA_TYPES) | json_values)
    if draw(st.booleans()):
        doc["config"] = draw(descriptors())
    if draw(st.booleans()):
        doc["layers"] = draw(st.lists(descriptors(), max_size=3) | json_values)
    if draw(st.booleans()):
        doc["manifests"] = draw(st.lists(descriptors(), max_size=3) | json_values)
    if draw(st.booleans()):
        doc["subject"] = draw(descriptors())
    if draw(st.booleans()):
        doc["annotations"] = draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8))
                                  | json_values)
    if draw(st.booleans()):
        doc["artifactType"] = draw(st.text(max_size=20) | json_values)
    return doc


def parse_or_refuse(body: bytes, content_type: str | None) -> mf.Manifest | None:
    try:
        manifest = mf.parse(body, content_type)
    except errors.RegistryError as e:
        assert 400 <= e.status < 500
        assert e.code == "MANIFEST_INVALID"
        json.dumps(e.body())  # the error must be renderable
        return None
    assert manifest.media_type in mf.MANIFEST_TYPES
    assert all(isinstance(d, type(parse_digest("sha256:" + "0" * 64)))
               for d in manifest.blobs + manifest.manifests)
    assert manifest.artifact_type is None or isinstance(manifest.artifact_type, str)
    assert all(isinstance(k, str) and isinstance(v, str)
               for k, v in manifest.annotations.items())
    return manifest


@PROPERTY
@given(json_values, content_types)
def test_any_json_is_parsed_or_refused(value: Any, content_type: str | None) -> None:
    parse_or_refuse(json.dumps(value).encode(), content_type)


@PROPERTY
@given(manifest_docs(), content_types)
def test_any_manifest_shaped_document_is_parsed_or_refused(doc: Any,
                                                           content_type: str | None) -> None:
    parse_or_refuse(json.dumps(doc).encode(), content_type)


@FEW
@given(st.binary(max_size=200))
@example(b"[" * 100_000)
@example(b'{"a":' * 50_000)
@example(b"\xef\xbb\xbf{}")
@example(b"\xff\xfe{\x00}\x00")
@example(b"1" * 5000)
@example(b'{"schemaVersion": NaN}')
def test_any_bytes_are_parsed_or_refused(body: bytes) -> None:
    parse_or_refuse(body, None)


@PROPERTY
@given(st.lists(good_digests, min_size=0, max_size=4), good_digests,
       st.sampled_from([(mf.OCI_MANIFEST, "application/vnd.oci.image.config.v1+json"),
                        (mf.DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json")]))
def test_image_manifests_list_their_config_and_layers(layers: list[str], config: str,
                                                      kinds: tuple[str, str]) -> None:
    media_type, config_type = kinds
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": config_type, "digest": config, "size": 1},
           "layers": [{"mediaType": "x", "digest": d, "size": 1} for d in layers]}
    manifest = mf.parse(json.dumps(doc).encode(), media_type)
    assert [str(d) for d in manifest.blobs] == [config, *layers]
    assert manifest.manifests == []
    assert manifest.artifact_type is None


@PROPERTY
@given(st.lists(good_digests, min_size=0, max_size=4),
       st.sampled_from([(mf.OCI_INDEX, mf.OCI_MANIFEST), (mf.DOCKER_LIST, mf.DOCKER_MANIFEST)]))
def test_indexes_list_their_manifests(children: list[str], kinds: tuple[str, str]) -> None:
    media_type, child_type = kinds
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "manifests": [{"mediaType": child_type, "digest": d, "size": 1,
                          "platform": {"os": "linux", "architecture": "amd64"}}
                         for d in children]}
    manifest = mf.parse(json.dumps(doc).encode(), None)
    assert [str(d) for d in manifest.manifests] == children
    assert [str(d) for d, _ in manifest.platforms] == children
    assert manifest.blobs == []


def test_foreign_layers_are_not_required() -> None:
    config = "sha256:" + hashlib.sha256(b"c").hexdigest()
    foreign = "sha256:" + hashlib.sha256(b"f").hexdigest()
    doc = {"schemaVersion": 2, "mediaType": mf.DOCKER_MANIFEST,
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                      "digest": config, "size": 1},
           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                       "digest": foreign, "size": 1, "urls": ["https://example.com/l"]}]}
    assert [str(d) for d in mf.parse(json.dumps(doc).encode(), None).blobs] == [config]


def test_artifact_type_from_field_or_config() -> None:
    config = {"mediaType": "application/vnd.example.config+json",
              "digest": "sha256:" + "1" * 64, "size": 1}
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": config, "layers": []}
    assert mf.parse(json.dumps(doc).encode(), None).artifact_type == config["mediaType"]
    doc["artifactType"] = "application/vnd.example.thing"
    assert mf.parse(json.dumps(doc).encode(), None).artifact_type == doc["artifactType"]


@pytest.mark.parametrize(("content_type", "ok"), [
    (mf.OCI_MANIFEST, True), (mf.OCI_MANIFEST + "; charset=utf-8", True),
    ("APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON", True), (None, True),
    ("application/json", True), (mf.DOCKER_MANIFEST, False), (mf.OCI_INDEX, False),
])
def test_content_type_must_agree_with_media_type(content_type: str | None, ok: bool) -> None:
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "layers": [],
           "config": {"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 1}}
    body = json.dumps(doc).encode()
    if ok:
        assert mf.parse(body, content_type).media_type == mf.OCI_MANIFEST
    else:
        with pytest.raises(errors.ManifestInvalid):
            mf.parse(body, content_type)


@PROPERTY
@given(st.lists(nasty_text, max_size=4) | nasty_text | st.none())
def test_parse_accept_never_raises(value: list[str] | str | None) -> None:
    accepted = mf.parse_accept(value)
    assert all(t and "," not in t and ";" not in t and t == t.strip().lower()
               for t in accepted)


def test_parse_accept_repeated_and_joined_lines_agree() -> None:
    lines = [mf.OCI_MANIFEST, f"{mf.OCI_INDEX};q=0.9", "*/*; q=0.1"]
    assert mf.parse_accept(lines) == mf.parse_accept(", ".join(lines)) == {
        mf.OCI_MANIFEST, mf.OCI_INDEX, "*/*"}

"""Property-based tests of the live registry against its own API description.

Schemathesis generates requests for every operation in /openapi.yaml (valid
and invalid ones) and checks that none gets a 5xx and that every response
conforms to the description: a documented status, the documented content
type and headers, a body of the documented schema.

Generated requests would almost never name anything that exists, so the
module seeds repositories of its own and the description it tests is widened
(only for the test) to draw names, references, digests and upload sessions
from them too. Every repository a generated request can write to or delete
from is under ``schemathesis/``, so the data of other test modules sharing
the session's registry is never touched; a DELETE or PUT that changes the
seed is followed by pushing it again.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from shared.validation import is_valid_name
from tests.support.registry_client import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryClient,
    sha256,
)

NAMESPACE = "schemathesis"
# A well-formed upload id that stands for "a session opened just for this request".
LIVE_UPLOAD = "0" * 32
# The grammar of a repository name component (shared/validation.py).
_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"

# Not the checks that want every valid request accepted and every invalid one
# refused: by design some lookups of valid names are 404s, and a malformed
# search `page` or blob `Range` is ignored rather than refused.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,  # 405 with an Allow header
    missing_required_header,
]


def _manifest(blobs: tuple[bytes, ...], **extra: Any) -> bytes:
    config, layer = blobs[0], blobs[1]
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
        **extra,
    }).encode()


@dataclass(frozen=True)
class Seed:
    """Two repositories with blobs, an image, an index and a referrer.

    The content is fixed, so its digests are known before anything is pushed
    and pushing it again (after a generated DELETE) changes nothing else.
    """

    repo: str = f"{NAMESPACE}/seed"
    other: str = f"{NAMESPACE}/other"
    tags: tuple[str, ...] = ("v1", "multi", "sig")
    blobs: tuple[bytes, ...] = (
        json.dumps({"architecture": "amd64", "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": []}}).encode(),
        b"schemathesis layer " * 64,
        b"",
    )

    @property
    def image(self) -> bytes:
        return _manifest(self.blobs, annotations={
            "org.opencontainers.image.description": "seeded by the schemathesis tests"})

    @property
    def index(self) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": sha256(self.image), "size": len(self.image),
            "platform": {"os": "linux", "architecture": "amd64"},
        }]}).encode()

    @property
    def referrer(self) -> bytes:
        return _manifest(
            self.blobs, artifactType="application/vnd.example.signature",
            subject={"mediaType": OCI_MANIFEST, "digest": sha256(self.image),
                     "size": len(self.image)})

    @property
    def blob_digests(self) -> list[str]:
        return [sha256(b) for b in self.blobs]

    @property
    def manifest_digests(self) -> list[str]:
        return [sha256(b) for b in (self.image, self.index, self.referrer)]

    def push(self, client: RegistryClient) -> None:
        for repo in (self.repo, self.other):
            for blob in self.blobs:
                client.push_blob(repo, blob)
        for tag, body, media_type in (("v1", self.image, OCI_MANIFEST),
                                      ("multi", self.index, OCI_INDEX),
                                      ("sig", self.referrer, OCI_MANIFEST)):
            r = client.put_manifest(self.repo, tag, body, media_type)
            assert r.status == 201, (r.status, r.data)


SEED = Seed()


def _widen(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """`schema`, or one of `values` (so generated requests hit existing things)."""
    schema = dict(schema)
    widened: dict[str, Any] = {"anyOf": [{"enum": values}, schema]}
    # Without an example at the top, schemathesis's example phase spends half
    # a minute per operation drawing this from the anyOf.
    widened["example"] = schema.pop("example", values[0])
    return widened


# Not fuzzed: the administration API (a generated DELETE of
# /api/v1/repositories/<name> would wipe whole repositories of the registry the
# session shares; usage reads every blob), and the token server, which exists
# only with access control on. tests/integration covers them.
NOT_FUZZED = ("/api/", "/auth/")


def _test_document(raw: dict[str, Any], seed: Seed) -> dict[str, Any]:
    """The API description, widened for the test to draw from the seeded data too."""
    doc = copy.deepcopy(raw)
    doc["paths"] = {path: item for path, item in doc["paths"].items()
                    if not path.startswith(NOT_FUZZED)}
    components = doc["components"]
    names = [seed.repo, seed.other]
    # Names a request can use: the seeded ones, or any under NAMESPACE.
    namespaced = {"type": "string", "maxLength": 255,
                  "pattern": f"^{NAMESPACE}/{_COMPONENT}(/{_COMPONENT})*$"}
    components["parameters"]["Name"]["schema"] = _widen(namespaced, names)
    components["parameters"]["Reference"]["schema"] = _widen(
        components["parameters"]["Reference"]["schema"], [*seed.tags, *seed.manifest_digests])
    components["schemas"]["Digest"] = _widen(
        components["schemas"]["Digest"], [*seed.blob_digests, *seed.manifest_digests])
    for item in doc["paths"].values():
        for op in [item, *(v for v in item.values() if isinstance(v, dict))]:
            for param in op.get("parameters", []):
                if param.get("name") == "from":
                    param["schema"] = _widen(namespaced, names)
                elif param.get("name") == "uuid":
                    param["schema"] = _widen(param["schema"], [LIVE_UPLOAD])
    return doc


# The packaged description (test_openapi_document checks it is the one served),
# loaded at import so that pytest collects one test per operation; requests go
# to the session's registry, whose URL only the fixture knows, via base_url.
# Not schemathesis.pytest.from_fixture: as of schemathesis 4.32 it sets
# `request.node._nodeid`, which pytest 9.2 no longer has (AttributeError).
_PACKAGED = yaml.safe_load(
    resources.files("services.router").joinpath("openapi.yaml").read_bytes())
schema = schemathesis.openapi.from_dict(_test_document(_PACKAGED, SEED))
schema.config.update(request_timeout=30)


@pytest.fixture(scope="module")
def seeded(client: RegistryClient) -> RegistryClient:
    """The session's registry with SEED pushed."""
    SEED.push(client)
    return client


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_description(case: Case, seeded: RegistryClient) -> None:
    if case.path_parameters and case.path_parameters.get("uuid") == LIVE_UPLOAD:
        # A session opened just now, in the request's repository when it may have one.
        name = str(case.path_parameters.get("name", ""))
        owner = name if is_valid_name(name) and name.startswith(f"{NAMESPACE}/") else SEED.repo
        case.path_parameters["uuid"] = seeded.start_upload(owner).rsplit("/", 1)[-1]
    response = case.call_and_validate(base_url=seeded.base, checks=CHECKS)
    if case.method in ("PUT", "DELETE") and response.status_code < 300:
        SEED.push(seeded)  # undo what a generated write did to the seed


def test_destructive_admin_endpoints_are_not_fuzzed() -> None:
    fuzzed = {op.path for op in (r.ok() for r in schema.get_all_operations())}
    assert "/api/v1/repositories/{name}" in _PACKAGED["paths"]
    assert not any(path.startswith(NOT_FUZZED) for path in fuzzed), fuzzed


def test_seed_digests_are_what_the_registry_computes(seeded: RegistryClient) -> None:
    """The widened description draws on these digests; they must name the seeded content."""
    for tag, digest in zip(SEED.tags, SEED.manifest_digests, strict=True):
        r = seeded.request("HEAD", f"/v2/{SEED.repo}/manifests/{tag}")
        assert r.status == 200, (tag, r.status)
        assert r.headers["Docker-Content-Digest"] == digest
    for digest in SEED.blob_digests:
        assert seeded.request("HEAD", f"/v2/{SEED.other}/blobs/{digest}").status == 200

"""The API description served at /openapi.yaml: present, valid OpenAPI, and true to the code."""

from __future__ import annotations

import inspect
from importlib import resources
from typing import Any

import schemathesis
import yaml

from shared import errors
from tests.support.processes import Dockyard
from tests.support.registry_client import RegistryClient

# Spec codes dockyard never sends but documents for clients (UNAUTHORIZED and
# DENIED are sent when access control is configured: shared/auth).
NEVER_SENT: set[str] = set()
METHODS = {"get", "head", "put", "post", "patch", "delete", "options"}


def _served(client: RegistryClient) -> tuple[Any, bytes]:
    r = client.request("GET", "/openapi.yaml")
    assert r.status == 200, (r.status, r.data[:200])
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    return yaml.safe_load(r.data), r.data


def _packaged() -> bytes:
    return resources.files("services.router").joinpath("openapi.yaml").read_bytes()


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS]


def test_served_document_is_the_packaged_file(dockyard: Dockyard, client: RegistryClient) -> None:
    _, raw = _served(client)
    assert raw == _packaged()


def test_document_validates_as_openapi(dockyard: Dockyard, client: RegistryClient) -> None:
    doc, _ = _served(client)
    assert str(doc["openapi"]).startswith("3.")
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # the OpenAPI meta-schema; raises on any violation
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) == len(_operations(doc))
    for ref in _refs(doc):
        _resolve(doc, ref)  # a dangling $ref raises KeyError


def test_every_public_endpoint_is_described(client: RegistryClient) -> None:
    doc, _ = _served(client)
    expected = {
        ("/v2/", "get"), ("/v1/_ping", "get"), ("/v1/search", "get"), ("/v2/_catalog", "get"),
        ("/v2/{name}/tags/list", "get"),
        *(("/v2/{name}/manifests/{reference}", m) for m in ("get", "head", "put", "delete")),
        *(("/v2/{name}/blobs/{digest}", m) for m in ("get", "head", "delete")),
        ("/v2/{name}/blobs/uploads/", "post"),
        *(("/v2/{name}/blobs/uploads/{uuid}", m) for m in ("get", "patch", "put", "delete")),
        ("/v2/{name}/referrers/{digest}", "get"), ("/healthz", "get"), ("/readyz", "get"),
        ("/v2/_dockyard/repositories", "get"), ("/v2/{name}/_dockyard/tags", "get"),
        ("/auth/token", "get"), ("/auth/token", "post"),
        ("/api/v1/repositories/{name}", "delete"), ("/api/v1/usage", "get"),
    }
    described = {(path, method) for path, method, _ in _operations(doc)}
    assert expected <= described, expected - described
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) == len(set(ids))


def test_error_codes_match_the_code(client: RegistryClient) -> None:
    doc, _ = _served(client)
    documented = set(doc["components"]["schemas"]["ErrorCode"]["enum"])
    raised = {cls.code for cls in vars(errors).values()
              if inspect.isclass(cls) and issubclass(cls, errors.RegistryError)}
    assert raised <= documented, raised - documented
    assert documented - raised <= NEVER_SENT, documented - raised - NEVER_SENT


def test_every_error_response_uses_error_response(client: RegistryClient) -> None:
    doc, _ = _served(client)
    error_schema = "#/components/schemas/ErrorResponse"
    for path, method, op in _operations(doc):
        assert op.get("description") or op.get("summary"), (method, path)
        for status, response in op["responses"].items():
            if "$ref" in response:
                response = _resolve(doc, response["$ref"])
            assert response.get("description"), (method, path, status)
            if int(status) < 400 or method == "head":
                continue
            if path == "/readyz":
                continue  # a 503 there is a report, not an error
            content = response.get("content", {})
            assert list(content) == ["application/json"], (method, path, status)
            assert content["application/json"]["schema"] == {"$ref": error_schema}, (
                method, path, status)

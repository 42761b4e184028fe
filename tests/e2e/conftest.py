"""Fixtures for the end-to-end tests: the registry under test, private daemons, clients.

`DOCKYARD_E2E_TARGET=reference` runs the suite against Debian's docker-registry
(CNCF distribution) instead of dockyard, to tell client quirks from registry bugs.
`DOCKYARD_E2E_KEEP=1` keeps the session's temporary directory for inspection.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clients import Buildah, ContainersConfig, Podman, Skopeo
from .daemons import Containerd, DockerDaemon, unmount_under
from .images import Image, ImageFactory, build_tool
from .registries import Registry, from_dockyard_fixture, start_reference
from .tools import VERSIONS, require

TARGET_ENV = "DOCKYARD_E2E_TARGET"
KEEP_ENV = "DOCKYARD_E2E_KEEP"
BIG_LAYER_BYTES = 1 << 30
VERSIONS_FILE = Path(__file__).with_name("versions.json")

REGISTRY_KEY = pytest.StashKey[Registry]()
LOG_OFFSET_KEY = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end-to-end tests driving real registry clients")


@pytest.fixture(scope="session")
def e2e_root() -> Iterator[Path]:
    # Not tmp_path_factory: pytest keeps its last three base dirs, and ours hold GiBs.
    root = Path(tempfile.mkdtemp(prefix="dockyard-e2e-"))
    yield root
    unmount_under(root)
    if os.environ.get(KEEP_ENV) != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> Registry:
    """The registry under test. A test parametrized with `registry` in ("filesystem",
    "s3"), indirectly, runs a second time against dockyard with its S3 backend."""
    backend = getattr(request, "param", "filesystem")
    return request.getfixturevalue("s3_registry" if backend == "s3" else "session_registry")


@pytest.fixture(scope="session")
def s3_registry(request: pytest.FixtureRequest, e2e_root: Path) -> Iterator[Registry]:
    """dockyard with `storage.backend: s3` on the session SeaweedFS (tests/conftest.py)."""
    if os.environ.get(TARGET_ENV, "dockyard") != "dockyard":
        pytest.skip("the S3 backend is dockyard's; the reference runs on its filesystem")
    reg = from_dockyard_fixture(request.getfixturevalue("s3_dockyard"))
    yield reg
    if reg.log_path is not None and reg.log_path.exists():
        shutil.copy(reg.log_path, e2e_root / "dockyard-s3.log")


@pytest.fixture(scope="session")
def session_registry(request: pytest.FixtureRequest, e2e_root: Path) -> Iterator[Registry]:
    target = os.environ.get(TARGET_ENV, "dockyard")
    if target == "reference":
        require("docker-registry")
        reg, proc = start_reference(e2e_root / "reference")
        VERSIONS["registry under test"] = f"reference: {reg.extra['version']}"
        request.config.stash[REGISTRY_KEY] = reg
        try:
            yield reg
        finally:
            proc.stop()
    elif target == "dockyard":
        try:
            obj = request.getfixturevalue("dockyard")
        except pytest.FixtureLookupError:
            pytest.fail(
                "tests/conftest.py has no `dockyard` fixture; "
                f"set {TARGET_ENV}=reference to run against the reference registry",
                pytrace=False,
            )
        reg = from_dockyard_fixture(obj)
        VERSIONS["registry under test"] = "dockyard"
        request.config.stash[REGISTRY_KEY] = reg
        yield reg
        # The lead's fixture removes its directory; keep the log with ours.
        if reg.log_path is not None and reg.log_path.exists():
            shutil.copy(reg.log_path, e2e_root / "dockyard.log")
    else:
        pytest.fail(
            f"{TARGET_ENV} must be 'dockyard' or 'reference', not {target!r}", pytrace=False
        )


@pytest.fixture(autouse=True)
def _registry_log_offset(request: pytest.FixtureRequest, registry: Registry) -> None:
    request.node.stash[LOG_OFFSET_KEY] = registry.log_size()
    request.node.stash[REGISTRY_KEY] = registry


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # On failure, attach what the registry logged during the test: the HTTP exchange.
    report = yield
    if report.when == "call" and report.failed:
        reg = item.stash.get(REGISTRY_KEY, None) or item.config.stash.get(REGISTRY_KEY, None)
        offset = item.stash.get(LOG_OFFSET_KEY, None)
        if reg is not None and offset is not None:
            report.sections.append(("registry log during the test", reg.log_since(offset)))
    return report


@pytest.fixture(scope="session")
def docker(e2e_root: Path) -> Iterator[DockerDaemon]:
    require("docker", "dockerd", "runc")
    daemon = DockerDaemon(e2e_root / "docker")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def containerd(e2e_root: Path) -> Iterator[Containerd]:
    require("containerd", "ctr")
    daemon = Containerd(e2e_root / "containerd")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def containers_config(e2e_root: Path) -> ContainersConfig:
    return ContainersConfig(e2e_root / "containers-config")


@pytest.fixture(scope="session")
def podman(e2e_root: Path, containers_config: ContainersConfig) -> Iterator[Podman]:
    require("podman")
    client = Podman(e2e_root / "podman", containers_config)
    yield client
    client.stop()


@pytest.fixture(scope="session")
def buildah(e2e_root: Path, containers_config: ContainersConfig) -> Iterator[Buildah]:
    require("buildah")
    client = Buildah(e2e_root / "buildah", containers_config)
    yield client
    client.stop()


@pytest.fixture(scope="session")
def skopeo(containers_config: ContainersConfig) -> Skopeo:
    require("skopeo")
    return Skopeo(containers_config)


@pytest.fixture(scope="session")
def images(e2e_root: Path) -> ImageFactory:
    require("go")
    tool = build_tool(e2e_root / "go")
    return ImageFactory(e2e_root / "images", tool)


@pytest.fixture(scope="session")
def big_image(images: ImageFactory) -> tuple[Image, str]:
    """The 1 GiB-layer image, generated once; and the sha256 of its big file."""
    return images.big_image(BIG_LAYER_BYTES)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if VERSIONS:
        VERSIONS_FILE.write_text(json.dumps(dict(sorted(VERSIONS.items())), indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if VERSIONS:
        terminalreporter.section("client versions (also in tests/e2e/versions.json)")
        for name, version in sorted(VERSIONS.items()):
            terminalreporter.write_line(f"{name}: {version}")

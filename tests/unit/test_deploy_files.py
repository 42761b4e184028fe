"""The deployment files, checked offline: they parse, the configuration each service
would load is valid against shared/config.py's SCHEMA, and every reference between
them (service names, ports, probe paths, volumes, secrets, selectors) points at
something that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared import config, redis_client

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBE = DEPLOY / "kubernetes"
DOCKYARD_SERVICES = ("router", "storage", "index")
HEALTH_PATHS = {"/readyz", "/healthz"}
ENV_KEYS = {config.env_name(tuple(path.split("."))) for path, *_ in config.reference()}


def listen_port(cfg: dict[str, Any], service: str) -> int:
    return config.parse_listen(cfg[service]["listen"])[1]


def backend_urls(cfg: dict[str, Any], service: str) -> list[str]:
    if service == "router":
        return [*cfg["router"]["storage_urls"], *cfg["router"]["index_urls"]]
    if service == "storage":
        return list(cfg["storage"]["index_urls"])
    return []


def redis_sources(cfg: dict[str, Any], service: str) -> list[redis_client.RedisSource]:
    if service == "index":
        return [redis_client.from_section(cfg["index"]["redis"])]
    return [redis_client.from_url(cfg[service]["events_url"])]


# -- docker compose ---------------------------------------------------------------------


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with nothing set, and $$ as a literal $."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def compose_config(service: dict[str, Any]) -> dict[str, Any]:
    env = {k: _interpolate(str(v)) for k, v in service.get("environment", {}).items()}
    for key in env:
        assert not key.startswith("DOCKYARD_") or key in ENV_KEYS, f"unknown key {key}"
    return config.load(DEPLOY / "config.yml", environ=env)


def test_compose_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in DOCKYARD_SERVICES:
        assert services[name]["deploy"]["replicas"] >= 2, name
        assert services[name]["command"] == [name]
    assert {"redis-0", "redis-1", "sentinel-1", "sentinel-2", "sentinel-3"} <= set(services)
    assert "--replicaof" in services["redis-1"]["command"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], (name, volume)


def test_compose_references(compose: dict[str, Any]) -> None:
    services = compose["services"]
    configs = {name: compose_config(services[name]) for name in DOCKYARD_SERVICES}
    for name, cfg in configs.items():
        for url in backend_urls(cfg, name):
            parts = urlsplit(url)
            assert parts.hostname in DOCKYARD_SERVICES, (name, url)
            assert parts.port == listen_port(configs[parts.hostname], parts.hostname), url
        for source in redis_sources(cfg, name):
            assert source.uses_sentinel, name
            for host, port in source.sentinels:
                assert host in services and port == 26379, (name, host)
            assert source.master_name == "dockyard"
        test = " ".join(services[name]["healthcheck"]["test"])
        url = re.search(r"http://[^'\" ]+", test)
        assert url is not None, test
        parts = urlsplit(url.group(0))
        assert parts.path in HEALTH_PATHS and parts.port == listen_port(cfg, name), test
    assert configs["index"]["index"]["redis"]["min_replicas_ack"] == 1
    monitor = "\n".join(services["sentinel-1"]["command"])
    match = re.search(r"sentinel monitor dockyard (\S+) 6379 2", monitor)
    assert match is not None and match.group(1) in services
    published = services["router"]["ports"][0].split(":")[1]
    assert int(published) == listen_port(configs["router"], "router")


# -- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube() -> list[dict[str, Any]]:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files, "kustomization.yaml must list every manifest"
    docs = []
    for name in listed:
        docs += [d for d in yaml.safe_load_all((KUBE / name).read_text()) if d]
    return docs


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in kinds}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)


def container_env(container: dict[str, Any], secrets: dict[str, dict[str, Any]]
                  ) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, ref
            env[item["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
        else:
            env[item["name"]] = expand(item["value"], env)
    return env


def test_kubernetes_objects_reference_each_other(kube: list[dict[str, Any]]) -> None:
    workloads = of_kind(kube, "Deployment", "StatefulSet")
    services = of_kind(kube, "Service")
    config_maps = of_kind(kube, "ConfigMap")
    secrets = of_kind(kube, "Secret")
    claims = of_kind(kube, "PersistentVolumeClaim")
    assert set(DOCKYARD_SERVICES) <= set(workloads) and {"redis", "sentinel"} <= set(workloads)
    for name in DOCKYARD_SERVICES:
        assert workloads[name]["kind"] == "Deployment"
        assert workloads[name]["spec"]["replicas"] >= 2
    assert workloads["redis"]["spec"]["replicas"] == 2
    assert workloads["sentinel"]["spec"]["replicas"] == 3
    for name, w in workloads.items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert matches(w["spec"]["selector"]["matchLabels"], labels), name
        if w["kind"] == "StatefulSet":
            assert w["spec"]["serviceName"] in services, name
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        volumes.update({c["metadata"]["name"]: c for c in w["spec"].get("volumeClaimTemplates",
                                                                          [])})
        for v in volumes.values():
            if "configMap" in v:
                assert v["configMap"]["name"] in config_maps, (name, v)
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, (name, v)
        for c in pod["containers"]:
            container_env(c, secrets)
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)
    for name, s in services.items():
        targets = [w for w in workloads.values()
                   if matches(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        assert targets, f"Service {name} selects no workload"
        port_names = {p["name"] for w in targets
                      for c in w["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in s["spec"]["ports"]:
            assert port["targetPort"] in port_names, (name, port)
    # Discovery needs every pod's address: headless Services.
    for name in ("storage", "index", "redis", "sentinel"):
        assert services[name]["spec"].get("clusterIP") == "None", name
    for name, pdb in of_kind(kube, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(matches(selector, w["spec"]["template"]["metadata"]["labels"])
                   for w in workloads.values()), f"PodDisruptionBudget {name} selects nothing"


def test_kubernetes_dockyard_config_and_probes(kube: list[dict[str, Any]],
                                              tmp_path: Path) -> None:
    workloads = of_kind(kube, "Deployment", "StatefulSet")
    services = of_kind(kube, "Service")
    secrets = of_kind(kube, "Secret")
    config_file = tmp_path / "config.yml"
    config_file.write_text(of_kind(kube, "ConfigMap")["dockyard-config"]["data"]["config.yml"])
    for name in DOCKYARD_SERVICES:
        pod = workloads[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        env = container_env(container, secrets)
        for key in env:
            assert not key.startswith("DOCKYARD_") or key in ENV_KEYS, f"unknown key {key}"
        cfg = config.load(config_file, environ=env)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == listen_port(cfg, name)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        assert pod["terminationGracePeriodSeconds"] > cfg["http"]["drain_timeout"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/dockyard" in mounts  # the image reads /etc/dockyard/config.yml
        for url in backend_urls(cfg, name):
            parts = urlsplit(url)
            assert parts.hostname in services, url
            assert parts.port in {p["port"] for p in services[parts.hostname]["spec"]["ports"]}
        for source in redis_sources(cfg, name):
            assert source.uses_sentinel and source.master_name == "dockyard"
            assert source.password == secrets["dockyard-redis"]["stringData"]["password"]
            for host, port in source.sentinels:
                pod_name, _, service = host.partition(".")
                sentinels = workloads["sentinel"]
                assert service == sentinels["spec"]["serviceName"], host
                ordinal = int(pod_name.rpartition("-")[2])
                assert ordinal < sentinels["spec"]["replicas"], host
                assert port in {p["port"] for p in services[service]["spec"]["ports"]}
    scripts = of_kind(kube, "ConfigMap")["redis-scripts"]["data"]
    assert "sentinel monitor dockyard" in scripts["start-sentinel.sh"]
    assert "--appendfsync always" in scripts["start-redis.sh"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
def test_kustomize_renders(kube: list[dict[str, Any]]) -> None:
    """kubectl's own parser and kustomize accept the manifests (offline: no cluster)."""
    out = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in kube)

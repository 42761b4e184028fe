"""The `proxy` configuration: which repositories are mirrors of which upstream.

``proxy.upstreams`` is a list of mappings, each one upstream registry::

    proxy:
      upstreams:
        - prefix: hub                       # hub/<path> is <path> at the upstream
          url: https://registry-1.docker.io
          username: _env:HUB_USER           # optional; anonymous without
          password: _env:HUB_TOKEN
          tag_ttl: 300                      # seconds between HEADs for a tag
        - prefix: ghcr
          url: https://ghcr.io
        - prefix: ""                        # the whole registry mirrors this upstream
          url: https://registry-1.docker.io

Rules:

- The longest prefix wins; a prefix matches whole name components (``hub``
  matches ``hub/x``, never ``hubble/x``). The empty prefix is the mirror
  mode of distribution's ``proxy.remoteurl``: every repository no other
  prefix claims is a mirror of that upstream, under the same name, which is
  what dockerd's ``registry-mirrors`` and containerd's ``hosts.toml`` ask for.
- Docker Hub's ``library/`` rule: for an upstream at Docker Hub
  (``docker_hub``, on by default for registry-1.docker.io, docker.io and
  index.docker.io) a one-component name is ``library/<name>`` upstream, so
  ``hub/busybox`` is ``library/busybox``.
- Every string value may be ``_env:NAME`` or ``_env:NAME:default``, read from
  the environment, as elsewhere in the configuration.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})
_PREFIX_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                        r"[a-z0-9]+)*)*")
_KEYS = {"prefix": str, "url": str, "username": str, "password": str, "tag_ttl": (int, float),
         "max_age": (int, float), "docker_hub": bool, "ca_certs": str}


@dataclass(frozen=True)
class Upstream:
    """One upstream registry and the local repositories that mirror it."""

    prefix: str
    url: str
    username: str = ""
    password: str = ""
    tag_ttl: float = 300.0
    # Seconds a cached manifest is kept after its last pull; 0: kept while referenced.
    max_age: float = 0.0
    docker_hub: bool = False
    ca_certs: str = ""

    @property
    def label(self) -> str:
        """The upstream's name in logs, headers and metrics."""
        return self.prefix or "mirror"

    def remote_name(self, local: str) -> str:
        """The repository's name at the upstream."""
        rest = local[len(self.prefix) + 1:] if self.prefix else local
        if self.docker_hub and "/" not in rest:
            rest = f"library/{rest}"
        return rest


class UpstreamMap:
    """Repository name -> the upstream it mirrors (None: an ordinary repository)."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        # Longest prefix first; the mirror ("") last.
        self.upstreams = sorted(upstreams, key=lambda u: -len(u.prefix))

    def __bool__(self) -> bool:
        return bool(self.upstreams)

    def match(self, name: str) -> Upstream | None:
        for upstream in self.upstreams:
            if not upstream.prefix:
                return upstream
            if name.startswith(upstream.prefix + "/"):
                return upstream
        return None


def _expand(value: Any, environ: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("_env:"):
        name, _, default = value[len("_env:"):].partition(":")
        return environ.get(name, default)
    return value


def _upstream(raw: dict[str, Any], where: str, environ: dict[str, str]) -> Upstream:
    unknown = set(raw) - set(_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    values = {k: _expand(v, environ) for k, v in raw.items()}
    for k in ("tag_ttl", "max_age"):
        if isinstance(values.get(k), str):
            try:
                values[k] = float(values[k])
            except ValueError:
                raise ValueError(f"{where}.{k}: expected a number") from None
    for k, v in values.items():
        if not isinstance(v, _KEYS[k]) or (isinstance(v, bool) and _KEYS[k] is not bool):
            raise ValueError(f"{where}.{k}: wrong type {type(v).__name__}")
    if "url" not in values:
        raise ValueError(f"{where}: missing url")
    url = values["url"].rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise ValueError(f"{where}.url: expected http(s)://host[:port], got {url!r}")
    prefix = values.get("prefix", "").strip("/")
    if prefix and _PREFIX_RE.fullmatch(prefix) is None:
        raise ValueError(f"{where}.prefix: not a repository name prefix: {prefix!r}")
    for k in ("tag_ttl", "max_age"):
        if values.get(k, 0) < 0:
            raise ValueError(f"{where}.{k}: must be at least 0")
    if bool(values.get("username")) != bool(values.get("password")):
        raise ValueError(f"{where}: username and password go together")
    return Upstream(
        prefix=prefix, url=url, username=values.get("username", ""),
        password=values.get("password", ""), tag_ttl=float(values.get("tag_ttl", 300.0)),
        max_age=float(values.get("max_age", 0.0)),
        docker_hub=values.get("docker_hub", parts.hostname in _HUB_HOSTS),
        ca_certs=values.get("ca_certs", ""),
    )


def upstream_map(config: dict[str, Any], environ: dict[str, str] | None = None) -> UpstreamMap:
    """The configured upstreams; raises ValueError naming the bad key."""
    environ = dict(os.environ if environ is None else environ)
    upstreams = [_upstream(raw, f"proxy.upstreams[{i}]", environ)
                 for i, raw in enumerate(config["proxy"]["upstreams"])]
    seen: set[str] = set()
    for u in upstreams:
        if u.prefix in seen:
            raise ValueError(f"proxy.upstreams: prefix {u.prefix!r} given twice")
        seen.add(u.prefix)
    return UpstreamMap(upstreams)


def check(config: dict[str, Any]) -> None:
    upstream_map(config)

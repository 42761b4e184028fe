"""Test images built offline: a static Go binary plus files, as layer tars.

Nothing can be pulled from a public registry here, so every image is made from
scratch: layers are deterministic tars written by Python, and images are handed
to clients either as a `docker save`-style archive (docker/podman/ctr load it)
or as an OCI image layout directory (skopeo reads it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .tools import record_version, run

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

_MTIME = 1_700_000_000
_CHUNK = 4 << 20

TOOL_SOURCE = """\
// tool: the only program in the test images; it prints or hashes a file.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: tool cat|sha256 FILE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	switch os.Args[1] {
	case "cat":
		_, err = io.Copy(os.Stdout, f)
	case "sha256":
		h := sha256.New()
		if _, err = io.Copy(h, f); err == nil {
			fmt.Println(hex.EncodeToString(h.Sum(nil)))
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"""

TOOL_PATH = "bin/tool"


def build_tool(workdir: Path) -> Path:
    """Compile the static helper binary; Go caches stay inside workdir."""
    src = workdir / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "main.go").write_text(TOOL_SOURCE)
    (src / "go.mod").write_text("module e2etool\n\ngo 1.19\n")
    out = workdir / "tool"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "GOCACHE": str(workdir / "gocache"),
        "GOPATH": str(workdir / "gopath"),
        "GOFLAGS": "",
        # No network: never try to fetch modules or a newer toolchain.
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOOS": "linux",
        "GOARCH": "amd64",
    }
    run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), "."],
        env=env,
        cwd=src,
        timeout=300,
    )
    record_version("go", ["go", "version"], env=env)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class RandomContent:
    """A file body of `size` random bytes, streamed, hashed on the way out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._left = size
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = os.urandom(n)
        self._hash.update(data)
        self._left -= n
        return data

    @property
    def sha256(self) -> str:
        assert self._left == 0, "content not fully read yet"
        return self._hash.hexdigest()


FileBody = bytes | Path | RandomContent


class _HashingWriter:
    """Hashes what tarfile writes, so a GiB layer is not read back to get its digest."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def tell(self) -> int:
        return self.size

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(frozen=True)
class Layer:
    """An uncompressed layer tar on disk."""

    tar: Path
    diff_id: str
    size: int
    file_sha256: Mapping[str, str] = field(default_factory=dict)


def write_layer(path: Path, files: Mapping[str, FileBody]) -> Layer:
    """Write a reproducible layer tar: root-owned, fixed mtimes, parents first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dirs: set[str] = set()
    for name in files:
        parts = name.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    hashes: dict[str, str] = {}
    with (
        path.open("wb") as raw,
        _HashingWriter(raw) as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar,
    ):
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
            tar.addfile(info)
        for name in sorted(files):
            body = files[name]
            info = tarfile.TarInfo(name.strip("/"))
            info.mtime = _MTIME
            info.mode = 0o755 if name.strip("/") == TOOL_PATH else 0o644
            if isinstance(body, RandomContent):
                info.size = body.size
                tar.addfile(info, body)  # type: ignore[arg-type]
                hashes[name] = body.sha256
            else:
                data = body.read_bytes() if isinstance(body, Path) else body
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                hashes[name] = hashlib.sha256(data).hexdigest()
    return Layer(tar=path, diff_id=out.digest, size=out.size, file_sha256=hashes)


@dataclass(frozen=True)
class Image:
    layers: tuple[Layer, ...]
    architecture: str = "amd64"
    variant: str | None = None
    entrypoint: tuple[str, ...] = ("/" + TOOL_PATH,)
    cmd: tuple[str, ...] = ("cat", "/etc/e2e/greeting")

    def config_bytes(self) -> bytes:
        config: dict[str, object] = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Entrypoint": list(self.entrypoint), "Cmd": list(self.cmd)},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": "dockyard e2e"}
                for _ in self.layers
            ],
        }
        if self.variant:
            config["variant"] = self.variant
        return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()

    @property
    def config_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes()).hexdigest()

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]


def write_docker_archive(path: Path, image: Image, tags: Sequence[str]) -> Path:
    """A `docker save` style tar (manifest.json + config + layer tars) for docker/podman load."""
    config = image.config_bytes()
    config_name = image.config_digest.split(":")[1] + ".json"
    layer_names = [f"{layer.diff_id.split(':')[1]}/layer.tar" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": list(tags), "Layers": layer_names}]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", copybufsize=_CHUNK) as tar:
        for layer, name in zip(image.layers, layer_names, strict=True):
            tar.add(layer.tar, arcname=name, recursive=False)
        for name, data in ((config_name, config), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), _MTIME
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_dict(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


class OciLayout:
    """An OCI image layout directory that images and indexes are added to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._refs: list[dict[str, object]] = []

    def _put(self, media_type: str, data: bytes) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        (self.blobs / digest).write_bytes(data)
        return Descriptor(media_type, "sha256:" + digest, len(data))

    def _put_layer(self, layer: Layer) -> Descriptor:
        tmp = self.blobs / "upload.tmp"
        # Level 1 and no timestamp: fast, and the same bytes every run.
        with (
            layer.tar.open("rb") as src,
            tmp.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
        ):
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                gz.write(chunk)
        digest = sha256_file(tmp)
        tmp.rename(self.blobs / digest.split(":")[1])
        return Descriptor(
            OCI_LAYER_GZIP, digest, (self.blobs / digest.split(":")[1]).stat().st_size
        )

    def add_image(self, image: Image) -> Descriptor:
        config = self._put(OCI_CONFIG, image.config_bytes())
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.as_dict(),
            "layers": [self._put_layer(layer).as_dict() for layer in image.layers],
        }
        return self._put(OCI_MANIFEST, json.dumps(manifest, separators=(",", ":")).encode())

    def add_index(self, entries: Sequence[tuple[Image, Descriptor]]) -> Descriptor:
        manifests = []
        for image, desc in entries:
            platform: dict[str, str] = {"architecture": image.architecture, "os": "linux"}
            if image.variant:
                platform["variant"] = image.variant
            manifests.append(desc.as_dict(platform=platform))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self._put(OCI_INDEX, json.dumps(index, separators=(",", ":")).encode())

    def tag(self, desc: Descriptor, name: str) -> None:
        self._refs.append(desc.as_dict(annotations={REF_NAME: name}))
        index = {"schemaVersion": 2, "manifests": self._refs}
        (self.root / "index.json").write_text(json.dumps(index))

    def ref(self, name: str) -> str:
        """The containers/image transport reference of a tag in this layout."""
        return f"oci:{self.root}:{name}"


class ImageFactory:
    """Makes distinct small test images sharing one layer with the Go binary."""

    def __init__(self, workdir: Path, tool: Path) -> None:
        self.workdir = workdir
        self.tool = tool
        self._count = 0
        self._tool_layer: Layer | None = None

    def _next_path(self, stem: str) -> Path:
        self._count += 1
        return self.workdir / "layers" / f"{self._count:03d}-{stem}.tar"

    def layer(self, files: Mapping[str, FileBody], stem: str = "layer") -> Layer:
        return write_layer(self._next_path(stem), files)

    @property
    def tool_layer(self) -> Layer:
        if self._tool_layer is None:
            self._tool_layer = self.layer({TOOL_PATH: self.tool}, "tool")
        return self._tool_layer

    def image(self, name: str, random_bytes: int = 64 << 10, own_tool_layer: bool = False) -> Image:
        """Three layers: the tool, a greeting naming the image, and random data.

        The tool layer is shared by all images unless own_tool_layer is set: a layer
        no other image has cannot be satisfied by a blob some earlier test pushed.
        """
        tool = self.tool_layer
        if own_tool_layer:
            tool = self.layer(
                {TOOL_PATH: self.tool, "etc/e2e/owner": name.encode()}, f"{name}-tool"
            )
        greeting = self.layer({"etc/e2e/greeting": greeting_for(name).encode()}, f"{name}-greeting")
        data = self.layer(
            {"etc/e2e/name": f"{name}\n".encode(), "data/random.bin": os.urandom(random_bytes)},
            f"{name}-data",
        )
        return Image(layers=(tool, greeting, data))

    def big_image(self, size: int) -> tuple[Image, str]:
        """The tool plus one layer holding `size` random bytes; returns the file's sha256."""
        content = RandomContent(size)
        big = self.layer({"data/big.bin": content}, "big")
        return Image(layers=(self.tool_layer, big), cmd=("sha256", "/data/big.bin")), content.sha256

    def foreign_image(self, name: str, architecture: str, variant: str | None) -> Image:
        """An image for another platform; it is never run, so it holds only a file."""
        marker = self.layer(
            {"etc/e2e/arch": f"{architecture}\n".encode()}, f"{name}-{architecture}"
        )
        return Image(
            layers=(marker,), architecture=architecture, variant=variant, entrypoint=(), cmd=()
        )

    def docker_archive(self, image: Image, tags: Sequence[str]) -> Path:
        self._count += 1
        return write_docker_archive(
            self.workdir / "archives" / f"{self._count:03d}.tar", image, tags
        )

    def oci_layout(self, stem: str) -> OciLayout:
        return OciLayout(self.workdir / "oci" / stem)


def greeting_for(name: str) -> str:
    return f"hello from the {name} test image\n"

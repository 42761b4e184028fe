"""What a collection did (or, dry, would do), and how it shows its progress."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

KINDS = ("tag", "manifest", "layer-link", "blob", "upload")


@dataclass(frozen=True, slots=True)
class Item:
    kind: str            # one of KINDS
    repository: str      # "" for a blob, which no repository owns
    name: str            # a digest, a tag, or an upload id
    bytes: int = 0


@dataclass
class Report:
    dry_run: bool
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    items: list[Item] = field(default_factory=list)
    # Candidates a writer touched between the mark and the delete: kept.
    spared: int = 0

    def add(self, item: Item) -> None:
        self.items.append(item)

    def count(self, kind: str) -> int:
        return sum(1 for i in self.items if i.kind == kind)

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.items if i.kind in ("blob", "upload"))

    def summary(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "started": self.started, "finished": self.finished,
                "duration": round(self.finished - self.started, 3),
                "counts": {k: self.count(k) for k in KINDS}, "bytes": self.bytes,
                "spared": self.spared}

    def to_json(self) -> dict[str, object]:
        return {**self.summary(), "items": [asdict(i) for i in self.items]}


def save_json(path: Path, value: object) -> None:
    """Written whole by rename: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_summary(path: Path, report: Report) -> None:
    """The last run's summary, read by the metrics of `background`."""
    save_json(path, report.summary())


def load_summary(path: Path) -> dict[str, object] | None:
    return load_json(path)


class Progress(Protocol):
    def phase(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1, nbytes: int = 0) -> None: ...
    def done(self) -> None: ...


class Silent:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, n: int = 1, nbytes: int = 0) -> None:
        pass

    def done(self) -> None:
        pass


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Terminal:
    """Phases, counts and bytes on one line redrawn in place on a terminal (at most
    ten times a second); on a pipe or a file, one line per finished phase."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._name = ""
        self._total: int | None = None
        self._count = 0
        self._bytes = 0
        self._started = 0.0
        self._drawn = 0.0

    def _line(self) -> str:
        total = f"/{self._total}" if self._total is not None else ""
        extra = f", {human_bytes(self._bytes)}" if self._bytes else ""
        return f"{self._name}: {self._count}{total}{extra}"

    def phase(self, name: str, total: int | None = None) -> None:
        self.done()
        self._name, self._total, self._count, self._bytes = name, total, 0, 0
        self._started = time.monotonic()
        self._draw(force=True)

    def advance(self, n: int = 1, nbytes: int = 0) -> None:
        self._count += n
        self._bytes += nbytes
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._tty and (force or now - self._drawn > 0.1):
            self._stream.write("\r\033[K" + self._line())
            self._stream.flush()
            self._drawn = now

    def done(self) -> None:
        if not self._name:
            return
        took = time.monotonic() - self._started
        end = f" ({took:.1f}s)"
        self._stream.write(("\r\033[K" if self._tty else "") + self._line() + end + "\n")
        self._stream.flush()
        self._name = ""

"""Peak resident memory of each registry's whole process tree, sampled in the background."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

from bench.servers import process_tree


def _role(proc: psutil.Process) -> str:
    """A readable name: dockyard's services are all 'python', so use the
    subcommand (``python -m services.cli storage ...`` -> ``storage``)."""
    name = proc.name()
    if not name.startswith("python"):
        return name
    args = proc.cmdline()
    if "services.cli" in args and args.index("services.cli") + 1 < len(args):
        return args[args.index("services.cli") + 1]
    return " ".join(args[1:3]) or name


@dataclass
class Peak:
    total_bytes: int = 0
    # process name -> RSS at the moment the total peaked, to show what dominates
    breakdown: dict[str, int] = field(default_factory=dict)


class RssSampler:
    """Samples RSS of every process of every server every ``interval`` seconds.

    Peaks are kept per phase so that dockyard-only work (the search index
    population) does not count against dockyard in the side-by-side comparison.
    """

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._phase = "compare"
        self.peaks: dict[str, dict[str, Peak]] = {}
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample_once(self) -> None:
        with self._lock:
            phase = self._phase
        for label, pid in self._pids.items():
            total = 0
            breakdown: dict[str, int] = {}
            for proc in process_tree(pid):
                try:
                    rss = proc.memory_info().rss
                    name = f"{_role(proc)}[{proc.pid}]"
                except psutil.Error:
                    continue  # exited between listing and sampling
                total += rss
                breakdown[name] = rss
            with self._lock:
                peak = self.peaks.setdefault(phase, {}).setdefault(label, Peak())
                if total > peak.total_bytes:
                    peak.total_bytes = total
                    peak.breakdown = breakdown

    def peak(self, phase: str, label: str) -> Peak:
        with self._lock:
            return self.peaks.get(phase, {}).get(label, Peak())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample_once()

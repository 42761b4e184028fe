"""Running an HA scenario: client processes under load while something breaks, then the
check that every acknowledged push is still there, byte for byte.

Each scenario reports attempted, retried (of which failovers: a refused
connection sent to the other router), failed after retries, lost, wrong bytes
and the longest unavailability window any client saw. With ``HA_RESULTS`` set
to a file path, the figures are appended to it as JSON lines.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ha.load import Client, Failed, Report
from tests.ha.topology import Topology

REPO_ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("HA_SECONDS", "60"))
CLIENTS = int(os.environ.get("HA_CLIENTS", "3"))


@dataclass
class Outcome:
    name: str
    seconds: float
    clients: int
    attempted: int = 0
    retried: int = 0
    failovers: int = 0
    failed: int = 0
    lost: int = 0
    wrong_bytes: int = 0
    longest_window: float = 0.0
    acked: int = 0
    statuses: Counter = field(default_factory=Counter)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)
    acked_items: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        return (f"{self.name}: {self.clients} clients x {self.seconds:.0f}s, "
                f"{self.attempted} operations ({self.acked} pushes acknowledged), "
                f"{self.retried} retried ({self.failovers} router failovers), "
                f"{self.failed} failed after retries, {self.lost} lost, "
                f"{self.wrong_bytes} wrong bytes, longest unavailability "
                f"{self.longest_window:.2f}s; statuses {dict(self.statuses)}")


def run(t: Topology, name: str, chaos: Callable[[threading.Event], None] | None = None,
        seconds: float = SECONDS, clients: int = CLIENTS,
        linger: float | None = None) -> Outcome:
    """Load from `clients` processes for `seconds`, with `chaos` running meanwhile
    (it should return when its event is set), then verify every acknowledged push.
    With `linger`, the load stops that many seconds after `chaos` returns, if that
    comes before `seconds`."""
    out_dir = t.directory / f"load-{name}"
    out_dir.mkdir(exist_ok=True)
    stop_file = out_dir / "stop"
    stop_file.unlink(missing_ok=True)
    procs = []
    for i in range(clients):
        out = out_dir / f"client-{i}.json"
        with open(out_dir / f"client-{i}.log", "wb") as log:
            procs.append((out, subprocess.Popen(
                [sys.executable, "-m", "tests.ha.load", "--routers", ",".join(t.router_urls),
                 "--seconds", str(seconds), "--seed", str(i), "--prefix", f"ha/{name}",
                 "--out", str(out), "--stop-file", str(stop_file)], cwd=REPO_ROOT,
                stdout=log, stderr=subprocess.STDOUT)))
    stop = threading.Event()
    chaos_errors: list[BaseException] = []

    def chaos_main() -> None:
        try:
            if chaos is not None:
                chaos(stop)
            if linger is not None:
                stop.wait(linger)
                stop_file.touch()
        except BaseException as e:  # reported by the test
            chaos_errors.append(e)
            stop_file.touch()

    started = time.monotonic()
    thread = threading.Thread(target=chaos_main, name="chaos")
    thread.start()
    try:
        for _, proc in procs:
            proc.wait(seconds + 120)
    finally:
        stop.set()
        thread.join(120)
    if chaos_errors:
        raise chaos_errors[0]
    outcome = Outcome(name, time.monotonic() - started, clients)
    for out, proc in procs:
        assert proc.returncode == 0, (out_dir / f"{out.stem}.log").read_text()[-3000:]
        report = json.loads(out.read_text())
        for key in ("attempted", "retried", "failovers", "failed", "wrong_bytes",
                    "missing_retry_after"):
            setattr(outcome, key, getattr(outcome, key) + report[key])
        outcome.longest_window = max(outcome.longest_window, report["longest_window"])
        outcome.statuses.update(report["statuses"])
        outcome.errors += report["errors"]
        outcome.acked_items += report["acked"]
    outcome.acked = len(outcome.acked_items)
    outcome.lost = verify(t, outcome.acked_items)
    print("\n" + outcome.summary())
    for error in outcome.errors[:10]:
        print("  error:", error)
    record(outcome)
    return outcome


def verify(t: Topology, acked: list[dict[str, Any]]) -> int:
    """Pull every acknowledged image by tag through the routers; the number lost."""
    report = Report()
    client = Client(t.router_urls, random.Random(0), report)
    lost = 0
    for item in acked:
        try:
            client.pull(item, by_digest=False)
        except Failed as e:
            lost += 1
            if lost <= 5:
                print("  lost:", item["repo"], item["tag"], e)
    return lost


def record(outcome: Outcome) -> None:
    path = os.environ.get("HA_RESULTS")
    if not path:
        return
    row = {k: v for k, v in outcome.__dict__.items() if k not in ("acked_items", "errors")}
    row["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def assert_clean(outcome: Outcome) -> None:
    assert outcome.attempted > 0
    assert outcome.failed == 0, outcome.errors
    assert outcome.lost == 0
    assert outcome.wrong_bytes == 0
    assert outcome.missing_retry_after == 0

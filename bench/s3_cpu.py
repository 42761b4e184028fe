"""Where the CPU goes in the S3 scenario: per-process CPU seconds, and a py-spy split of
dockyard's storage process into its own code and the S3 client (boto3).

Processes are named by role: dockyard's children by their `services.cli <service>`
command line (router, storage, index) and redis; the reference is one process; SeaweedFS
is the `weed` process; the load generator is this Python process (getrusage).
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import psutil

from bench.servers import process_tree


def role(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if len(cmd) > 3 and cmd[1:3] == ["-m", "services.cli"]:
        return cmd[3]
    name = Path(cmd[0]).name if cmd else proc.name()
    if "redis" in name or "valkey" in name:
        return "redis"
    if name == "weed":
        return "seaweedfs"
    if name == "docker-registry":
        return "reference"
    return "dockyard serve" if "dockyard" in " ".join(cmd[:2]) else name


def cpu_by_role(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each labelled process tree, by role, and of
    this process ("load generator")."""
    out: Counter[str] = Counter()
    for label, pid in pids.items():
        for proc in process_tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                t = proc.cpu_times()
                out[f"{label}/{role(proc)}"] += t.user + t.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["load generator"] = usage.ru_utime + usage.ru_stime
    return dict(out)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 3) for k, v in after.items()
            if v - before.get(k, 0.0) > 0.0005}


# Frames of the S3 client stack, as py-spy prints their files.
S3_CLIENT = ("botocore", "boto3", "s3transfer", "urllib3")
HASHING = ("hashlib", "_hashlib", "sha256")


class Profile:
    """py-spy recording one process until `stop`, which splits its sampled stacks into
    S3 client / hashing / the rest. `--gil` samples only the thread holding the GIL,
    i.e. where the Python CPU goes (a thread waiting on a socket does not count);
    `--nonblocking` reads the process without pausing it."""

    def __init__(self, pid: int) -> None:
        self.binary = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent
                                                     / ".venv" / "bin" / "py-spy")
        self.out = Path(tempfile.mkstemp(prefix="s3-profile-", suffix=".txt")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        if Path(self.binary).exists():
            self.proc = subprocess.Popen(
                [self.binary, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                 "--gil", "--nonblocking", "--output", str(self.out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(2)  # SIGINT: py-spy writes what it sampled
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        counts: Counter[str] = Counter()
        for line in self.out.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            if any(f"/{m}/" in stack or f"({m}" in stack for m in S3_CLIENT):
                counts["S3 client (boto3/botocore/urllib3)"] += int(n)
            elif any(h in stack for h in HASHING):
                counts["hashing (sha256)"] += int(n)
            else:
                counts["dockyard, falcon, waitress, I/O"] += int(n)
        self.out.unlink(missing_ok=True)
        total = sum(counts.values())
        return {k: round(v / total, 3) for k, v in counts.items()} if total else None

"""Small-request load from `wrk` (Debian's package), so the generator is never the limit.

A Python client spends more CPU per request than either registry does, on the
same 2 cores, so its numbers say more about the client than the server. wrk
is C with an event loop per thread. Each run here:

- sends a fixed list of prepared requests round-robin (a Lua `request()`
  that returns prebuilt strings; no per-request formatting);
- optionally paces each connection with Lua `delay()` for an offered rate;
- reports through Lua `done()` as one JSON line: requests, seconds, p50,
  p99, max, non-2xx answers and socket errors (connect, read, write, timeout);
- measures wrk's own CPU (getrusage of the finished child) as a share of the
  machine, printed with the result.

The bodies are not checked here; the Python workloads check the same URLs'
answers (status, digest, headers) before the curves run.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.client import ProtocolError

_SCRIPT = r"""
local requests = {}
local counter = 0
local offset = 0
local step = 1
local pace_ms = tonumber(os.getenv("WRK_PACE_MS") or "0")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local method, file = args[1], args[2]
  local headers = {}
  for i = 3, #args, 2 do headers[args[i]] = args[i + 1] end
  for line in io.lines(file) do
    table.insert(requests, wrk.format(method, line, headers))
  end
  offset = id
  step = tonumber(os.getenv("WRK_THREADS") or "1")
  counter = offset
end

function request()
  local r = requests[(counter % #requests) + 1]
  counter = counter + step
  return r
end

function delay()
  return pace_ms
end

function done(summary, latency, requests_)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class WrkResult:
    clients: int
    rate: float  # completed requests per second
    p50_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int  # connect + read + write errors
    timeouts: int
    generator_cpu: float  # wrk's CPU time over (wall time x cores): its share of the machine

    def clean(self) -> bool:
        return self.non2xx == 0 and self.socket_errors == 0 and self.timeouts == 0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def available() -> bool:
    return shutil.which("wrk") is not None


def run(base_url: str, paths: list[str], clients: int, seconds: float, *,
        method: str = "GET", headers: dict[str, str] | None = None,
        pace_ms: float = 0.0, timeout: float = 5.0) -> WrkResult:
    """Drive `paths` round-robin from `clients` connections for `seconds`."""
    threads = max(1, min(clients, 2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script, listing = Path(tmp) / "curve.lua", Path(tmp) / "paths.txt"
        script.write_text(_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        args = [method, str(listing)]
        for name, value in (headers or {}).items():
            args += [name, value]
        cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{max(1, round(seconds))}s",
               f"--timeout={timeout:g}s", "-s", str(script), base_url, "--", *args]
        env = {**os.environ, "WRK_THREADS": str(threads), "WRK_PACE_MS": f"{pace_ms:g}"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             timeout=seconds + 60)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
    if out.returncode != 0 or line is None:
        raise ProtocolError(f"wrk failed ({out.returncode}): {out.stderr.strip()[:300]}",
                            method=method, url=base_url + paths[0])
    doc = json.loads(line)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        clients=clients,
        rate=doc["requests"] / (doc["us"] / 1e6) if doc["us"] else 0.0,
        p50_ms=doc["p50_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        max_ms=doc["max_us"] / 1000,
        non2xx=doc["non2xx"],
        socket_errors=doc["connect"] + doc["read"] + doc["write"],
        timeouts=doc["timeout"],
        generator_cpu=round(cpu / (wall * (os.cpu_count() or 1)), 3),
    )


__all__ = ["WrkResult", "available", "run"]

"""CPU per request of each process of a running registry, under wrk.

    python -m bench.cpu_per_request URL PATH CLIENTS[,CLIENTS...] [SECONDS] [ACCEPT]

Finds the process listening on URL's port (for dockyard, a router: its
`serve` parent and all that parent's children are measured), reads every
process's CPU time around a wrk run of GET PATH at each client count, and
prints throughput, p99, errors, the CPU milliseconds per request of each
process role, wrk's own CPU share and the load average.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

import psutil

from bench import wrk


def _tree(port: int) -> list[psutil.Process]:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            proc = psutil.Process(conn.pid)
            parent = proc.parent()
            if "services.cli" in " ".join(proc.cmdline()) and parent is not None:
                proc = parent  # dockyard: measure `serve` and all its children
            return [proc, *proc.children(recursive=True)]
    raise SystemExit(f"nothing listens on port {port}")


def _role(proc: psutil.Process) -> str:
    cmd = proc.cmdline()
    return cmd[cmd.index("services.cli") + 1] if "services.cli" in cmd else proc.name()


def _cpu(procs: list[psutil.Process]) -> dict[tuple[str, int], float]:
    out = {}
    for proc in procs:
        try:
            t = proc.cpu_times()
            out[(_role(proc), proc.pid)] = t.user + t.system
        except psutil.Error:
            continue
    return out


def main(argv: list[str]) -> None:
    url, path, clients = argv[0], argv[1], [int(c) for c in argv[2].split(",")]
    seconds = float(argv[3]) if len(argv) > 3 else 5.0
    headers = {"Accept": argv[4]} if len(argv) > 4 else {}
    procs = _tree(urlsplit(url).port or 80)
    for n in clients:
        before = _cpu(procs)
        result = wrk.run(url, [path], n, seconds, headers=headers)
        after = _cpu(procs)
        done = result.rate * seconds
        per_role: dict[str, float] = {}
        for key, value in after.items():
            per_role[key[0]] = per_role.get(key[0], 0.0) + value - before.get(key, 0.0)
        cost = " ".join(f"{role}={1000 * v / done:.3f}" for role, v in sorted(per_role.items())
                        if done and v > 0.01)
        errors = result.non2xx + result.socket_errors + result.timeouts
        print(f"clients={n} {result.rate:,.0f} req/s p99 {result.p99_ms:.1f} ms errors {errors}"
              f" CPU ms/request: {cost} wrk {result.generator_cpu:.0%}"
              f" load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

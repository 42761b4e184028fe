"""HEAD load from several processes: wrk cannot measure HEAD.

wrk's parser waits for the body a HEAD answer's Content-Length announces,
which never comes, so no HEAD request ever completes. Here `processes`
separate Python processes each keep their share of the connections busy in
one `selectors` loop: write a prepared request, read until the end of the
answer's head, check its status, next. Per request that is a few system
calls and one `find`, a small fraction of what either server spends, and
the result carries the generators' CPU share like wrk's.

Run as `python -m bench.headload HOST PORT CONNECTIONS SECONDS PATH...`
(one worker); `run()` starts the workers and adds up their results.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

from bench.client import ProtocolError
from bench.wrk import WrkResult


def _worker(host: str, port: int, connections: int, seconds: float, paths: list[str],
            accept: str) -> dict[str, object]:
    requests = [f"HEAD {p} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: {accept}\r\n\r\n".encode()
                for p in paths]
    sel = selectors.DefaultSelector()
    # sock -> [sent_at, buffer, next request index, the server said it will close]
    state: dict[socket.socket, list] = {}
    for n in range(connections):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        state[s] = [time.perf_counter(), b"", n, False]
        s.send(requests[n % len(requests)])
        sel.register(s, selectors.EVENT_READ)
    latencies: list[float] = []
    non2xx = errors = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and state:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            st = state[s]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                # A close after an answer that said so (a 503 past capacity,
                # counted there) is no socket error.
                errors += 0 if st[3] else 1
                sel.unregister(s)
                s.close()
                del state[s]
                continue
            st[1] += data
            end = st[1].find(b"\r\n\r\n")
            if end < 0:
                continue
            now = time.perf_counter()
            latencies.append(now - st[0])
            if st[1][9:10] != b"2":
                non2xx += 1
            st[3] = b"\r\nconnection: close" in st[1][:end].lower()
            st[1] = st[1][end + 4:]
            st[2] += 1
            st[0] = now
            s.send(requests[st[2] % len(requests)])
    for s in state:
        s.close()
    return {"latencies": latencies, "non2xx": non2xx, "errors": errors,
            "timeouts": len(state) if not latencies else 0}


def run(host: str, port: int, paths: list[str], clients: int, seconds: float,
        accept: str = "*/*", processes: int = 2) -> WrkResult:
    processes = max(1, min(processes, clients))
    shares = [clients // processes + (1 if i < clients % processes else 0)
              for i in range(processes)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.headload", host, str(port),
                               str(n), str(seconds), accept, *paths],
                              stdout=subprocess.PIPE, text=True) for n in shares]
    docs = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise ProtocolError(f"HEAD load generator failed ({p.returncode})",
                                method="HEAD", url=f"http://{host}:{port}{paths[0]}")
        docs.append(json.loads(out))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies = sorted(x for d in docs for x in d["latencies"])

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(
        clients=clients,
        rate=len(latencies) / seconds,
        p50_ms=pct(50), p99_ms=pct(99), max_ms=latencies[-1] * 1000 if latencies else 0.0,
        non2xx=sum(d["non2xx"] for d in docs),
        socket_errors=sum(d["errors"] for d in docs),
        timeouts=sum(d["timeouts"] for d in docs),
        generator_cpu=round(cpu / (wall * (os.cpu_count() or 1)), 3),
    )


if __name__ == "__main__":
    host, port, conns, secs, accept, *paths = sys.argv[1:]
    print(json.dumps(_worker(host, int(port), int(conns), float(secs), paths, accept)))

"""Bounded concurrent load: N threads, each with its own keep-alive connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.client import Client


@dataclass
class LoadResult:
    ops: int  # operations completed
    seconds: float  # wall time from the start barrier to the last completion
    latencies: list[float]  # seconds, one per completed operation
    truncated: bool  # the time limit stopped the run before ``count`` operations

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of latencies, in seconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]


def run_concurrent(
    base_url: str,
    clients: int,
    count: int,
    time_limit: float,
    op: Callable[[Client, int], None],
) -> LoadResult:
    """Run ``op(client, i)`` for i in [0, count) on ``clients`` threads.

    Bounded twice: by ``count`` and by ``time_limit`` seconds. The first
    exception (typically a ProtocolError) stops every worker and is re-raised.
    """
    lock = threading.Lock()
    next_index = 0
    stop = threading.Event()
    errors: list[BaseException] = []
    latencies: list[list[float]] = [[] for _ in range(clients)]
    finished_at: list[float] = [0.0] * clients
    # Connections are opened lazily by the first request; the barrier only
    # makes all workers start together so the clock measures steady load.
    barrier = threading.Barrier(clients + 1)
    deadline = 0.0

    def claim() -> int | None:
        nonlocal next_index
        with lock:
            if stop.is_set() or next_index >= count or time.perf_counter() > deadline:
                return None
            i = next_index
            next_index += 1
            return i

    def worker(slot: int) -> None:
        mine = latencies[slot]
        try:
            with Client(base_url) as client:
                barrier.wait()
                while (i := claim()) is not None:
                    t0 = time.perf_counter()
                    op(client, i)
                    mine.append(time.perf_counter() - t0)
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:  # re-raised in the caller
            with lock:
                errors.append(exc)
            stop.set()
        finally:
            finished_at[slot] = time.perf_counter()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    deadline = time.perf_counter() + time_limit
    started = time.perf_counter()
    barrier.wait()
    try:
        for t in threads:
            t.join()
    except BaseException:
        stop.set()  # Ctrl-C: let workers finish their current request and leave
        raise
    if errors:
        raise errors[0]
    done = sum(len(x) for x in latencies)
    elapsed = max(finished_at) - started
    return LoadResult(done, elapsed, [v for x in latencies for v in x], truncated=done < count)

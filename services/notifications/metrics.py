"""The dispatcher's Prometheus metrics, per endpoint.

Counters count what this process did. The queue gauges (``queued``,
``pending``, ``lag``, ``dead_letters``) are read from Redis when scraped, so
every dispatcher reports the same, whole-deployment numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.notifications.queue import EndpointQueue

log = logging.getLogger("dockyard.notifications.metrics")


class DispatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivered = Counter("dockyard_notifications_delivered_total",
                                 "events an endpoint took (2xx)", ["endpoint"], registry=r)
        self.failed = Counter("dockyard_notifications_failed_total",
                              "POSTs that failed (non-2xx, refused, timed out)", ["endpoint"],
                              registry=r)
        self.retries = Counter("dockyard_notifications_retries_total",
                               "POSTs sent again after a failure", ["endpoint"], registry=r)
        self.dead_lettered = Counter("dockyard_notifications_dead_lettered_total",
                                     "events moved to dead letters after max_age",
                                     ["endpoint"], registry=r)
        self.filtered = Counter("dockyard_notifications_filtered_total",
                                "events an endpoint's filters left out", ["endpoint"],
                                registry=r)
        self.retrying = Gauge("dockyard_notifications_retrying",
                              "events this process is retrying now", ["endpoint"], registry=r)
        self.latency = Histogram(
            "dockyard_notifications_delivery_latency_seconds",
            "from an event's recording to its endpoint's 2xx", ["endpoint"], registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
        self.post_seconds = Histogram(
            "dockyard_notifications_post_duration_seconds", "time of one POST", ["endpoint"],
            registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

    def watch(self, queues: list[EndpointQueue]) -> None:
        self.registry.register(_QueueCollector(queues))


class _QueueCollector(Collector):
    def __init__(self, queues: list[EndpointQueue]) -> None:
        self._queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            name: GaugeMetricFamily(f"dockyard_notifications_{name}", doc, labels=["endpoint"])
            for name, doc in (
                ("queued", "events not yet delivered or dead-lettered (pending + lag)"),
                ("pending", "events a dispatcher took and has not finished"),
                ("lag", "events no dispatcher has taken yet"),
                ("dead_letters", "events in the endpoint's dead letters"),
            )
        }
        for q in self._queues:
            try:
                s = q.state()
            except redis.exceptions.RedisError as e:
                log.debug("queue state of %s unavailable: %s", q.group, e)
                continue
            families["queued"].add_metric([q.group], s["pending"] + s["lag"])
            families["pending"].add_metric([q.group], s["pending"])
            families["lag"].add_metric([q.group], s["lag"])
            families["dead_letters"].add_metric([q.group], s["dead_letters"])
        yield from families.values()

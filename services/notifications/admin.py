"""`dockyard events`: the queue state of each endpoint, and replay of dead letters."""

from __future__ import annotations

from typing import Any

import redis

from services.notifications.queue import EndpointQueue
from shared.user_events import stream_key


def _queue(client: redis.Redis, config: dict[str, Any], name: str) -> EndpointQueue:
    return EndpointQueue(client, config["index"]["redis"]["key_prefix"], name, "admin")


def status(client: redis.Redis, config: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configured endpoint, and one per group no longer configured."""
    prefix = config["index"]["redis"]["key_prefix"]
    names = [e["name"] for e in config["notifications"]["endpoints"]]
    try:
        groups = [g["name"].decode() for g in client.xinfo_groups(stream_key(prefix))]
    except redis.exceptions.ResponseError:
        groups = []
    rows = []
    for name in names + [g for g in groups if g not in names]:
        row = _queue(client, config, name).state()
        row["configured"] = name in names
        rows.append(row)
    return rows


def stream_length(client: redis.Redis, config: dict[str, Any]) -> int:
    return int(client.xlen(stream_key(config["index"]["redis"]["key_prefix"])))


def replay(client: redis.Redis, config: dict[str, Any], name: str,
           limit: int | None = None) -> int:
    return _queue(client, config, name).replay_dead_letters(limit)

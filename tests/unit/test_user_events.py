"""Events in distribution's notification format, pinned field by field against its
documentation (docs/notifications.md and notifications/event.go of distribution),
and the signature a receiver checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.notifications.delivery import sign, verify
from shared.user_events import (
    MEDIA_TYPE,
    Event,
    RequestRecord,
    Source,
    Target,
    envelope,
    rfc3339,
)


def _push() -> Event:
    return Event(
        "push",
        Target("library/test", "sha256:0123456789abcdef0",
               "application/vnd.docker.distribution.manifest.v2+json", 1,
               "http://example.com/v2/library/test/manifests/sha256:0123456789abcdef0",
               "latest"),
        RequestRecord("asdfasdf", "PUT", "test/0.1", "client.local", "registrycluster.local"),
        Source("hostname.local:port", "a53db899-3b4b-4a62-a067-8dd013beaca4"),
        actor="test-actor",
        id="asdf-asdf-asdf-asdf-0",
        timestamp=datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC),
    )


def test_the_documented_push_event_field_by_field() -> None:
    event = json.loads(_push().to_json())
    # Top level, in the order of distribution's Event struct.
    assert list(event) == ["id", "timestamp", "action", "target", "request", "actor", "source"]
    assert event["id"] == "asdf-asdf-asdf-asdf-0"
    assert event["timestamp"] == "2006-01-02T15:04:05Z"
    assert event["action"] == "push"
    # Descriptor fields first (mediaType, size, digest), then length (= size, kept for
    # old consumers), repository, url, tag.
    assert list(event["target"]) == ["mediaType", "size", "digest", "length", "repository",
                                     "url", "tag"]
    assert event["target"]["length"] == event["target"]["size"] == 1
    assert event["request"] == {"id": "asdfasdf", "addr": "client.local",
                                "host": "registrycluster.local", "method": "PUT",
                                "useragent": "test/0.1"}
    assert list(event["request"]) == ["id", "addr", "host", "method", "useragent"]
    assert event["actor"] == {"name": "test-actor"}
    assert event["source"] == {"addr": "hostname.local:port",
                               "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"}


def test_empty_fields_are_left_out_as_go_omitempty_does() -> None:
    event = json.loads(Event("delete", Target("r", tag="v1"), RequestRecord("", "DELETE"),
                             Source("h:1")).to_json())
    assert event["target"] == {"repository": "r", "tag": "v1"}
    # id, method and useragent have no omitempty in distribution: always there.
    assert event["request"] == {"id": "", "method": "DELETE", "useragent": ""}
    assert event["actor"] == {}


def test_mount_names_the_source_repository() -> None:
    target = Target("b", "sha256:1", "application/octet-stream", 3, "u",
                    from_repository="a").to_dict()
    assert list(target) == ["mediaType", "size", "digest", "length", "repository",
                            "fromRepository", "url"]


def test_envelope_and_media_type() -> None:
    one, two = _push().to_json(), Event("pull", Target("r"), RequestRecord("i", "GET"),
                                        Source("h:1")).to_json()
    body = json.loads(envelope([one, two]))
    assert list(body) == ["events"]
    assert [e["action"] for e in body["events"]] == ["push", "pull"]
    assert MEDIA_TYPE == "application/vnd.docker.distribution.events.v1+json"


def test_timestamps_are_rfc3339_utc() -> None:
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == \
        "2026-01-02T03:04:05.12Z"
    assert Event("push", Target("r"), RequestRecord("i", "PUT"), Source("h:1")) \
        .to_dict()["timestamp"].endswith("Z")


def test_ids_are_unique_per_event() -> None:
    events = [Event("push", Target("r"), RequestRecord("i", "PUT"), Source("h:1"))
              for _ in range(100)]
    assert len({e.id for e in events}) == 100


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = envelope([_push().to_json()])
    header = sign("s3cret", body)
    # Independent of dockyard's code: what a receiver computes with the standard library.
    import hashlib
    import hmac
    assert header == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)

"""The webhook dispatcher: delivers the user events queued in Redis to each endpoint.

Design rules (docs/webhooks.md tells users the same):

- **The queue is the Redis Stream** of `shared.user_events`, written by the
  index in the same step as the change an event reports. Nothing is held only
  in a dispatcher's memory: an event leaves the queue of an endpoint (XACK)
  only once the endpoint answered 2xx, or once it went to that endpoint's
  dead letters.
- **One consumer group per endpoint, one worker thread per endpoint and
  process** (`worker.EndpointWorker`). A slow or dead endpoint holds up
  nobody but itself: not the other endpoints, and not the registry, which
  only ever appends to the stream.
- **Any number of dispatchers** (`dockyard notifications`, and one under
  `dockyard serve`) share the groups: Redis gives each new event to one of
  them. The events a dispatcher took and did not finish (it was killed) are
  taken over by another after ``notifications.claim_idle`` seconds, or at
  once by the same consumer name when it starts again.
- **At least once.** A dispatcher killed after the endpoint answered but
  before the acknowledgement reached Redis sends those events again. Each
  event's ``id`` never changes, so receivers deduplicate by it.
- **Order.** One worker sends one batch at a time and retries it until it is
  taken or dead-lettered, so with one dispatcher an endpoint sees events in
  the order they were recorded. With several, batches may overlap.
"""

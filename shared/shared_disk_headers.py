"""The internal headers of the shared-disk handover between a router and storage.

See `services.router.shared_disk` for the scheme. A router strips every
``X-Dockyard-*`` header a client sends, so these only ever come from dockyard.
"""

from __future__ import annotations

# Router -> storage, on a blob GET: what the router can send itself instead of storage
# sending the bytes, comma-separated: "file" (a file of a shared disk), "url" (an object
# of the object store, `services.router.store_fetch`).
ACCEL_REQUEST = "X-Dockyard-Accel"
# Storage -> router: the blob's path, and the byte range to send from it.
ACCEL_FILE = "X-Dockyard-File"
ACCEL_OFFSET = "X-Dockyard-Offset"
ACCEL_LENGTH = "X-Dockyard-Length"
# Storage -> router: a presigned URL of the object store to GET that byte range from.
FETCH_URL = "X-Dockyard-Fetch-Url"
# Router -> storage, on an upload: the spool file in tmp/ holding the body, and its length.
SPOOL_FILE = "X-Dockyard-Body-File"
SPOOL_LENGTH = "X-Dockyard-Body-Length"

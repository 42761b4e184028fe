"""The internal headers of the shared-disk handover between a router and storage.

See `services.router.shared_disk` for the scheme. A router strips every
``X-Dockyard-*`` header a client sends, so these only ever come from dockyard.
"""

from __future__ import annotations

# Router -> storage, on a blob GET: "file" asks for the file's name instead of its bytes.
ACCEL_REQUEST = "X-Dockyard-Accel"
# Storage -> router: the blob's path, and the byte range to send from it.
ACCEL_FILE = "X-Dockyard-File"
ACCEL_OFFSET = "X-Dockyard-Offset"
ACCEL_LENGTH = "X-Dockyard-Length"
# Router -> storage, on an upload: the spool file in tmp/ holding the body, and its length.
SPOOL_FILE = "X-Dockyard-Body-File"
SPOOL_LENGTH = "X-Dockyard-Body-Length"

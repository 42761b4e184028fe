"""What a chunked upload's PUT costs when the running hash is on the replica that
finishes it, and when it is not (the session moved, or the process restarted):
`UploadStore` on two backend objects sharing one bucket (or one directory), on a real
SeaweedFS started for the run (tests/support/seaweedfs.py).

    PYTHONPATH=. .venv/bin/python scripts/s3_rehash_cost.py [MiB]

Numbers go in docs/object-storage.md with their date and machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

from services.storage.backends.filesystem import FilesystemBackend
from services.storage.backends.s3 import S3Backend
from services.storage.blobstore import BlobStore
from services.storage.bodies import Body
from services.storage.paths import Keys, Layout
from services.storage.uploads import UploadStore
from shared.validation import Digest
from tests.support.seaweedfs import SeaweedServer

MIB = 1 << 20
CHUNK = 32 * MIB


def main() -> None:
    size = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 128 * MIB
    with tempfile.TemporaryDirectory() as scratch:
        layout = Layout(Path(scratch) / "root")
        layout.create()
        weed = SeaweedServer(Path(scratch) / "weed").start()
        try:
            cfg = {**weed.access.storage_config("rehash"), "part_size": 8 * MIB,
                   "redirect": False, "timeout": 30.0, "verify_tls": True}

            def store(kind: str) -> UploadStore:
                backend = (S3Backend(cfg, layout.tmp) if kind == "s3"
                           else FilesystemBackend(layout))
                return UploadStore(layout, BlobStore(layout, backend),
                                   max_per_repository=10, max_age=3600)

            for kind in ("s3", "filesystem"):
                for moved in (False, True):
                    first, other = store(kind), store(kind)
                    data = os.urandom(size)
                    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
                    upload_id = first.start("measure/x")
                    started = time.monotonic()
                    offset = 0
                    for i in range(0, size, CHUNK):
                        piece = data[i:i + CHUNK]
                        offset = first.append(upload_id, "measure/x",
                                              Body(len(piece), stream=io.BytesIO(piece)), offset)
                    appended = time.monotonic() - started
                    started = time.monotonic()
                    (other if moved else first).finish(upload_id, "measure/x", digest,
                                                       Body(0, stream=io.BytesIO(b"")))
                    finished = time.monotonic() - started
                    where = "another replica" if moved else "the same replica"
                    print(f"{kind:10} {size // MIB} MiB in {CHUNK // MIB} MiB chunks, PUT on "
                          f"{where}: appends {appended:.2f}s, finish {finished:.2f}s")
                    first.backend.delete(Keys.blob(digest))
        finally:
            weed.stop()


if __name__ == "__main__":
    main()

"""Looking into the bucket behind a dockyard on the S3 backend, as the fault tests'
counterpart of inspecting the storage root on disk.

The keys are those of `services.storage.paths.Keys` under the configured prefix:
``blobs/<algorithm>/<first two hex>/<hex>``, ``repositories/<name>/...``,
``uploads/<id>/...`` (an upload session) and ``locks/...``. Multipart uploads in
progress are not objects; `multipart_uploads` lists them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from tests.support.processes import Dockyard
from tests.support.seaweedfs import S3Access, bucket_of

_BLOB_KEY = re.compile(r"blobs/(sha256|sha512)/([0-9a-f]{2})/([0-9a-f]+)")


@dataclass(frozen=True)
class BucketView:
    access: S3Access
    bucket: str
    prefix: str

    @classmethod
    def of(cls, dockyard: Dockyard) -> BucketView:
        found = bucket_of(dockyard.env)
        assert found is not None, "this dockyard is not on the S3 backend"
        return cls(*found)

    def _client(self) -> Any:
        return self.access.client(timeout=10.0)

    def keys(self, under: str = "") -> list[str]:
        """Every object key below `under`, relative to the prefix, sorted."""
        client, found, token = self._client(), [], {}
        while True:
            page = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + under,
                                          **token)
            found += [item["Key"][len(self.prefix):] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, key: str) -> bytes:
        return self._client().get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def blob_key(self, digest: str) -> str:
        algorithm, hexpart = digest.split(":", 1)
        return f"blobs/{algorithm}/{hexpart[:2]}/{hexpart}"

    def has_blob(self, digest: str) -> bool:
        return self.blob_key(digest) in self.keys(self.blob_key(digest))

    def keys_naming(self, digest: str) -> list[str]:
        """Every key that contains the digest's hex: the blob, links, nothing else."""
        hexpart = digest.split(":", 1)[1]
        return [k for k in self.keys() if hexpart in k]

    def assert_blobs_intact(self) -> set[str]:
        """Every object under blobs/ sits at the key of its own content's digest: a
        partial or corrupt blob fails here. Returns the digests found."""
        found = set()
        for key in self.keys("blobs/"):
            m = _BLOB_KEY.fullmatch(key)
            assert m is not None, f"stray object under blobs/: {key}"
            algorithm, two, hexpart = m.groups()
            assert two == hexpart[:2], f"misplaced blob {key}"
            assert hashlib.new(algorithm, self.read(key)).hexdigest() == hexpart, \
                f"blob {key} does not hash to its name"
            found.add(f"{algorithm}:{hexpart}")
        return found

    def multipart_uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads begun under the prefix and neither completed nor aborted."""
        page = self._client().list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return list(page.get("Uploads", []))

    def parts_uploaded(self) -> int:
        """Parts uploaded so far to every open multipart upload under the prefix."""
        client, count = self._client(), 0
        for upload in self.multipart_uploads():
            page = client.list_parts(Bucket=self.bucket, Key=upload["Key"],
                                     UploadId=upload["UploadId"])
            count += len(page.get("Parts", []))
        return count

    def assert_blob_intact(self, digest: str) -> None:
        algorithm, hexpart = digest.split(":", 1)
        assert hashlib.new(algorithm, self.read(self.blob_key(digest))).hexdigest() == hexpart

    def assert_session_gone(self, upload_id: str) -> None:
        """Nothing of one upload session is left: objects, marker, multipart upload."""
        assert self.keys(f"uploads/{upload_id}/") == []
        markers = [k for k in self.keys("repositories/") if k.endswith(f"/_uploads/{upload_id}")]
        assert markers == [], markers
        mine = [u for u in self.multipart_uploads()
                if u["Key"].startswith(f"{self.prefix}uploads/{upload_id}/")]
        assert mine == [], mine

    def assert_no_debris(self) -> None:
        """No upload session, upload marker or multipart upload left open."""
        assert self.keys("uploads/") == []
        markers = [k for k in self.keys("repositories/") if "/_uploads/" in k]
        assert markers == [], markers
        assert self.multipart_uploads() == []

"""The SeaweedFS the S3 tests run on answers as S3 does: signed puts and gets, multipart
uploads with 5 MiB parts, refusal of a wrong key. (Its distributed mode, the loss and
return of a volume server, is exercised by tests/reliability/test_s3_volume_loss.py.)"""

from __future__ import annotations

import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from tests.support.seaweedfs import S3Access, SeaweedServer

MiB = 1024 * 1024


def test_put_get_and_range(seaweedfs: SeaweedServer, s3_bucket: str) -> None:
    s3 = seaweedfs.access.client()
    body = os.urandom(300_000)
    s3.put_object(Bucket=s3_bucket, Key="a/b/c", Body=body)
    assert s3.get_object(Bucket=s3_bucket, Key="a/b/c")["Body"].read() == body
    part = s3.get_object(Bucket=s3_bucket, Key="a/b/c", Range="bytes=10-19")
    assert part["Body"].read() == body[10:20]
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="a/")
    assert [o["Key"] for o in listed["Contents"]] == ["a/b/c"]


def test_multipart_upload(seaweedfs: SeaweedServer, s3_bucket: str) -> None:
    s3 = seaweedfs.access.client()
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key="big")["UploadId"]
    done = []
    for n, data in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=s3_bucket, Key="big", UploadId=upload, PartNumber=n,
                              Body=data)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    listed = s3.list_multipart_uploads(Bucket=s3_bucket)
    assert [u["UploadId"] for u in listed.get("Uploads", [])] == [upload]
    s3.complete_multipart_upload(Bucket=s3_bucket, Key="big", UploadId=upload,
                                 MultipartUpload={"Parts": done})
    got = s3.get_object(Bucket=s3_bucket, Key="big")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(parts)).digest()


def test_aborted_multipart_upload_leaves_nothing(seaweedfs: SeaweedServer,
                                                 s3_bucket: str) -> None:
    s3 = seaweedfs.access.client()
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=s3_bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=s3_bucket, Key="gone", UploadId=upload)
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    assert s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


def test_wrong_secret_is_refused(seaweedfs: SeaweedServer, s3_bucket: str) -> None:
    right = seaweedfs.access
    wrong = S3Access(right.endpoint, right.access_key, right.secret_key + "x")
    with pytest.raises(ClientError) as e:
        wrong.client().put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    anonymous = S3Access(right.endpoint, "", "")
    with pytest.raises(ClientError):
        anonymous.client().list_objects_v2(Bucket=s3_bucket)

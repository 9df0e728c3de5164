"""Content-addressed objects in S3, made visible only once verified, served by presigned redirects.

Small content goes up in one PutObject carrying its SHA-256, which S3 checks itself. Larger content goes up as a
multipart upload, hashed as it streams; CompleteMultipartUpload is called only if the digest matches, so an
unverified object never exists (S3 cannot check a whole-object SHA-256 of a multipart upload: composite checksums
only). The bucket's lifecycle rule removes uploads abandoned by a crash.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import ClientError

from core.digest import Digest, DigestVerifier
from core.errors import DigestMismatch, Unavailable
from core.expiring import Expiring
from core.ports import Redirect

MIB = 1 << 20
MIN_PART_SIZE = 8 * MIB  # S3's minimum is 5 MiB
MAX_PART_SIZE = 128 * MIB
MAX_PARTS = 10_000
# Parts start at 8 MiB and double every 1,000 parts up to 128 MiB: 10,000 parts then hold about 870 GiB, far past
# ECR's 52,000 MiB layer limit, while a small blob costs one 8 MiB buffer and a huge one at most 128 MiB.
PART_GROWTH_EVERY = 1_000
PRESIGN_MARGIN_SECONDS = 60
DELETE_BATCH = 1000
# Verifying stores: how long a HEAD that found an object stands for it, and how many such answers are kept.
SEEN_SECONDS = 600.0
SEEN_MAX = 50_000


def _not_found(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _already_exists(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict")


class S3BlobWriter:
    def __init__(self, client: Any, bucket: str, key: str, digest: Digest) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._verifier = DigestVerifier(digest)
        self._buffer = bytearray()
        self._part_size = MIN_PART_SIZE
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, chunk: bytes) -> None:
        self._verifier.update(chunk)
        self._buffer += chunk
        while len(self._buffer) >= self._part_size:
            self._upload_part(bytes(self._buffer[: self._part_size]))
            del self._buffer[: self._part_size]

    def commit(self) -> int:
        if not self._verifier.matches():
            self.abort()
            raise DigestMismatch(f"content does not match {self._verifier.expected}")
        try:
            if self._upload_id is None:
                self._put_whole()
            else:
                if self._buffer:
                    self._upload_part(bytes(self._buffer))
                self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    IfNoneMatch="*",
                )
        except ClientError as exc:
            self.abort()
            if not _already_exists(exc):  # else the same verified content won a race: nothing to do
                raise Unavailable(f"storing {self._verifier.expected} failed") from exc
        return self._verifier.size

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(ClientError):  # the lifecycle rule cleans up what this could not
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=upload_id)

    def _put_whole(self) -> None:
        extra = {}
        if self._verifier.expected.algorithm == "sha256":
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(self._verifier.expected.encoded)).decode()
        self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), IfNoneMatch="*", **extra)

    def _upload_part(self, data: bytes) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise Unavailable("blob too large for a multipart upload")
        try:
            if self._upload_id is None:
                created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = created["UploadId"]
            answer = self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
            )
        except ClientError as exc:  # the caller aborts the upload
            raise Unavailable(f"storing {self._verifier.expected} failed") from exc
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        if number % PART_GROWTH_EVERY == 0:
            self._part_size = min(self._part_size * 2, MAX_PART_SIZE)


class S3BlobStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        presign_seconds: int = 600,
        credentials_expiry: Callable[[], float | None] = lambda: None,
        verify_stored: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`verify_stored`: redirect only to objects this bucket holds (one HEAD, remembered for a while). A stack in
        a replica Region needs it: the records it reads are global, the bytes its bucket holds arrive later, or were
        expired by the bucket's own lifecycle."""
        self._client = client
        self._bucket = bucket
        self._presign_seconds = presign_seconds
        self._credentials_expiry = credentials_expiry
        self._seen: Expiring[Digest, bool] | None = Expiring(SEEN_MAX, SEEN_SECONDS, clock) if verify_stored else None

    @staticmethod
    def key(digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.encoded}"

    def exists(self, digest: Digest) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=self.key(digest))
            return True
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise Unavailable("blob storage unavailable") from exc

    def read(self, digest: Digest) -> bytes | None:
        try:
            answer = self._client.get_object(Bucket=self._bucket, Key=self.key(digest))
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise Unavailable("blob storage unavailable") from exc
        data: bytes = answer["Body"].read()
        return data

    def writer(self, digest: Digest) -> S3BlobWriter:
        return S3BlobWriter(self._client, self._bucket, self.key(digest), digest)

    def delete(self, digests: Sequence[Digest]) -> None:
        """DeleteObjects, 1,000 keys a call (S3's maximum)."""
        keys = [{"Key": self.key(digest)} for digest in digests]
        for start in range(0, len(keys), DELETE_BATCH):
            try:
                answer = self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": keys[start : start + DELETE_BATCH], "Quiet": True}
                )
            except ClientError as exc:
                raise Unavailable("blob storage unavailable") from exc
            if answer.get("Errors"):
                raise Unavailable(f"could not delete {len(answer['Errors'])} objects")

    def locate(self, digest: Digest, *, head: bool) -> Redirect | None:
        """A URL signed for the method the client will use: S3 refuses a HEAD on a GET-signed URL. None only when
        verifying, for an object this bucket does not hold."""
        if self._seen is not None and self._seen.get(digest) is None:
            if not self.exists(digest):
                return None
            self._seen.put(digest, True)
        url = self._client.generate_presigned_url(
            "head_object" if head else "get_object",
            Params={"Bucket": self._bucket, "Key": self.key(digest)},
            ExpiresIn=self._expiry(),
        )
        return Redirect(url)

    def _expiry(self) -> int:
        """A presigned URL dies with the credentials that signed it: never promise more than they have left."""
        expiry = self._credentials_expiry()
        if expiry is None:
            return self._presign_seconds
        remaining = int(expiry - time.time()) - PRESIGN_MARGIN_SECONDS
        return max(1, min(self._presign_seconds, remaining))

"""What the service counts, by name: one list, so /metrics, `pullthrough stats`, the status page, the CloudWatch
dashboard and its alarms all speak of the same things (a test holds the template to it).

One outcome per client request: a tag request is a TAG_HIT (no upstream request), TAG_REVALIDATED (one HEAD, the
digest unchanged), TAG_MISS (the tag was new or moved) or STALE_SERVED (the upstream failed; the cached copy
answered); a manifest by digest a MANIFEST_HIT or MANIFEST_MISS; a blob a BLOB_HIT or BLOB_MISS.
"""

from __future__ import annotations

TAG_HIT = "TagHit"
TAG_REVALIDATED = "TagRevalidated"
TAG_MISS = "TagMiss"
STALE_SERVED = "StaleServed"
MANIFEST_HIT = "ManifestHit"
MANIFEST_MISS = "ManifestMiss"
BLOB_HIT = "BlobHit"
BLOB_MISS = "BlobMiss"
IMAGE_PULL = "ImagePull"  # a manifest GET by tag: what a person calls a pull
UPSTREAM_BYTES = "UpstreamBytes"  # manifest and blob bytes fetched from upstreams and stored
SERVED_BYTES = "ServedBytes"  # bytes answered from the cache (a redirected blob: the bytes S3 serves for it)
UPSTREAM_FAILURE = "UpstreamFailure"  # a failure of a whole upstream (refused, timed out, 429, 5xx)
UPSTREAM_BREAKER_OPENED = "UpstreamBreakerOpened"  # an upstream left alone after failures in a row
REFRESH_UNCHANGED = "RefreshUnchanged"
REFRESH_UPDATED = "RefreshUpdated"
REFRESH_DEFERRED = "RefreshDeferred"
REFRESH_FAILED = "RefreshFailed"
LIFECYCLE_EXPIRED_IMAGES = "LifecycleExpiredImages"
LIFECYCLE_RECLAIMED_BYTES = "LifecycleReclaimedBytes"

HITS = (TAG_HIT, MANIFEST_HIT, BLOB_HIT)
UPSTREAM_ANSWERED = (TAG_REVALIDATED, TAG_MISS, MANIFEST_MISS, BLOB_MISS)  # a client request that asked an upstream
BYTES = (UPSTREAM_BYTES, SERVED_BYTES, LIFECYCLE_RECLAIMED_BYTES)
ALL = (*HITS, *UPSTREAM_ANSWERED, STALE_SERVED, IMAGE_PULL, UPSTREAM_BYTES, SERVED_BYTES, UPSTREAM_FAILURE,
       UPSTREAM_BREAKER_OPENED, REFRESH_UNCHANGED, REFRESH_UPDATED, REFRESH_DEFERRED, REFRESH_FAILED,
       LIFECYCLE_EXPIRED_IMAGES, LIFECYCLE_RECLAIMED_BYTES)  # fmt: skip

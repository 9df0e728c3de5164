"""One exception per OCI error code; the HTTP layer renders them as {"errors": [...]}."""

from __future__ import annotations

from typing import Any, ClassVar


class RegistryError(Exception):
    code: ClassVar[str] = "UNKNOWN"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(self, message: str | None = None, *, detail: Any = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)

    def headers(self) -> dict[str, str]:
        return {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return {"errors": [error]}


class BlobUnknown(RegistryError):
    code, http_status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class ManifestUnknown(RegistryError):
    code, http_status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown"


class NameUnknown(RegistryError):
    code, http_status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class NameInvalid(RegistryError):
    code, http_status, default_message = "NAME_INVALID", 400, "invalid repository name"


class DigestInvalid(RegistryError):
    code, http_status, default_message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestInvalid(RegistryError):
    code, http_status, default_message = "MANIFEST_INVALID", 400, "manifest invalid"


class TargetTooLong(RegistryError):
    code, http_status, default_message = "SIZE_INVALID", 414, "request target too long"


class HeadersTooLarge(RegistryError):
    code, http_status, default_message = "SIZE_INVALID", 431, "request headers too large"


class PaginationNumberInvalid(RegistryError):
    code, http_status, default_message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class RangeInvalid(RegistryError):
    code, http_status, default_message = "RANGE_INVALID", 416, "requested range not satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for a blob of {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class Unauthorized(RegistryError):
    code, http_status, default_message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, http_status, default_message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(RegistryError):
    code, http_status, default_message = (
        "UNSUPPORTED",
        405,
        "the operation is unsupported: this registry is a read-only cache",
    )


class TooManyRequests(RegistryError):
    code, http_status, default_message = "TOOMANYREQUESTS", 429, "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(RegistryError):
    code, http_status, default_message = "UNAVAILABLE", 503, "service unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 10, whole_upstream: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Set by the upstream client when the failure says the upstream as a whole is down (refused, reset or timed
        # out connections, 502/503/504), not that one request went wrong: only these open the circuit breaker.
        self.whole_upstream = whole_upstream

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DigestMismatch(RegistryError):
    """Content (always from an upstream, this cache being read-only) did not match its digest: a bad gateway."""

    code, http_status, default_message = "DIGEST_INVALID", 502, "upstream content did not match its digest"


class BadUpstreamManifest(RegistryError):
    """The upstream sent something that is not a registry manifest (not JSON, or a media type such as text/html that
    a browser would render from the cache's origin): a bad gateway, never stored."""

    code, http_status, default_message = "MANIFEST_INVALID", 502, "the upstream sent an invalid manifest"

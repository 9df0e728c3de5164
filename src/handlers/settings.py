"""The settings of each mode, typed, each built in one place: the local server's from its command-line flags (and
in its worker processes from the one environment variable `serve` writes for them), the AWS functions' from the
environment the SAM template sets. The composition roots read them; nothing else reads the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from core.durations import parse_duration

TOKEN_SERVICE = "pullthrough"  # the `service` of the cache's own registry tokens
DEFAULT_MISS_BUDGET = 600  # upstream misses per client per minute
DEFAULT_UPSTREAM_TIMEOUT_SECONDS = 30.0
# How long orphaned bytes are kept before deletion. Locally a reader that opened a file keeps reading it after the
# unlink: the grace covers only the moment between finding a blob and opening it. On AWS a presigned URL handed out
# before lives up to PresignExpirySeconds (at most an hour) and a fill up to 15 minutes.
LOCAL_GRACE_SECONDS = 60
LOCAL_SWEEP_INTERVAL_SECONDS = 3600
AWS_GRACE_SECONDS = 7200

AuthMode = Literal["token", "none"]
MetricsAccess = Literal["loopback", "everyone", "off"]


@dataclass(frozen=True)
class DataDir:
    """The one owner of a local data directory's layout."""

    root: Path

    @property
    def metadata_db(self) -> Path:
        return self.root / "metadata.sqlite3"

    @property
    def signing_keys(self) -> Path:
        return self.root / "token-signing-keys.json"

    @property
    def metrics(self) -> Path:
        """The Prometheus client's files, one set per process of a running `serve` (emptied when it starts)."""
        return self.root / "metrics"

    def create(self) -> DataDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class UpstreamSettings:
    """How the cache talks to upstreams, in both modes."""

    timeout_seconds: float = DEFAULT_UPSTREAM_TIMEOUT_SECONDS  # to connect, for an answer, per progress window
    allow_private: bool = False  # loopback and private addresses (a registry on your own network, tests)


@dataclass(frozen=True)
class LocalSettings:
    data_dir: DataDir
    auth: AuthMode
    public_url: str  # where clients reach the cache: the token realm is built from it, never from a Host header
    rules_file: Path | None = None  # without, the built-in rules and those stored with `pullthrough rules`
    miss_budget: int = DEFAULT_MISS_BUDGET
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    log_level: str = "info"
    max_cache_size: int | None = None  # bytes; over it, the least recently pulled images are evicted
    gc_grace_seconds: int = LOCAL_GRACE_SECONDS
    gc_interval_seconds: int = LOCAL_SWEEP_INTERVAL_SECONDS
    metrics_access: MetricsAccess = "loopback"  # who may read /metrics

    WORKER_ENVIRONMENT = "PULLTHROUGH_SERVE_SETTINGS"

    def for_workers(self) -> dict[str, str]:
        """The environment that carries these settings to the server's worker processes."""
        document = asdict(self)
        document["data_dir"] = str(self.data_dir.root)
        document["rules_file"] = str(self.rules_file) if self.rules_file else None
        return {self.WORKER_ENVIRONMENT: json.dumps(document)}

    @classmethod
    def from_workers_environment(cls, environment: Mapping[str, str] = os.environ) -> LocalSettings:
        document = json.loads(environment[cls.WORKER_ENVIRONMENT])
        return cls(
            data_dir=DataDir(Path(document["data_dir"])),
            auth=document["auth"],
            public_url=document["public_url"],
            rules_file=Path(document["rules_file"]) if document["rules_file"] else None,
            miss_budget=document["miss_budget"],
            upstream=UpstreamSettings(**document["upstream"]),
            log_level=document["log_level"],
            max_cache_size=document["max_cache_size"],
            gc_grace_seconds=document["gc_grace_seconds"],
            gc_interval_seconds=document["gc_interval_seconds"],
            metrics_access=document["metrics_access"],
        )


USAGE_FLUSH_VARIABLE = "PULLTHROUGH_USAGE_FLUSH_SECONDS"


@dataclass(frozen=True)
class AwsSettings:
    table: str
    bucket: str = ""
    fill_function: str | None = None
    builtin_rules: str = ""  # comma-separated preset names (the BuiltinUpstreams parameter)
    builtin_expire_unpulled: int | None = None  # applied to the built-in rules (BuiltinExpireUnpulled)
    sync_fill_max_bytes: int = 64 << 20
    presign_seconds: int = 600
    auth: AuthMode = "token"
    signing_keys_secret: str | None = None
    public_url: str | None = None  # default: the domain API Gateway received the request on
    miss_budget: int = DEFAULT_MISS_BUDGET
    refresh_window_days: float = 30.0
    refresh_limit: int = 500
    # How often a container writes its usage totals: each write is one small item per rule and hour it saw traffic
    # for, and a container shut down loses at most this much of them.
    usage_flush_seconds: float = 60.0
    sweep_grace_seconds: int = AWS_GRACE_SECONDS
    sweep_repositories_per_run: int = 10000
    endpoint_url: str | None = None  # set when S3 and DynamoDB are emulated (moto), never on AWS
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    # A stack sharing a global table with other Regions: redirect only to objects its own bucket holds.
    verify_stored_bytes: bool = False

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] = os.environ) -> AwsSettings:
        env = environment
        auth = env.get("PULLTHROUGH_AUTH", "token")
        if auth not in ("token", "none"):
            raise ValueError(f"PULLTHROUGH_AUTH must be token or none, not {auth!r}")
        builtin_expiry = env.get("PULLTHROUGH_BUILTIN_EXPIRE_UNPULLED")
        return cls(
            table=env["PULLTHROUGH_TABLE_NAME"],
            bucket=env.get("PULLTHROUGH_BUCKET_NAME", ""),
            fill_function=env.get("PULLTHROUGH_FILL_FUNCTION_NAME") or None,
            builtin_rules=env.get("PULLTHROUGH_BUILTIN_RULES", ""),
            sync_fill_max_bytes=int(env.get("PULLTHROUGH_SYNC_FILL_MAX_BYTES", 64 << 20)),
            presign_seconds=int(env.get("PULLTHROUGH_PRESIGN_EXPIRY_SECONDS", 600)),
            auth="token" if auth == "token" else "none",
            signing_keys_secret=env.get("PULLTHROUGH_SIGNING_KEYS_SECRET") or None,
            public_url=(env.get("PULLTHROUGH_PUBLIC_URL") or "").rstrip("/") or None,
            miss_budget=int(env.get("PULLTHROUGH_MISS_BUDGET", DEFAULT_MISS_BUDGET)),
            refresh_window_days=float(env.get("PULLTHROUGH_REFRESH_WINDOW_DAYS", 30)),
            refresh_limit=int(env.get("PULLTHROUGH_REFRESH_LIMIT", 500)),
            usage_flush_seconds=float(env.get(USAGE_FLUSH_VARIABLE, 60)),
            builtin_expire_unpulled=parse_duration(builtin_expiry) if builtin_expiry else None,
            sweep_grace_seconds=int(env.get("PULLTHROUGH_SWEEP_GRACE_SECONDS", AWS_GRACE_SECONDS)),
            sweep_repositories_per_run=int(env.get("PULLTHROUGH_SWEEP_REPOSITORIES_PER_RUN", 10000)),
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            upstream=UpstreamSettings(allow_private=env.get("PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS") == "1"),
            verify_stored_bytes=env.get("PULLTHROUGH_VERIFY_STORED_BYTES") == "true",
        )

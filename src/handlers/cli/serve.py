"""`pullthrough serve`: the cache as a local registry (or, with --lambda, the Lambda code path)."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

import click
import uvicorn

from core.durations import parse_duration, parse_size
from core.rules import RuleInvalid
from handlers.cli.options import allow_private_option, data_dir_option, rules_file_option
from handlers.composition.local import metadata_store
from handlers.http.slow_clients import raise_file_limit
from handlers.logs import configure_logging
from handlers.presets import BUILTIN_RULES, PRESETS, with_stored_rules
from handlers.rules_file import load_rules
from handlers.settings import (
    DEFAULT_MISS_BUDGET,
    DEFAULT_UPSTREAM_TIMEOUT_SECONDS,
    LOCAL_GRACE_SECONDS,
    LOCAL_SWEEP_INTERVAL_SECONDS,
    USAGE_FLUSH_VARIABLE,
    AuthMode,
    AwsSettings,
    DataDir,
    LocalSettings,
    MetricsAccess,
    UpstreamSettings,
)
from pullthrough_adapters.local.prometheus import MULTIPROCESS_DIRECTORY


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int)
@data_dir_option
@rules_file_option
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--upstream-timeout", default=DEFAULT_UPSTREAM_TIMEOUT_SECONDS, show_default=True,
              type=click.FloatRange(0.1, 600), help="Seconds an upstream may take to connect or to answer, and the "
              "window in which a download must bring 64 KiB.")  # fmt: skip
@allow_private_option
@click.option(
    "--auth",
    type=click.Choice(["token", "none"]),
    help="token: pull keys and the registry token flow; none: anonymous. Default: none on loopback only.",
)
@click.option("--public-url", help="The URL clients reach the cache at (https://cache.example.com), for the token "
              "endpoint's address. Default: http://HOST:PORT; needed in token mode with a wildcard HOST.")  # fmt: skip
@click.option("--miss-budget", default=DEFAULT_MISS_BUDGET, show_default=True, type=click.IntRange(0),
              help="Requests each client (pull key, or address) may make the cache forward upstream per minute; "
              "0: no limit. Cached content is never limited.")  # fmt: skip
@click.option("--max-cache-size", help="Keep the cached content under this size (50GiB, 500MB): the least recently "
              "pulled images (never pinned ones) are evicted, in the background.")  # fmt: skip
@click.option("--gc-grace", default=f"{LOCAL_GRACE_SECONDS}s", show_default=True,
              help="Evicted or expired bytes are deleted this long after nothing records them: 30s, 10m.")  # fmt: skip
@click.option("--gc-interval", default=f"{LOCAL_SWEEP_INTERVAL_SECONDS // 3600}h", show_default=True,
              help="How often the server sweeps the images its rules let expire (expire_unpulled).")  # fmt: skip
@click.option("--metrics", "metrics_access", type=click.Choice(["loopback", "everyone", "off"]),
              help="Who may read /metrics: loopback clients (the default in token mode), everyone (the default in "
              "none mode, where the content is open anyway) or nobody.")  # fmt: skip
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@click.option("--lambda", "lambda_path", is_flag=True,
              help="Serve through the Lambda function's handler (API Gateway events, S3 and DynamoDB at "
              "AWS_ENDPOINT_URL): a development tool.")  # fmt: skip
@click.option("--table", default="pullthrough-local", show_default=True, help="DynamoDB table (--lambda only).")
@click.option("--bucket", default="pullthrough-local", show_default=True, help="S3 bucket (--lambda only).")
@click.option("--sync-fill-max-bytes", default=64 << 20, show_default=True, type=int,
              help="Largest blob a request copies itself (--lambda only); bigger go to the fill function.")  # fmt: skip
def serve(
    host: str, port: int, data_dir: Path, rules_file: Path | None, workers: int, upstream_timeout: float,
    allow_private_upstreams: bool, auth: AuthMode | None, public_url: str | None, miss_budget: int,
    max_cache_size: str | None, gc_grace: str, gc_interval: str, metrics_access: MetricsAccess | None,
    access_log: bool, log_level: str, lambda_path: bool, table: str, bucket: str, sync_fill_max_bytes: int,
) -> None:  # fmt: skip
    """Start the cache as a local registry."""
    mode: AuthMode = auth or ("none" if _loopback(host) else "token")
    try:
        cap = parse_size(max_cache_size) if max_cache_size else None
        grace = parse_duration(gc_grace)
        interval = parse_duration(gc_interval)
        if interval <= 0:
            raise ValueError("--gc-interval must be longer than 0s")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = LocalSettings(
        data_dir=DataDir(data_dir.resolve()),
        auth=mode,
        public_url=_public_url(public_url, host, port, token=mode == "token"),
        rules_file=rules_file.resolve() if rules_file else None,
        miss_budget=miss_budget,
        upstream=UpstreamSettings(upstream_timeout, allow_private_upstreams),
        log_level=log_level,
        max_cache_size=cap,
        gc_grace_seconds=grace,
        gc_interval_seconds=interval,
        metrics_access=metrics_access or ("loopback" if mode == "token" else "everyone"),
    )
    try:
        rules = load_rules(rules_file) if rules_file else None
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    if mode == "none":
        exposed = "" if _loopback(host) else ": anyone who can reach this port can pull through it"
        click.echo(f"auth: none (anonymous pulls{exposed})", err=True)
    else:
        click.echo("auth: token (create pull keys with `pullthrough keys create`)", err=True)
    if lambda_path:
        from handlers.devtools import lambda_emulator  # boto3 and Powertools: only here

        lambda_settings = AwsSettings(
            table=table, bucket=bucket, sync_fill_max_bytes=sync_fill_max_bytes, auth=mode,
            # with a rules file, its rules are stored in the table; without, every preset is enabled
            builtin_rules="" if rules_file else ",".join(PRESETS), miss_budget=miss_budget,
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),  # boto3's own variable, read by boto3 too
            upstream=settings.upstream,
            # one process here, not a fleet: by default `stats --table` sees every request at once
            usage_flush_seconds=float(os.environ.get(USAGE_FLUSH_VARIABLE, 0)),
        )  # fmt: skip
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        click.echo(f"pullthrough (Lambda path) on http://{host}:{port}; table {table}, bucket {bucket}", err=True)
        lambda_emulator.run(lambda_settings, rules, host, port, log_level)
        return
    shown = rules or with_stored_rules(BUILTIN_RULES, metadata_store(settings.data_dir).list_rules())
    configure_logging(log_level)
    prefixes = ", ".join(f"{rule.prefix or '(root)'} -> {rule.upstream}" for rule in shown)
    click.echo(f"pullthrough on http://{host}:{port} (data in {settings.data_dir.root}); rules: {prefixes}", err=True)
    raise_file_limit()
    os.environ.update(settings.for_workers())  # the one way into uvicorn's worker processes
    os.environ[MULTIPROCESS_DIRECTORY] = str(_fresh(settings.data_dir.metrics))
    uvicorn.run(
        "handlers.composition.local:app_for_worker",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        http="handlers.http.slow_clients:SlowClientGuard",  # httptools, with header timeouts
        loop="uvloop",
        timeout_keep_alive=30,
    )


def _fresh(directory: Path) -> Path:
    """An empty directory for this run's Prometheus files: counters start again with the server."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _public_url(given: str | None, host: str, port: int, *, token: bool) -> str:
    """Where clients reach the cache: given, or this address. Never the Host header a client sends, which would let
    it choose where other clients send their pull keys."""
    if given:
        if not given.startswith(("http://", "https://")):
            raise click.UsageError("--public-url must be an http(s) URL")
        return given.rstrip("/")
    if _unspecified(host) and token:
        raise click.UsageError(f"with --host {host or '(any)'}, give --public-url: the token endpoint's address")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _unspecified(host: str) -> bool:
    """0.0.0.0 or ::, which listen everywhere and so name no address a client could use."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

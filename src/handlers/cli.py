"""The `pullthrough` command."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click
import uvicorn

from adapters.local.metadata_store import SqliteMetadataStore
from adapters.upstream.addresses import ALLOW_PRIVATE_ENV
from adapters.upstream.client import TIMEOUT_ENV
from core.rules import RuleInvalid, RuleSet
from handlers.config import BUILTIN_RULES, PRESETS, load_rules, with_stored_rules
from handlers.keys_cli import keys
from handlers.lambda_local import serve as serve_events
from handlers.local import (
    AUTH_ENV,
    DATA_DIR_ENV,
    DEFAULT_MISS_BUDGET,
    LOG_LEVEL_ENV,
    MISS_BUDGET_ENV,
    PUBLIC_URL_ENV,
    RULES_FILE_ENV,
    build_local_refresher,
)
from handlers.logs import configure_logging
from handlers.rules_cli import rules
from handlers.slow_clients import raise_file_limit


@click.group()
def main() -> None:
    """pullthrough: a pull-through cache for container registries."""


main.add_command(rules)
main.add_command(keys)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--data-dir", default=".pullthrough", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML/JSON rules file; without it, the built-in rules for the public registries apply.")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--upstream-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds an upstream may take to connect or to send the next bytes.")  # fmt: skip
@click.option(
    "--allow-private-upstreams",
    is_flag=True,
    help="Let upstreams (and their redirects) be on loopback or private addresses: for local testing.",
)
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
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@click.option(
    "--lambda",
    "lambda_path",
    is_flag=True,
    help="Serve through the real Lambda handler (API Gateway events, S3 and DynamoDB at AWS_ENDPOINT_URL).",
)
@click.option("--table", default="pullthrough-local", show_default=True, help="DynamoDB table (--lambda only).")
@click.option("--bucket", default="pullthrough-local", show_default=True, help="S3 bucket (--lambda only).")
@click.option("--sync-fill-max-bytes", default=64 << 20, show_default=True, type=int,
              help="Largest blob a request copies itself (--lambda only); bigger go to the fill function.")  # fmt: skip
def serve(
    host: str, port: int, data_dir: Path, rules_file: Path | None, workers: int, upstream_timeout: float,
    allow_private_upstreams: bool, auth: str | None, public_url: str | None, miss_budget: int, access_log: bool,
    log_level: str, lambda_path: bool, table: str, bucket: str, sync_fill_max_bytes: int,
) -> None:  # fmt: skip
    """Start the cache as a local registry."""
    auth = auth or ("none" if _loopback(host) else "token")
    public_url = _public_url(public_url, host, port, token=auth == "token")  # a usage error before anything is set
    os.environ[AUTH_ENV] = auth
    os.environ[PUBLIC_URL_ENV] = public_url
    os.environ[MISS_BUDGET_ENV] = str(miss_budget)
    os.environ[LOG_LEVEL_ENV] = log_level
    if auth == "none":
        exposed = "" if _loopback(host) else ": anyone who can reach this port can pull through it"
        click.echo(f"auth: none (anonymous pulls{exposed})", err=True)
    else:
        click.echo("auth: token (create pull keys with `pullthrough keys create`)", err=True)
    os.environ[TIMEOUT_ENV] = str(upstream_timeout)
    if allow_private_upstreams:
        os.environ[ALLOW_PRIVATE_ENV] = "1"
    try:
        rules = load_rules(rules_file)
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    if lambda_path:
        _serve_lambda(host, port, rules_file, rules, table, bucket, sync_fill_max_bytes, log_level, auth)
        return
    data_dir = data_dir.resolve()
    os.environ[DATA_DIR_ENV] = str(data_dir)
    if rules_file is not None:
        os.environ[RULES_FILE_ENV] = str(rules_file.resolve())
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        rules = with_stored_rules(BUILTIN_RULES, SqliteMetadataStore(data_dir / "metadata.sqlite3").list_rules())
    configure_logging(log_level)
    prefixes = ", ".join(f"{rule.prefix or '(root)'} -> {rule.upstream}" for rule in rules)
    click.echo(f"pullthrough on http://{host}:{port} (data in {data_dir}); rules: {prefixes}", err=True)
    raise_file_limit()
    uvicorn.run(
        "handlers.local:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        http="handlers.slow_clients:SlowClientGuard",  # httptools, with header timeouts
        loop="uvloop",
        timeout_keep_alive=30,
    )


def _public_url(given: str | None, host: str, port: int, *, token: bool) -> str:
    """Where clients reach the cache: given, or this address. Never the Host header a client sends, which would let
    it choose where other clients send their pull keys."""
    if given:
        if not given.startswith(("http://", "https://")):
            raise click.UsageError("--public-url must be an http(s) URL")
        return given.rstrip("/")
    wildcard = _unspecified(host)
    if wildcard and token:
        raise click.UsageError(f"with --host {host or '(any)'}, give --public-url: the token endpoint's address")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_lambda(
    host: str,
    port: int,
    rules_file: Path | None,
    rules: RuleSet,
    table: str,
    bucket: str,
    sync_max: int,
    log_level: str,
    auth: str,
) -> None:
    """Set the environment the SAM template sets, prepare table and bucket, then serve the real handler."""
    from handlers.aws import AwsSettings, ensure_resources, ensure_signing_secret, store_rules  # boto3: only here

    os.environ.update({
        "PULLTHROUGH_TABLE_NAME": table,
        "PULLTHROUGH_BUCKET_NAME": bucket,
        "PULLTHROUGH_FILL_IN_PROCESS": "1",
        "PULLTHROUGH_SYNC_FILL_MAX_BYTES": str(sync_max),
        # with a rules file, its rules are stored in the table; without, every preset is enabled
        "PULLTHROUGH_BUILTIN_RULES": "" if rules_file else ",".join(PRESETS),
        "POWERTOOLS_SERVICE_NAME": "pullthrough",
        "POWERTOOLS_METRICS_NAMESPACE": "Pullthrough",
        "POWERTOOLS_LOG_LEVEL": log_level.upper(),
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    })  # fmt: skip
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    settings = AwsSettings.from_environment()
    ensure_resources(settings)
    if auth == "token":
        os.environ["PULLTHROUGH_SIGNING_KEYS_SECRET"] = ensure_signing_secret(settings, f"{table}-signing-keys")
    if rules_file:
        store_rules(settings, rules)
    from handlers import lambda_api  # built now, with the environment above, as at a cold start

    click.echo(f"pullthrough (Lambda path) on http://{host}:{port}; table {table}, bucket {bucket}", err=True)
    serve_events(lambda_api.handler, host, port)


@main.command()
@click.argument("reference", required=False)
@click.option("--data-dir", default=".pullthrough", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--rules", "rules_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--window-days", default=30.0, show_default=True, help="Refresh tags pulled within this many days.")
@click.option("--limit", default=500, show_default=True, help="At most this many tags per run.")
@click.option("--allow-private-upstreams", is_flag=True, help="As for serve.")
def refresh(
    reference: str | None, data_dir: Path, rules_file: Path | None, window_days: float, limit: int,
    allow_private_upstreams: bool,
) -> None:  # fmt: skip
    """Revalidate stale, recently pulled tags with the upstream (the scheduled job), or one image: PREFIX/REPO:TAG."""
    if allow_private_upstreams:
        os.environ[ALLOW_PRIVATE_ENV] = "1"
    try:
        refresher = build_local_refresher(data_dir.resolve(), load_rules(rules_file) if rules_file else None)
    except RuleInvalid as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging("info", format="%(message)s")
    if reference is not None:
        name, _, tag = reference.rpartition(":")
        if not name or "/" in tag:
            raise click.UsageError("give the image as PREFIX/REPOSITORY:TAG")
        outcomes = [refresher.refresh_tag(name, tag)]
    else:
        outcomes = refresher.refresh_stale(pulled_within_seconds=window_days * 86400, limit=limit)
    for outcome in outcomes:
        change = outcome.reason or (
            f"{outcome.previous_digest} -> {outcome.digest}" if outcome.status == "updated" else outcome.digest
        )
        click.echo(f"{outcome.name}:{outcome.tag}\t{outcome.status}\t{change}")
    if reference is None:
        click.echo(f"{len(outcomes)} tags revalidated", err=True)
    if any(outcome.status == "failed" for outcome in outcomes):
        raise SystemExit(1)


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

"""`pullthrough keys ...`: pull keys for the token mode, locally (--data-dir) or on a deployment (--table)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click

from core.auth import PullKey, hash_secret, new_secret
from core.reference import is_valid_name
from handlers.cli.options import backend_options, data_dir_option, open_store
from handlers.settings import DataDir

_DURATION = re.compile(r"^([0-9]{1,9})([hdw])\Z")
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def _expiry(text: str | None) -> float | None:
    if text is None:
        return None
    duration = _DURATION.match(text)
    if duration:
        return time.time() + int(duration.group(1)) * _UNITS[duration.group(2)]
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise click.UsageError(f"--expires takes 30d, 12h, 2w or a date like 2027-01-31, not {text!r}") from exc


@click.group()
def keys() -> None:
    """Pull keys: log in with the key's name as user name and its secret as password."""


@keys.command()
@click.argument("name")
@click.option("--prefix", "prefixes", multiple=True, required=True,
              help="What the key may pull: a rule prefix or any name prefix (repeat); '' for everything.")  # fmt: skip
@click.option("--expires", help="30d, 12h, 2w, or a date (UTC).")
@backend_options
def create(name: str, prefixes: tuple[str, ...], expires: str | None, data_dir: Path, table: str | None,
           output: str) -> None:  # fmt: skip
    """Create a key; its secret is printed once, as the last line."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise click.UsageError("a key name is letters, digits, '.', '_' and '-', at most 64")
    for prefix in prefixes:
        if prefix and not is_valid_name(prefix):
            raise click.UsageError(f"{prefix!r} is not a repository name prefix")
    store = open_store(data_dir, table)
    if store.get_key(name) is not None:
        raise click.UsageError(f"a key named {name!r} exists; revoke it or pick another name")
    secret = new_secret()
    store.put_key(PullKey(name, prefixes, hash_secret(secret), time.time(), _expiry(expires)))
    click.echo(f"created pull key {name} for {', '.join(p or '(everything)' for p in prefixes)}; its secret:", err=True)
    click.echo(secret)


@keys.command("list")
@backend_options
def list_keys(data_dir: Path, table: str | None, output: str) -> None:
    """Show keys (never their secrets)."""
    now = time.time()
    stored = open_store(data_dir, table).list_keys()
    if output == "json":
        click.echo(json.dumps([_row(key, now) for key in stored], indent=2))
        return
    for key in stored:
        row = _row(key, now)
        click.echo(f"{key.name}\t{','.join(key.prefixes) or '(everything)'}\t{row['state']}\t"
                   f"created {row['created']}\texpires {row['expires'] or 'never'}")  # fmt: skip


@keys.command()
@click.argument("name")
@backend_options
def revoke(name: str, data_dir: Path, table: str | None, output: str) -> None:
    """Revoke a key: it gets no more tokens (tokens already issued live at most five minutes)."""
    store = open_store(data_dir, table)
    key = store.get_key(name)
    if key is None:
        raise click.UsageError(f"no key named {name!r}")
    store.put_key(replace(key, revoked=True))
    click.echo(f"revoked {name}")


@keys.command("rotate-signing-key")
@data_dir_option
def rotate_signing_key(data_dir: Path) -> None:
    """Sign new tokens with a new key; the previous keys keep verifying the tokens they signed (local cache; on
    AWS, put a new version of the signing secret, see docs/aws.md)."""
    from pullthrough_adapters.local.signing_keys import FileSigningKeys

    key = FileSigningKeys(DataDir(data_dir).create().signing_keys).rotate()
    click.echo(f"new signing key {key.kid}")


def _row(key: PullKey, now: float) -> dict[str, object]:
    state = "revoked" if key.revoked else ("active" if key.usable(now) else "expired")
    return {"name": key.name, "prefixes": list(key.prefixes), "created": _date(key.created_at),
            "expires": _date(key.expires_at), "state": state}  # fmt: skip


def _date(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")

"""Token signing keys in a local file (mode 0600), newest first. Rotating adds a key and keeps the last few, so
tokens already issued keep verifying until they expire."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from core.auth import SigningKey

KEEP = 3


class FileSigningKeys:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._cache: tuple[tuple[int, int], list[SigningKey]] | None = None

    def __call__(self) -> list[SigningKey]:
        if not self._path.exists():
            self._write([_new_key()], exclusive=True)
        status = self._path.stat()
        version = (status.st_ino, status.st_mtime_ns)  # every write is a rename: a new inode
        if self._cache is None or self._cache[0] != version:
            document = json.loads(self._path.read_text())
            keys = [SigningKey(entry["kid"], bytes.fromhex(entry["secret"])) for entry in document["keys"]]
            self._cache = (version, keys)
        return self._cache[1]

    def rotate(self) -> SigningKey:
        key = _new_key()
        self._write([key, *self()][:KEEP], exclusive=False)
        return key

    def _write(self, keys: list[SigningKey], *, exclusive: bool) -> None:
        document = {"keys": [{"kid": key.kid, "secret": key.secret.hex()} for key in keys]}
        temp = self._path.with_suffix(".tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(temp, flags, 0o600)  # never readable by others, not even for a moment
        with os.fdopen(fd, "w") as file:
            json.dump(document, file)
        if exclusive and self._path.exists():  # another process created it first: keep theirs
            temp.unlink()
            return
        temp.replace(self._path)


def _new_key() -> SigningKey:
    return SigningKey(f"k{int(time.time())}-{secrets.token_hex(4)}", secrets.token_bytes(32))

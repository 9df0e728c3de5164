"""Token signing keys in a local file (mode 0600), newest first. Rotating adds a key and keeps the last few, so
tokens already issued keep verifying until they expire."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from core.auth import SigningKey

KEEP = 3


class FileSigningKeys:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._cache: tuple[tuple[int, int], list[SigningKey]] | None = None

    def __call__(self) -> list[SigningKey]:
        try:
            status = self._path.stat()
        except FileNotFoundError:
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
        # a temp file of this writer's own (mkstemp: mode 0600, never readable by others, not even for a moment)
        fd, temp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(document, file)
            if exclusive:
                with contextlib.suppress(FileExistsError):  # another process created it first: keep theirs
                    os.link(temp, self._path)  # creates the file only if it does not exist, atomically
            else:
                os.replace(temp, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)


def _new_key() -> SigningKey:
    return SigningKey(f"k{int(time.time())}-{secrets.token_hex(4)}", secrets.token_bytes(32))

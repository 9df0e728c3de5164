from __future__ import annotations

import stat
from pathlib import Path

from adapters.local.signing_keys import KEEP, FileSigningKeys
from core.auth import PullKey, TokenService


def test_the_key_file_is_private_and_rotation_keeps_issued_tokens_valid(tmp_path: Path):
    path = tmp_path / "token-signing-keys.json"
    keys = FileSigningKeys(path)
    service = TokenService(keys, "pullthrough")
    token = str(service.issue(PullKey("ci", ("",), "", 0.0), ["a/b"])["token"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = keys()[0].kid

    new = FileSigningKeys(path).rotate()  # another process rotates
    assert [key.kid for key in keys()][:2] == [new.kid, first]
    assert service.authorize(token, "a/b") == "ci"  # signed by the previous key, still accepted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    for _ in range(KEEP):
        keys.rotate()
    assert first not in [key.kid for key in keys()]  # retired after KEEP rotations

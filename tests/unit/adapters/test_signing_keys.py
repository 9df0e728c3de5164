from __future__ import annotations

import stat
from pathlib import Path

from core.auth import PullKey, TokenService
from pullthrough_adapters.local.signing_keys import KEEP, FileSigningKeys


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


def test_processes_creating_the_file_at_once_agree_on_one_key_and_leave_no_temp_files(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "keys.json"
    with ThreadPoolExecutor(8) as pool:  # one FileSigningKeys each, as separate server processes have
        seen = list(pool.map(lambda _: FileSigningKeys(path)(), range(32)))
    assert all(keys == seen[0] for keys in seen) and len(seen[0]) == 1
    assert [entry.name for entry in tmp_path.iterdir()] == ["keys.json"]
    assert path.stat().st_mode & 0o777 == 0o600

"""moto in server mode: S3 and DynamoDB on 127.0.0.1, reachable by real clients that follow a 307 to S3."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from . import proc
from .ports import free_port, wait_for_http

# werkzeug's request log: 127.0.0.1 - - [27/Nov/2026 22:10:01] "GET /bucket/key?X-Amz-... HTTP/1.1" 200 -
_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<path>[^ ?]+)(?:\?\S*)? HTTP/[0-9.]+" (?P<status>\d{3})')


class MotoServer(proc.LoopbackServer):
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "moto.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command: list[str | Path] = [
            Path(sys.executable).parent / "moto_server",
            "-H",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        with self.log.open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log)
        wait_for_http(f"{self.url}/moto-api/", timeout=30)

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request moto logged so far."""
        time.sleep(0.1)
        return [
            (match["method"], match["path"], int(match["status"]))
            for match in map(_REQUEST.search, self.log.read_text(errors="replace").splitlines())
            if match
        ]

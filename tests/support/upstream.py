"""A real upstream registry (CNCF distribution 2.8, Debian's `docker-registry`) run as a subprocess.

Tests count what reaches the upstream by parsing its access log, and simulate outages by stopping it;
start() after stop() comes back on the same port with the same storage.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .ports import free_port, wait_for_http

# One access-log line per request (gorilla's combined log format), e.g.
#   127.0.0.1 - - [27/Nov/2026:21:40:29 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    rb'^\S+ \S+ \S+ \[[^\]]*\] "(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) (?P<bytes>\d+|-)'
)


@dataclass(frozen=True)
class AccessLogEntry:
    """One request the registry answered. `path` has no query string (containerd adds ?ns=...);
    `bytes` is the response body actually sent."""

    method: str
    path: str
    status: int
    bytes: int


def summarize(entries: list[AccessLogEntry]) -> tuple[int, int]:
    """(number of requests, response bytes) of `entries`."""
    return len(entries), sum(entry.bytes for entry in entries)


class DistributionRegistry(proc.LoopbackServer):
    """distribution's registry on 127.0.0.1 with filesystem storage under `workdir`.

    With `proxy_remote_url` it runs in distribution's own pull-through-cache mode, the peer to compare with.
    distribution writes its access log to stdout (not stderr) and everything else to stderr; they go to
    `workdir/access.log` and `workdir/registry.log`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        proxy_remote_url: str | None = None,
        htpasswd: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.htpasswd = htpasswd  # with it, every request needs Basic credentials from that file
        self.port = port if port is not None else free_port()
        self.proxy_remote_url = proxy_remote_url
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "registry.log"
        self._config = workdir / "config.yml"

    def start(self, timeout: float = 15.0) -> None:
        """Start the registry and wait until it answers /v2/."""
        if self._proc is not None:
            raise RuntimeError(f"registry on {self.host} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            log_start = err.tell()
            self._proc = proc.spawn(["docker-registry", "serve", self._config], stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"docker-registry exited during start-up:\n{self._log_since(log_start)}")
            try:
                wait_for_http(f"{self.url}/v2/", timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    self.stop()
                    log = self._log_since(log_start)
                    raise TimeoutError(f"docker-registry not answering on {self.host}:\n{log}") from None

    def mark(self) -> int:
        """Current end of the access log, to pass to requests_since() later."""
        return self._settled_size()

    def requests_since(self, mark: int) -> list[AccessLogEntry]:
        """Requests logged after `mark`, once the log has stopped growing (lines land just after responses)."""
        end = self._settled_size()
        with self.access_log.open("rb") as log:
            log.seek(mark)
            data = log.read(end - mark)
        entries = []
        for line in data.splitlines(keepends=True):
            match = _ACCESS_LINE.match(line)
            if match is None or not line.endswith(b"\n"):
                continue
            method, size = match["method"].decode(), match["bytes"]
            entries.append(
                AccessLogEntry(
                    method=method,
                    path=match["uri"].decode().split("?", 1)[0],
                    status=int(match["status"]),
                    # For HEAD, distribution logs the size of the body it would have sent (Go drops it).
                    bytes=0 if method == "HEAD" or size == b"-" else int(size),
                )
            )
        return entries

    def _settled_size(self, quiet: float = 0.1, timeout: float = 3.0) -> int:
        """Size of the access log once it has not changed for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        size = self._log_size()
        stable_since = time.monotonic()
        while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
            time.sleep(0.02)
            now = self._log_size()
            if now != size:
                size, stable_since = now, time.monotonic()
        return size

    def _log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def _write_config(self) -> None:
        # JSON is valid YAML, and spares us a YAML writer.
        config: dict[str, object] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "storage")},
                "delete": {"enabled": True},
            },
            # A fixed secret keeps upload state valid across restarts and silences a start-up warning.
            "http": {"addr": self.host, "secret": "pullthrough-test-secret"},
        }
        if self.proxy_remote_url is not None:
            config["proxy"] = {"remoteurl": self.proxy_remote_url}
        if self.htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "pullthrough-test", "path": str(self.htpasswd)}}
        self._config.write_text(json.dumps(config, indent=2) + "\n")

    def _log_since(self, offset: int) -> str:
        """What the registry wrote to stderr since `offset` (its start-up messages, or a panic)."""
        with self.error_log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

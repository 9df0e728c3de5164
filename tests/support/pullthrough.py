"""`pullthrough serve` as a subprocess: the product exactly as a user starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from . import proc
from .ports import free_port, wait_for_http

EXECUTABLE = Path(sys.executable).parent / "pullthrough"


def pullthrough_cli(*args: object, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `pullthrough` command as a user would; output captured, the exit status left for the test to judge."""
    command = [str(EXECUTABLE), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


class PullthroughServer(proc.LoopbackServer):
    def __init__(
        self,
        workdir: Path,
        rules: list[dict[str, object]] | None,
        *,
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        allow_private_upstreams: bool = True,  # every test upstream is on 127.0.0.1
        open_files: int | None = None,  # start with this soft limit on open files, as a login shell might
    ) -> None:
        self.workdir = workdir
        self.allow_private_upstreams = allow_private_upstreams
        self.rules = rules
        self.workers = workers
        self.extra_args = extra_args
        self.env = env
        self.open_files = open_files
        self.port = free_port()
        self.data_dir = workdir / "data"
        self.log = workdir / "pullthrough.log"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules: list[str | Path] = []
        if self.rules is not None:  # without, the built-in rules and those stored with `pullthrough rules`
            rules_file = self.workdir / "rules.json"
            rules_file.write_text(json.dumps({"rules": self.rules}))
            rules = ["--rules", rules_file]
        limit = ["prlimit", f"--nofile={self.open_files}:", "--"] if self.open_files else []
        command = [*limit, EXECUTABLE, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", self.data_dir, *rules, "--workers", str(self.workers),
                   *(["--allow-private-upstreams"] if self.allow_private_upstreams else []),
                   *self.extra_args]  # fmt: skip
        with self.log.open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pullthrough exited during start-up:\n{self.log.read_text()}")
            try:
                wait_for_http(f"{self.url}/v2/", timeout=0.2)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

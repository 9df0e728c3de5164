"""Running external tools: every call is captured, time-limited and explained when it fails,
and every background server is reaped even when a test dies halfway."""

from __future__ import annotations

import atexit
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

Command = Sequence[str | Path]


class CommandError(RuntimeError):
    """A tool exited non-zero or ran out of time; the message carries its stderr."""

    def __init__(self, cmd: Command, reason: str, stdout: bytes, stderr: bytes) -> None:
        self.cmd = [str(part) for part in cmd]
        self.stdout = stdout
        self.stderr = stderr
        err = stderr.decode(errors="replace").strip()
        super().__init__(f"{' '.join(self.cmd)}: {reason}\n--- stderr ---\n{err}")


def run(cmd: Command, *, timeout: float = 120.0, env: Mapping[str, str] | None = None) -> bytes:
    """Run `cmd` to completion and return its stdout; `env` adds variables to this process's environment."""
    args = [str(part) for part in cmd]
    full_env = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=full_env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, f"timed out after {timeout} s", exc.stdout or b"", exc.stderr or b"") from None
    if done.returncode != 0:
        raise CommandError(args, f"exit status {done.returncode}", done.stdout, done.stderr)
    return done.stdout


_RUNNING: set[subprocess.Popen[bytes]] = set()


def spawn(
    cmd: Command, *, stdout: IO[bytes], stderr: IO[bytes], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a background server in its own session; it is killed at interpreter exit if nobody stopped it.
    `env` adds variables to this process's environment."""
    proc = subprocess.Popen(
        [str(part) for part in cmd],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        env={**os.environ, **env} if env else None,
    )
    _RUNNING.add(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still alive after `grace` seconds; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _RUNNING.discard(proc)


class BackgroundProcess:
    """A server the tests start and stop; as a context manager it is stopped even when the test fails.
    Subclasses start it with spawn() into self._proc."""

    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; whatever the process left on disk stays, for a later start()."""
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class LoopbackServer(BackgroundProcess):
    """A BackgroundProcess serving HTTP on 127.0.0.1:`port`."""

    port: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_RUNNING):
        stop(proc, grace=2.0)

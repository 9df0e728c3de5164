"""`sam local` without Docker and without a registry: podman serves the Docker API, on a Lambda base image built here.

SAM runs each function in `public.ecr.aws/lambda/python:3.12`, which no registry reachable from these machines
serves. This builds an equivalent from Debian's mirror and PyPI: a debootstrap rootfs, the CPython 3.12 that
`sam build` uses (in /var/lang, as on Lambda), the runtime interface client `awslambdaric` (in /var/runtime) and
/var/runtime/bootstrap; SAM adds its runtime interface emulator on top. The image lives in podman storage under
CACHE_DIR, outside the repository, so it is built once (about a minute) and reused; its name carries a fingerprint
of the recipe, so changing the recipe builds a new one and retires the old.

`python -m tests.support.lambda_image` builds it by hand and prints how to point SAM at it (docs/aws.md, "sam local").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from . import proc

ROOT = Path(__file__).resolve().parents[2]
SAM_BIN = ROOT / ".venv-sam" / "bin"  # `make sam-tools`: SAM CLI in a Python 3.12 virtualenv
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pullthrough" / "sam-local"
# Lambda's name for this machine's processor: what the template's Architecture parameter must say to run here.
LAMBDA_ARCHITECTURE = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]

IMAGE_REPOSITORY = "localhost/pullthrough-lambda-python"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What CPython's extension modules link against beyond debootstrap's minimal base, and CAs for HTTPS upstreams.
DEBIAN_PACKAGES = ("ca-certificates", "libssl3", "libffi8", "libsqlite3-0", "libexpat1", "libreadline8")
RUNTIME_INTERFACE_CLIENT = "awslambdaric==4.2.2"
# As in AWS's images: the interpreter in /var/lang, the runtime in /var/runtime, the function's code in /var/task.
IMAGE_ENV = {
    "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin:/bin",
    "LD_LIBRARY_PATH": "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "PYTHONPATH": "/var/runtime",
    "LAMBDA_TASK_ROOT": "/var/task",
    "LAMBDA_RUNTIME_DIR": "/var/runtime",
    "LANG": "C.UTF-8",
    "TZ": ":/etc/localtime",
}
# The runtime interface emulator starts this, with _HANDLER set to the function's Handler.
BOOTSTRAP = '#!/bin/sh\nexec /var/lang/bin/python3.12 -m awslambdaric "$_HANDLER"\n'
# Parts of CPython a function never uses: its tests, Tk, IDLE, pip's bootstrap, the static library; and whatever
# the build machine installed into site-packages.
_LEFT_OUT = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "pkgconfig", "__pycache__", "site-packages"}

# podman's defaults do not fit this sandbox: as root it raises the containers' limits, which needs CAP_SYS_RESOURCE
# (kept within the hard limits here), and crun 1.8 refuses the host's hybrid cgroup layout where runc does not.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


class PodmanEngine(proc.BackgroundProcess):
    """`podman system service` on storage kept in `cache_dir`: the Docker API that SAM talks to (DOCKER_HOST)."""

    def __init__(self, cache_dir: Path = CACHE_DIR) -> None:
        self.cache_dir = cache_dir
        self.containers_conf = cache_dir / "containers.conf"
        self.log = cache_dir / "podman-service.log"
        # podman compares the storage paths with those it recorded, so they are the same at every run.
        self.storage_options = ["--root", str(cache_dir / "storage"), "--runroot", str(cache_dir / "run")]
        self.socket: Path | None = None

    @property
    def docker_host(self) -> str:
        if self.socket is None:
            raise RuntimeError("the podman service is not running")
        return f"unix://{self.socket}"

    def start(self, timeout: float = 30.0) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.containers_conf.write_text(CONTAINERS_CONF)
        # A socket path must fit in 108 bytes, and two runs must not share one: a short directory of this run's own.
        self.socket = Path(tempfile.mkdtemp(prefix="pt-podman-", dir="/tmp")) / "podman.sock"
        command = ["podman", *self.storage_options, "system", "service", "--time=0", self.docker_host]
        with self.log.open("ab") as log:
            self._proc = proc.spawn(command, stdout=log, stderr=log, env=self._env)
        deadline = time.monotonic() + timeout
        while not _answers_ping(self.socket):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"podman system service did not come up; see {self.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        super().stop()
        if self.socket is not None:
            shutil.rmtree(self.socket.parent, ignore_errors=True)
            self.socket = None

    def podman(self, *args: str | Path, timeout: float = 300.0) -> str:
        """Run the podman command on the service's storage."""
        return proc.run(["podman", *self.storage_options, *args], timeout=timeout, env=self._env).decode()

    def has_image(self, name: str) -> bool:
        try:
            self.podman("image", "exists", name, timeout=60)
        except proc.CommandError:
            return False
        return True

    @property
    def _env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.containers_conf)}


def base_image(engine: PodmanEngine, python: Path) -> str:
    """The name of the base image for this recipe and the CPython 3.12 at `python`; built first if it never was."""
    python_version = proc.run([python, "-c", "import sys; print(sys.version)"]).decode().strip()
    recipe = [DEBIAN_SUITE, DEBIAN_PACKAGES, RUNTIME_INTERFACE_CLIENT, IMAGE_ENV, BOOTSTRAP, python_version]
    fingerprint = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    # The fingerprint goes in the repository, not the tag: SAM names the image it builds on top <repository>:rapid-...
    # and would otherwise keep using one built on an older base.
    name = f"{IMAGE_REPOSITORY}-{fingerprint}:3.12-{LAMBDA_ARCHITECTURE}"
    with _exclusive(engine.cache_dir / "image.lock"):
        if not engine.has_image(name):
            _build(engine, python, name)
            _remove_other_builds(engine, keep=name.split(":")[0])
    return name


def bridge_address(engine: PodmanEngine, image: str) -> str:
    """The host's address on podman's default bridge: where a container reaches a server on the host (its
    127.0.0.1 is the container's own). The bridge appears with the first container on it, and stays."""
    gateway = engine.podman("network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}")
    address = gateway.strip()
    if not _is_local(address):
        engine.podman("run", "--rm", "--network", "podman", "--entrypoint", "/bin/true", image, timeout=120)
    if not _is_local(address):
        raise RuntimeError(f"podman's bridge did not come up with address {address}")
    return address


def _build(engine: PodmanEngine, python: Path, name: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="build-", dir=engine.cache_dir))
    try:
        rootfs = work / "rootfs"
        include = f"--include={','.join(DEBIAN_PACKAGES)}"
        proc.run(["debootstrap", "--variant=minbase", include, DEBIAN_SUITE, rootfs, DEBIAN_MIRROR], timeout=900)
        _install_python(python, rootfs / "var" / "lang")
        runtime = rootfs / "var" / "runtime"
        proc.run([python, "-m", "pip", "install", "--quiet", "--target", runtime, RUNTIME_INTERFACE_CLIENT])
        (runtime / "bootstrap").write_text(BOOTSTRAP)
        (runtime / "bootstrap").chmod(0o755)
        (rootfs / "var" / "task").mkdir()
        proc.run(["tar", "-C", rootfs, "-cf", work / "rootfs.tar", "."], timeout=300)
        changes = [f"--change=ENV={key}={value}" for key, value in IMAGE_ENV.items()]
        changes += ["--change=WORKDIR=/var/task", '--change=ENTRYPOINT=["/var/runtime/bootstrap"]']
        engine.podman("import", "--quiet", *changes, work / "rootfs.tar", name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install_python(python: Path, destination: Path) -> None:
    """Copy the CPython that runs `python` to `destination` (relocatable: the image sets LD_LIBRARY_PATH), with its
    standard library compiled as it will be found there."""
    prefix = Path(proc.run([python, "-c", "import sys; print(sys.base_prefix)"]).decode().strip())

    def left_out(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if name in _LEFT_OUT or name.startswith("config-3.") or name.endswith(".a")}

    shutil.copytree(prefix / "lib", destination / "lib", ignore=left_out, symlinks=True)
    (destination / "lib" / "python3.12" / "site-packages").mkdir()
    (destination / "bin").mkdir()
    shutil.copy2(prefix / "bin" / "python3.12", destination / "bin" / "python3.12")
    for alias in ("python3", "python"):
        (destination / "bin" / alias).symlink_to("python3.12")
    library = destination / "lib" / "python3.12"
    proc.run([python, "-m", "compileall", "-q", "-j0", "-s", destination, "-p", "/var/lang", library], timeout=300)


def _remove_other_builds(engine: PodmanEngine, keep: str) -> None:
    """Images of earlier recipes, and the images SAM built on them."""
    names = engine.podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    stale = [name for name in names if name.startswith(f"{IMAGE_REPOSITORY}-") and name.split(":")[0] != keep]
    if stale:
        engine.podman("rmi", "--force", *stale)


def _answers_ping(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(2)
        try:
            connection.connect(str(path))
            connection.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return connection.recv(64).split(b" ")[1:2] == [b"200"]
        except OSError:
            return False


def _is_local(address: str) -> bool:
    """Whether this machine has `address` (a server can listen on it)."""
    with socket.socket(socket.AF_INET) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One build at a time, even across test runs."""
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> None:
    with PodmanEngine() as engine:
        image = base_image(engine, SAM_BIN / "python3.12")
    storage = " ".join(engine.storage_options)
    print(
        f"Built {image}.\n"
        "Serve the Docker API from the storage that holds it, then run SAM with:\n"
        f"  CONTAINERS_CONF={engine.containers_conf} podman {storage} system service --time=0 "
        "unix:///tmp/podman.sock &\n"
        "  export DOCKER_HOST=unix:///tmp/podman.sock\n"
        f"  sam local ... --invoke-image {image} --skip-pull-image "
        f"--parameter-overrides Architecture={LAMBDA_ARCHITECTURE}"
    )


if __name__ == "__main__":
    main()

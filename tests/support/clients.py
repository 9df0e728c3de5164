"""Real pull clients (skopeo, podman, containerd's ctr), each with private configuration and storage.

All of them are pointed at a registries.conf with no unqualified-search registries, and the harness
only ever passes fully qualified references, so nothing looks up docker.io.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from . import proc

_REGISTRIES_CONF = 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n'
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


@functools.cache
def containers_config_dir() -> Path:
    """A temporary directory with registries.conf and policy.json for containers/image tools (removed at exit)."""
    conf = Path(tempfile.mkdtemp(prefix="pullthrough-containers-"))
    (conf / "registries.conf").write_text(_REGISTRIES_CONF)
    (conf / "policy.json").write_text(json.dumps(_POLICY))
    atexit.register(shutil.rmtree, conf, ignore_errors=True)
    return conf


def skopeo(*args: str, timeout: float = 300.0) -> bytes:
    """Run skopeo with the harness's registries.conf and trust policy.

    skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF, but has a (hidden) global --registries-conf flag.
    """
    conf = containers_config_dir()
    base: list[str | Path] = ["skopeo", "--registries-conf", conf / "registries.conf", "--policy", conf / "policy.json"]
    return proc.run([*base, *args], timeout=timeout)


def skopeo_copy(
    ref: str,
    dest: Path,
    *,
    arch: str | None = None,
    variant: str | None = None,
    all_platforms: bool = False,
    timeout: float = 300.0,
) -> None:
    """Pull `ref` over plain HTTP into a skopeo `dir:` layout (blobs named by their digest)."""
    overrides = []
    if arch is not None:
        overrides += ["--override-arch", arch]
    if variant is not None:
        overrides += ["--override-variant", variant]
    copy = ["copy", "--src-tls-verify=false", *(["--all"] if all_platforms else [])]
    dest.parent.mkdir(parents=True, exist_ok=True)  # skopeo creates `dest` but not its parents
    skopeo(*overrides, *copy, f"docker://{ref}", f"dir:{dest}", timeout=timeout)


def verify_dir_digests(dest: Path) -> set[str]:
    """sha256 every blob of a skopeo `dir:` output, assert it matches the file name, return the digests."""
    digests = set()
    for path in dest.iterdir():
        if not re.fullmatch(r"[0-9a-f]{64}", path.name):
            continue  # manifest.json, version, <digest>.manifest.json
        with path.open("rb") as blob:
            actual = hashlib.file_digest(blob, "sha256").hexdigest()
        if actual != path.name:
            raise AssertionError(f"{path}: content has digest sha256:{actual}")
        digests.add(f"sha256:{actual}")
    return digests


def skopeo_inspect_raw(ref: str, *, timeout: float = 60.0) -> bytes:
    """The manifest (or index) of `ref` exactly as the registry serves it."""
    return skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}", timeout=timeout)


def skopeo_inspect_digest(ref: str, *, timeout: float = 60.0) -> str:
    """Digest of the manifest (or index) of `ref` as served."""
    return "sha256:" + hashlib.sha256(skopeo_inspect_raw(ref, timeout=timeout)).hexdigest()


class Podman:
    """podman with storage, state and configuration all under `root` (vfs driver, no systemd, no cgroups)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # podman refuses a runroot longer than 50 characters; it holds only locks and state.
        runroot = Path(tempfile.mkdtemp(prefix="podman-run-", dir="/tmp"))
        atexit.register(shutil.rmtree, runroot, ignore_errors=True)
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "registries.conf").write_text(_REGISTRIES_CONF)
        (conf / "policy.json").write_text(json.dumps(_POLICY))
        (conf / "containers.conf").write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{root / "storage"}"\nrunroot = "{runroot}"\n'
        )
        self._env = {
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "TMPDIR": str(root / "tmp"),  # big-blob staging, /var/tmp otherwise
        }
        (root / "tmp").mkdir(exist_ok=True)
        self._base: list[str | Path] = [
            "podman",
            "--root", root / "storage",
            "--runroot", runroot,
            "--tmpdir", root / "libpod-tmp",
            "--storage-driver=vfs",
            "--events-backend=file",
            "--cgroup-manager=cgroupfs",
        ]  # fmt: skip

    def podman(self, *args: str, timeout: float = 300.0) -> bytes:
        """Run podman against this private storage."""
        return proc.run([*self._base, *args], timeout=timeout, env=self._env)

    def pull(self, ref: str, *, arch: str | None = None, variant: str | None = None, timeout: float = 300.0) -> None:
        """`podman pull` over plain HTTP, optionally for another platform."""
        platform = [*(["--arch", arch] if arch else []), *(["--variant", variant] if variant else [])]
        policy = f"--signature-policy={self.root / 'conf' / 'policy.json'}"
        self.podman("pull", "--quiet", "--tls-verify=false", policy, *platform, ref, timeout=timeout)

    def image_digest(self, ref: str) -> str:
        """Digest of the manifest `ref` was pulled by: the index / manifest list when pulled through one.

        podman keys images by config digest, so when two pulled manifests share a config (the OCI and Docker
        variants of one image do) the first pull's digest sticks: use a fresh Podman to compare digests.
        """
        return self.podman("image", "inspect", "--format", "{{.Digest}}", ref, timeout=60).decode().strip()

    def repo_digests(self, ref: str) -> set[str]:
        """The image's `repo@digest` names: the platform's manifest and, when pulled via an index, the index."""
        out = self.podman("image", "inspect", "--format", "{{json .RepoDigests}}", ref, timeout=60)
        return set(json.loads(out))


def write_mirror_hosts(hosts_dir: Path, registry: str, mirror_url: str, *, override_path: bool = False) -> None:
    """Make containerd (`pull(..., hosts_dir=hosts_dir)`) fetch `registry`'s images through `mirror_url`.

    containerd then adds `?ns=<registry>` to every request it sends to the mirror. With `override_path`, the
    mirror URL's path (e.g. `/v2/<prefix>`) replaces `/v2`.
    """
    host_dir = hosts_dir / registry
    host_dir.mkdir(parents=True, exist_ok=True)
    override = "  override_path = true\n" if override_path else ""
    (host_dir / "hosts.toml").write_text(
        f'server = "http://{registry}"\n\n[host."{mirror_url}"]\n  capabilities = ["pull", "resolve"]\n{override}'
    )


class Containerd(proc.BackgroundProcess):
    """A private containerd (root, state and socket under `workdir`, CRI disabled) driven with `ctr`.

    Images are unpacked with the `native` snapshotter so pulls need no overlay mounts.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.address = workdir / "containerd.sock"
        if len(str(self.address)) > 100:  # sun_path is 108 bytes, and containerd adds ".ttrpc"
            raise ValueError(f"socket path too long for a unix socket: {self.address}")
        self.log = workdir / "containerd.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start containerd and wait until ctr can talk to it."""
        if self._proc is not None:
            raise RuntimeError(f"containerd on {self.address} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.workdir / "root"}"\n'
            f'state = "{self.workdir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.address}"\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{self.workdir / "opt"}"\n'
        )
        with self.log.open("ab") as log:
            self._proc = proc.spawn(["containerd", "--config", config], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"containerd exited during start-up:\n{self.log.read_text(errors='replace')}")
            try:
                self.ctr("version", timeout=5)
                return
            except proc.CommandError:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise
                time.sleep(0.1)

    def ctr(self, *args: str, timeout: float = 300.0) -> bytes:
        """Run ctr against this containerd."""
        return proc.run(["ctr", "--address", self.address, *args], timeout=timeout)

    def pull(
        self, ref: str, *, platform: str | None = None, hosts_dir: Path | None = None, timeout: float = 300.0
    ) -> None:
        """`ctr images pull --plain-http`; with `hosts_dir`, registry hosts (mirrors) come from its hosts.toml files."""
        args = ["images", "pull", "--plain-http", "--snapshotter", "native"]
        if platform is not None:
            args += ["--platform", platform]
        if hosts_dir is not None:
            args += ["--hosts-dir", str(hosts_dir)]
        self.ctr(*args, ref, timeout=timeout)

    def image_digest(self, ref: str) -> str:
        """Target digest (top-level manifest or index) of the local image named `ref`."""
        for line in self.ctr("images", "ls", timeout=60).decode().splitlines()[1:]:
            name, _type, digest, *_ = line.split()
            if name == ref:
                return digest
        raise KeyError(f"containerd has no image named {ref}")

    def content_digests(self) -> set[str]:
        """Digests of every blob in containerd's content store (what pulls really fetched)."""
        return set(self.ctr("content", "ls", "--quiet", timeout=60).decode().split())

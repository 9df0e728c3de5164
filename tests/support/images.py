"""Deterministic test images, built offline with the standard library and pushed to an upstream with skopeo.

Layouts are reproducible byte for byte (fixed mtimes, sorted entries, gzip mtime 0), so digests are stable
across runs and machines. What callers get back (TestImage) is read from the upstream after the push,
because skopeo rewrites manifests when it converts them (OCI -> Docker schema2 / manifest list).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .clients import skopeo

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_TAG = "v1"
_EPOCH = "1970-01-01T00:00:00Z"
_MIB = 1 << 20
_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: runs in an otherwise empty image
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Descriptor = dict[str, object]
Layer = tuple[Descriptor, str]  # (descriptor of the blob, diff_id of its uncompressed tar)


@dataclass(frozen=True)
class TestImage:
    """An image as the upstream stores it: what every pull, cached or not, must reproduce exactly."""

    __test__ = False  # a data class, not a pytest test class

    key: str
    repository: str
    tag: str
    digest: str  # top-level manifest or index
    media_type: str  # of the top-level manifest or index
    platforms: tuple[str, ...]  # "os/arch[/variant]", in index order
    manifest_digests: frozenset[str]  # top-level and children
    blob_digests: frozenset[str]  # configs and layers of all platforms
    blob_bytes: int  # sum of the sizes of blob_digests
    largest_blob: str

    def ref(self, host: str, prefix: str = "") -> str:
        """`host/[prefix/]repository:tag`, e.g. 127.0.0.1:5001/up/library/single-oci:v1."""
        return f"{self._name(host, prefix)}:{self.tag}"

    def ref_by_digest(self, host: str, prefix: str = "") -> str:
        """`host/[prefix/]repository@sha256:...`."""
        return f"{self._name(host, prefix)}@{self.digest}"

    def _name(self, host: str, prefix: str) -> str:
        return "/".join(part for part in (host, prefix.strip("/"), self.repository) if part)


def push_test_images(upstream_host: str, workdir: Path, *, big_layer_mib: int = 64) -> dict[str, TestImage]:
    """Build (once per workdir) and push the five standard test images to `upstream_host`, keyed by name.

    single-oci / multi-oci (amd64 + arm64/v8) / big are pushed unchanged; single-docker and multi-docker are
    the same layouts converted by skopeo to Docker schema2 and a Docker manifest list.
    """
    layouts = workdir / "layouts"
    single = _cached_layout(layouts / "single", _build_single)
    multi = _cached_layout(layouts / "multi", _build_multi)
    big = _cached_layout(layouts / f"big-{big_layer_mib}mib", lambda layout: _build_big(layout, big_layer_mib))
    plan = [  # key, layout, --all, convert to Docker, media type the upstream must then hold
        ("single-oci", single, False, False, OCI_MANIFEST),
        ("multi-oci", multi, True, False, OCI_INDEX),
        ("single-docker", single, False, True, DOCKER_MANIFEST),
        ("multi-docker", multi, True, True, DOCKER_LIST),
        ("big", big, False, False, OCI_MANIFEST),
    ]
    images = {}
    for key, layout, all_platforms, docker, media_type in plan:
        repository = f"library/{key}"
        push_layout(layout, f"{upstream_host}/{repository}:{_TAG}", all_platforms=all_platforms, docker_format=docker)
        image = describe_image(upstream_host, key, repository, _TAG)
        if image.media_type != media_type:
            raise RuntimeError(f"{key}: upstream stores {image.media_type}, expected {media_type}")
        images[key] = image
    return images


def make_big_blob_image(upstream_host: str, workdir: Path, size_mib: int, repository: str, tag: str) -> TestImage:
    """Push a single-layer OCI image whose layer is `size_mib` MiB of incompressible bytes.

    The bytes are seeded by repository and tag, so different images never share (and never dedupe) the blob.
    The layer is streamed to disk, never held in memory.
    """
    seed = f"{repository}:{tag}".encode()

    def build(layout: _Layout) -> None:
        layout.finish(_add_image(layout, "linux/amd64", [_add_random_layer(layout, size_mib, seed)]))

    name = hashlib.sha256(seed).hexdigest()[:16]
    layout = _cached_layout(workdir / "layouts" / f"blob-{name}-{size_mib}mib", build)
    push_layout(layout, f"{upstream_host}/{repository}:{tag}", timeout=1800)
    return describe_image(upstream_host, f"{repository}:{tag}", repository, tag)


def push_sibling_images(upstream_host: str, workdir: Path, family: str, names: Iterable[str]) -> dict[str, TestImage]:
    """Push `family/<name>:v1` for each name: single-platform images sharing one base layer (busybox), each with a
    config and a top layer of its own."""
    images = {}
    for name in names:

        def build(layout: _Layout, name: str = name) -> None:
            layers = [_busybox_layer(layout, family), _marker_layer(layout, family, name)]
            layout.finish(_add_image(layout, "linux/amd64", layers))

        layout = _cached_layout(workdir / "layouts" / f"sibling-{family}-{name}", build)
        repository = f"{family}/{name}"
        push_layout(layout, f"{upstream_host}/{repository}:{_TAG}")
        images[name] = describe_image(upstream_host, repository, repository, _TAG)
    return images


def push_layout(
    layout: Path, dest_ref: str, *, all_platforms: bool = False, docker_format: bool = False, timeout: float = 600.0
) -> None:
    """Copy the layout's image to `dest_ref` over plain HTTP.

    Without `docker_format` digests are preserved: skopeo would otherwise gzip uncompressed layers on the way.
    """
    args = ["copy", "--quiet", "--dest-tls-verify=false", *(["--all"] if all_platforms else [])]
    args += ["--format", "v2s2"] if docker_format else ["--preserve-digests"]
    skopeo(*args, f"oci:{layout}:{_TAG}", f"docker://{dest_ref}", timeout=timeout)


def describe_image(host: str, key: str, repository: str, tag: str) -> TestImage:
    """Read an image's manifests back from the registry at `host` and summarise them as a TestImage."""
    base = f"http://{host}/v2/{repository}"
    raw, media_type = _get(f"{base}/manifests/{tag}", MANIFEST_MEDIA_TYPES)
    top = json.loads(raw)
    digest = _sha256(raw)
    if media_type in (OCI_INDEX, DOCKER_LIST):
        children = [entry["digest"] for entry in top["manifests"]]
        platforms = tuple(_platform(entry["platform"]) for entry in top["manifests"])
        manifests = [json.loads(_get(f"{base}/manifests/{child}", MANIFEST_MEDIA_TYPES)[0]) for child in children]
    else:
        children = []
        manifests = [top]
        config, _ = _get(f"{base}/blobs/{top['config']['digest']}", ("*/*",))
        platforms = (_platform(json.loads(config)),)
    sizes = {blob["digest"]: int(blob["size"]) for m in manifests for blob in (m["config"], *m["layers"])}
    return TestImage(
        key=key,
        repository=repository,
        tag=tag,
        digest=digest,
        media_type=media_type,
        platforms=platforms,
        manifest_digests=frozenset([digest, *children]),
        blob_digests=frozenset(sizes),
        blob_bytes=sum(sizes.values()),
        largest_blob=max(sizes, key=lambda blob: sizes[blob]),
    )


class _Layout:
    """An OCI image layout being written: content-addressed blobs, then an index.json naming one tag."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def add(self, data: bytes, media_type: str) -> Descriptor:
        digest = _sha256(data)
        (self.blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def adopt(self, path: Path, media_type: str) -> Descriptor:
        """Move a file too big for memory into the layout as a blob."""
        with path.open("rb") as blob:
            digest = "sha256:" + hashlib.file_digest(blob, "sha256").hexdigest()
        size = path.stat().st_size
        path.rename(self.blobs / digest.removeprefix("sha256:"))
        return {"mediaType": media_type, "digest": digest, "size": size}

    def finish(self, top: Descriptor) -> None:
        """Write index.json last: its presence marks the layout complete."""
        entry = {**top, "annotations": {"org.opencontainers.image.ref.name": _TAG}}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
        (self.root / "index.json").write_bytes(_canonical(index))


def _cached_layout(root: Path, build: Callable[[_Layout], None]) -> Path:
    """Build the layout at `root` unless a complete one is already there."""
    if not (root / "index.json").exists():
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build(_Layout(partial))
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    return root


def _build_single(layout: _Layout) -> None:
    layers = [_busybox_layer(layout, "single"), _marker_layer(layout, "single", "linux/amd64")]
    layout.finish(_add_image(layout, "linux/amd64", layers))


def _build_multi(layout: _Layout) -> None:
    """An index whose children share the busybox layer but differ in config and in one layer."""
    shared = _busybox_layer(layout, "multi")
    children = []
    for platform in ("linux/amd64", "linux/arm64/v8"):
        manifest = _add_image(layout, platform, [shared, _marker_layer(layout, "multi", platform)])
        children.append({**manifest, "platform": _platform_dict(platform)})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    layout.finish(layout.add(_canonical(index), OCI_INDEX))


def _build_big(layout: _Layout, size_mib: int) -> None:
    layers = [_add_random_layer(layout, size_mib, b"big"), _marker_layer(layout, "big", "linux/amd64")]
    layout.finish(_add_image(layout, "linux/amd64", layers))


def _add_image(layout: _Layout, platform: str, layers: list[Layer]) -> Descriptor:
    """Add config and manifest for one platform; returns the manifest's descriptor."""
    config = {
        **_platform_dict(platform),
        "created": _EPOCH,
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["echo", "hello from pullthrough"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        "history": [{"created": _EPOCH, "created_by": f"pullthrough test layer {i}"} for i in range(len(layers))],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.add(_canonical(config), _OCI_CONFIG),
        "layers": [descriptor for descriptor, _ in layers],
    }
    return layout.add(_canonical(manifest), OCI_MANIFEST)


def _busybox_layer(layout: _Layout, family: str) -> Layer:
    """busybox plus a file naming the image family, so families never share blobs by accident."""
    files = {"bin/busybox": (_BUSYBOX.read_bytes(), 0o755), "etc/pullthrough/family": (f"{family}\n".encode(), 0o644)}
    return _add_gzip_layer(layout, files)


def _marker_layer(layout: _Layout, family: str, platform: str) -> Layer:
    return _add_gzip_layer(layout, {"etc/pullthrough/platform": (f"{family} {platform}\n".encode(), 0o644)})


def _add_gzip_layer(layout: _Layout, files: dict[str, tuple[bytes, int]]) -> Layer:
    tar = _tar(files)
    return layout.add(gzip.compress(tar, compresslevel=6, mtime=0), _LAYER_GZIP), _sha256(tar)


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A reproducible tar: parent directories included, entries sorted, owner 0:0, mtime 0."""
    dirs = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs | files.keys()):
            info = tarfile.TarInfo(name)
            if name in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data, info.mode = files[name]
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _add_random_layer(layout: _Layout, size_mib: int, seed: bytes) -> Layer:
    """An uncompressed tar layer holding one file of incompressible bytes, streamed to disk a MiB at a time."""
    size = size_mib * _MIB
    info = tarfile.TarInfo("random.bin")
    info.size, info.mode = size, 0o644
    partial = layout.root / "random.tar.partial"
    with partial.open("wb") as out:
        out.write(info.tobuf(tarfile.PAX_FORMAT))
        for index in range(size_mib):
            out.write(hashlib.shake_256(seed + index.to_bytes(8, "big")).digest(_MIB))
        out.write(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive marker (size is a multiple of the block size)
    descriptor = layout.adopt(partial, _LAYER_TAR)
    return descriptor, str(descriptor["digest"])


def _platform_dict(platform: str) -> dict[str, str]:
    os_name, architecture, *variant = platform.split("/")
    return {"architecture": architecture, "os": os_name, **({"variant": variant[0]} if variant else {})}


def _platform(doc: dict[str, str]) -> str:
    """'os/architecture[/variant]' from an index entry's platform or an image config."""
    return "/".join(part for part in (doc["os"], doc["architecture"], doc.get("variant", "")) if part)


def _get(url: str, accept: Iterable[str]) -> tuple[bytes, str]:
    """GET `url` directly (no proxy); returns the body and its Content-Type."""
    request = urllib.request.Request(url, headers={"Accept": ", ".join(accept)})
    with _DIRECT.open(request, timeout=60) as response:
        return response.read(), response.headers.get_content_type()


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

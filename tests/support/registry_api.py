"""Pushing to the test upstream through the registry API by hand, as oras or cosign would: blobs, manifests, and
artifacts with a `subject` listed under the referrers tag schema (distribution 2.8 has no referrers API)."""

from __future__ import annotations

import json

import httpx

from core.digest import Digest
from core.mediatypes import OCI_INDEX, OCI_MANIFEST

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def push_blob(http: httpx.Client, repository: str, data: bytes) -> Digest:
    digest = Digest.of(data)
    start = http.post(f"/v2/{repository}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = start.headers["location"]
    separator = "&" if "?" in location else "?"
    done = http.put(f"{location}{separator}digest={digest}", content=data,
                    headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert done.status_code == 201, done.text
    return digest


def push_manifest(http: httpx.Client, repository: str, reference: str, data: bytes, media_type: str) -> Digest:
    put = http.put(f"/v2/{repository}/manifests/{reference}", content=data, headers={"Content-Type": media_type})
    assert put.status_code == 201, put.text
    return Digest.of(data)


def push_referrer(
    base_url: str, repository: str, subject: Digest, artifact_type: str, payload: bytes, *, annotations=None
) -> Digest:
    """An artifact about `subject` (a signature, an SBOM), listed in the index under `sha256-<hex>`."""
    with httpx.Client(base_url=base_url) as http:
        head = http.head(f"/v2/{repository}/manifests/{subject}", headers={"Accept": ", ".join((OCI_MANIFEST, OCI_INDEX,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json"))})  # fmt: skip
        assert head.status_code == 200, head.text
        config = push_blob(http, repository, b"{}")
        layer = push_blob(http, repository, payload)
        document = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG, "digest": str(config), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": str(layer), "size": len(payload)}],
            "subject": {"mediaType": head.headers["content-type"], "digest": str(subject),
                        "size": int(head.headers["content-length"])},
            **({"annotations": annotations} if annotations else {}),
        }  # fmt: skip
        data = json.dumps(document).encode()
        digest = push_manifest(http, repository, str(Digest.of(data)), data, OCI_MANIFEST)
        # the fallback's read-modify-write of the tag-schema index
        tag = f"sha256-{subject.encoded}"
        current = http.get(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_INDEX})
        entries = current.json()["manifests"] if current.status_code == 200 else []
        entry = {"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(data), "artifactType": artifact_type}
        if annotations:
            entry["annotations"] = annotations
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [*entries, entry]}).encode()
        push_manifest(http, repository, tag, index, OCI_INDEX)
        return digest

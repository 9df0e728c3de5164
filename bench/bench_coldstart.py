"""Cold start of the registry Lambda handler, measured here: a fresh Python process per run imports
`handlers.functions.api` (building every client at module level, as on Lambda) and answers its first requests.

S3 and DynamoDB are moto in server mode on 127.0.0.1 and the upstream is a real registry, so network latency is
loopback's; on Lambda add the real service round trips. Prints a table of medians and p90 over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.contract.test_upstreams import REPOSITORY, image_document, push_with_the_registry_api
from tests.support.moto import MotoServer
from tests.support.upstream import DistributionRegistry

CHILD = r"""
import json, sys, time
started = time.perf_counter()
from handlers.functions import api as lambda_api
from handlers.devtools.lambda_emulator import LocalContext, http_api_event
imported = time.perf_counter()

def call(path, headers=()):
    begin = time.perf_counter()
    answer = lambda_api.handler(http_api_event("GET", path, list(headers), b"", "127.0.0.1"), LocalContext())
    assert answer["statusCode"] == 200, answer
    return (time.perf_counter() - begin) * 1000

ping = call("/v2/")
manifest = call(sys.argv[1], [("Accept", "application/vnd.oci.image.manifest.v1+json")])
warm = call(sys.argv[1], [("Accept", "application/vnd.oci.image.manifest.v1+json")])
print(json.dumps({"import_ms": (imported - started) * 1000, "first_ping_ms": ping,
                  "first_manifest_ms": manifest, "warm_manifest_ms": warm}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pullthrough-coldstart-"))
    with DistributionRegistry(work / "upstream") as upstream, MotoServer(work / "moto") as moto:
        layer = b"layer" * 100
        manifest = json.dumps(image_document(_digest(b"{}"), _digest(layer), len(layer))).encode()
        push_with_the_registry_api(upstream.url, [b"{}", layer], manifest, ("v1",))
        env = {
            **os.environ, "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1", "PULLTHROUGH_TABLE_NAME": "bench", "PULLTHROUGH_BUCKET_NAME": "bench",
            "PULLTHROUGH_FILL_FUNCTION_NAME": "bench-fill", "PULLTHROUGH_BUILTIN_RULES": "",
            "POWERTOOLS_SERVICE_NAME": "pullthrough", "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING", "PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS": "1",
            "PULLTHROUGH_AUTH": "none",  # the same import; a token check costs microseconds per request
            "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        }  # fmt: skip
        _prepare(env, upstream.url)
        path = f"/v2/up/{REPOSITORY}/manifests/v1"
        subprocess.run([sys.executable, "-c", CHILD, path], env=env, check=True, capture_output=True)  # fills it
        runs = []
        for _ in range(args.runs):
            output = subprocess.run([sys.executable, "-c", CHILD, path], env=env, check=True,
                                    capture_output=True, text=True)  # fmt: skip
            runs.append(json.loads(output.stdout.strip().splitlines()[-1]))
    print(f"\nLambda handler cold start, {args.runs} fresh processes (python {sys.version.split()[0]}, this machine)\n")
    print("| step | median | p90 |\n|---|---|---|")
    for key, label in (("import_ms", "import handlers.functions.api (app, clients, Powertools)"),
                       ("first_ping_ms", "first request: GET /v2/"),
                       ("first_manifest_ms", "first manifest GET (cache hit: DynamoDB + S3)"),
                       ("warm_manifest_ms", "second manifest GET (same process)")):  # fmt: skip
        values = sorted(run[key] for run in runs)
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        print(f"| {label} | {statistics.median(values):.0f} ms | {p90:.0f} ms |")


def _digest(data: bytes):  # type: ignore[no-untyped-def]
    from core.digest import Digest

    return Digest.of(data)


def _prepare(env: dict[str, str], upstream_url: str) -> None:
    script = (
        "from core.rules import Rule, RuleSet\n"
        "from handlers.composition.aws import ensure_resources, store_rules\n"
        "from handlers.settings import AwsSettings\n"
        "settings = AwsSettings.from_environment()\n"
        "ensure_resources(settings)\n"
        f"store_rules(settings, RuleSet([Rule('up', {upstream_url!r})]))\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True)


if __name__ == "__main__":
    main()

"""Cold start of the Lambda functions against the design card's floor, measured here.

Each run is a fresh Python 3.12 process (the functions' runtime; `make sam-tools` provides it) that imports a
function's handler module (building every client at module level, as on Lambda) and, for the registry API, answers
its first requests. The processes see only a Lambda package, never the development virtualenv, and may not write
bytecode (Lambda's code directory is read-only). The package comes in two builds:

- "sam build": the dependencies unpacked from their wheels and the source copied, no bytecode, as `sam build`
  leaves them. Every module is compiled again by every cold start.
- "lambda-build": the same, compiled by `make lambda-bytecode` (what `make lambda-build` adds before a deploy).

The floor is the least a function built from the design card's packages can do: import FastAPI, Mangum and
Powertools Logger and Metrics, make a boto3 session with S3 and DynamoDB clients, and answer the same manifest GET
with the same two reads (a DynamoDB GetItem and an S3 GetObject). "floor + Tracer" adds Powertools Tracer (the X-Ray
SDK). Each subject is compared with the floor in the same build. S3 and DynamoDB are moto in server mode on 127.0.0.1
and the upstream a real registry. Prints a table of medians and p90 over the runs; `--importtime` adds the API
handler's heaviest modules (python -X importtime).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.contract.test_upstreams import REPOSITORY, image_document, push_with_the_registry_api  # noqa: E402
from tests.support.moto import MotoServer  # noqa: E402
from tests.support.upstream import DistributionRegistry  # noqa: E402

from core.digest import Digest  # noqa: E402

ACCEPT = ("Accept", "application/vnd.oci.image.manifest.v1+json")

# Each child prints one JSON line: milliseconds from its first statement.
API_CHILD = r"""
import json, sys, time
started = time.perf_counter()
from handlers.functions import api
imported = time.perf_counter()
from handlers.devtools.lambda_emulator import LocalContext, http_api_event

def call(path, headers=()):
    begin = time.perf_counter()
    answer = api.handler(http_api_event("GET", path, list(headers), b"", "127.0.0.1"), LocalContext())
    assert answer["statusCode"] == 200, answer
    return (time.perf_counter() - begin) * 1000

manifest = call(sys.argv[1], [tuple(sys.argv[2].split(": ", 1))])
warm = call(sys.argv[1], [tuple(sys.argv[2].split(": ", 1))])
print(json.dumps({"import_ms": (imported - started) * 1000, "first_ms": manifest, "warm_ms": warm}))
"""

IMPORT_CHILD = r"""
import importlib, json, sys, time
started = time.perf_counter()
importlib.import_module(sys.argv[1])
print(json.dumps({"import_ms": (time.perf_counter() - started) * 1000}))
"""

FLOOR_CHILD = r"""
import json, sys, time
started = time.perf_counter()
import boto3
from aws_lambda_powertools import Logger, Metrics
from fastapi import FastAPI, Request, Response
from mangum import Mangum

logger, metrics = Logger(), Metrics(namespace="Floor")
session = boto3.session.Session()
s3, dynamodb = session.client("s3"), session.client("dynamodb")
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
table, bucket, partition, sort, key, media_type = sys.argv[3:9]

@app.get("/v2/{name:path}/manifests/{reference}")
def manifest(request: Request) -> Response:
    dynamodb.get_item(TableName=table, Key={"pk": {"S": partition}, "sk": {"S": sort}})
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return Response(data, media_type=media_type)

handler = logger.inject_lambda_context(Mangum(app, lifespan="off"))
if sys.argv[9] == "tracer":
    from aws_lambda_powertools import Tracer
    handler = Tracer().capture_lambda_handler(handler)
handler = metrics.log_metrics(handler)
imported = time.perf_counter()
from handlers.devtools.lambda_emulator import LocalContext, http_api_event

def call(path, headers=()):
    begin = time.perf_counter()
    answer = handler(http_api_event("GET", path, list(headers), b"", "127.0.0.1"), LocalContext())
    assert answer["statusCode"] == 200, answer
    return (time.perf_counter() - begin) * 1000

manifest = call(sys.argv[1], [tuple(sys.argv[2].split(": ", 1))])
warm = call(sys.argv[1], [tuple(sys.argv[2].split(": ", 1))])
print(json.dumps({"import_ms": (imported - started) * 1000, "first_ms": manifest, "warm_ms": warm}))
"""

FUNCTIONS = ("fill", "refresh", "sweep", "admin")


LAMBDA_PYTHON = ROOT / ".venv-sam" / "bin" / "python"  # `make sam-tools`: the runtime's Python 3.12
BUILDS = ("lambda-build", "sam build")


def lambda_dependencies() -> Path:
    """src/requirements.txt unpacked without bytecode, as `sam build` does: once per requirements file."""
    requirements = ROOT / "src" / "requirements.txt"
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    site = Path.home() / ".cache" / "pullthrough" / f"lambda-dependencies-{key}"
    if not (site / ".complete").exists():
        print(f"installing src/requirements.txt into {site} (once)", file=sys.stderr)
        subprocess.run([LAMBDA_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                        "--target", site, "-r", requirements], check=True)  # fmt: skip
        (site / ".complete").touch()
    return site


def lambda_packages(work: Path) -> dict[str, Path]:
    """The function package in both builds: {build: the directory for PYTHONPATH}."""
    plain = work / "sam-build" / "Function"
    shutil.copytree(lambda_dependencies(), plain, ignore=shutil.ignore_patterns(".complete", "__pycache__"))
    for package in ("core", "handlers", "pullthrough_adapters"):
        shutil.copytree(ROOT / "src" / package, plain / package, ignore=shutil.ignore_patterns("__pycache__"))
    compiled = work / "lambda-build" / "Function"
    shutil.copytree(plain, compiled)
    subprocess.run(["make", "--no-print-directory", "-C", ROOT, "lambda-bytecode",
                    f"LAMBDA_BUILD_DIR={compiled.parent}", f"PYTHON_LAMBDA={LAMBDA_PYTHON}"], check=True)  # fmt: skip
    return {"sam build": plain, "lambda-build": compiled}


def run_child(script: str, argv: list[str], env: dict[str, str]) -> dict[str, float]:
    # -S: no site-packages, only the Lambda package on PYTHONPATH
    output = subprocess.run([LAMBDA_PYTHON, "-S", "-c", script, *argv], env=env, check=True,
                            capture_output=True, text=True)  # fmt: skip
    result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--importtime", action="store_true", help="print the API handler's heaviest imports")
    args = parser.parse_args()
    if not LAMBDA_PYTHON.exists():
        sys.exit("the runtime's Python is missing: `make sam-tools`")
    work = Path(tempfile.mkdtemp(prefix="pullthrough-coldstart-"))
    packages = lambda_packages(work)
    with DistributionRegistry(work / "upstream") as upstream, MotoServer(work / "moto") as moto:
        layer = b"layer" * 100
        manifest = json.dumps(image_document(Digest.of(b"{}"), Digest.of(layer), len(layer))).encode()
        push_with_the_registry_api(upstream.url, [b"{}", layer], manifest, ("v1",))
        env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1", "PULLTHROUGH_TABLE_NAME": "bench", "PULLTHROUGH_BUCKET_NAME": "bench",
            "PULLTHROUGH_FILL_FUNCTION_NAME": "bench-fill", "PULLTHROUGH_BUILTIN_RULES": "",
            "POWERTOOLS_SERVICE_NAME": "pullthrough", "POWERTOOLS_METRICS_NAMESPACE": "Pullthrough",
            "POWERTOOLS_TRACE_DISABLED": "true",  # the template's default (DetailedTracing=false)
            "POWERTOOLS_LOG_LEVEL": "WARNING", "PULLTHROUGH_ALLOW_PRIVATE_UPSTREAMS": "1",
            "PULLTHROUGH_AUTH": "none",  # the same import; a token check costs microseconds per request
            "PYTHONDONTWRITEBYTECODE": "1",  # Lambda's code directory is read-only
        }  # fmt: skip
        envs = {build: {**env, "PYTHONPATH": str(package)} for build, package in packages.items()}
        _prepare(envs["lambda-build"], upstream.url)
        path = f"/v2/up/{REPOSITORY}/manifests/v1"
        run_child(API_CHILD, [path, ": ".join(ACCEPT)], envs["lambda-build"])  # fills it
        digest = Digest.of(manifest)
        floor_argv = [path, ": ".join(ACCEPT), "bench", "bench", f"TAG#up#{REPOSITORY}", "v1",
                      f"blobs/sha256/{digest.encoded}", ACCEPT[1]]  # fmt: skip
        tracing = {"POWERTOOLS_TRACE_DISABLED": "false", "AWS_XRAY_SDK_ENABLED": "false"}
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.runs):  # interleaved, so that a busy moment of the machine hits every subject alike
            for build, build_env in envs.items():
                for subject, script, argv, extra in (
                    ("api", API_CHILD, [path, ": ".join(ACCEPT)], {}),
                    ("floor", FLOOR_CHILD, [*floor_argv, "plain"], {}),
                    ("floor+tracer", FLOOR_CHILD, [*floor_argv, "tracer"], tracing),
                    *((function, IMPORT_CHILD, [f"handlers.functions.{function}"], {}) for function in FUNCTIONS),
                ):
                    runs.setdefault((subject, build), []).append(run_child(script, argv, {**build_env, **extra}))
        if args.importtime:
            profile = subprocess.run([LAMBDA_PYTHON, "-S", "-X", "importtime", "-c", "import handlers.functions.api"],
                                     env=envs["lambda-build"], check=True, capture_output=True,
                                     text=True).stderr  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    print_table(runs, args.runs)
    if args.importtime:
        print_importtime(profile)


def median_p90(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


LABELS = {
    "api": "ApiFunction (handlers.functions.api)",
    "floor": "floor: the design card's packages",
    "floor+tracer": "floor + Powertools Tracer",
    **{f: f"{f} function (import only)" for f in FUNCTIONS},
}


def print_table(runs: dict[tuple[str, str], list[dict[str, float]]], count: int) -> None:
    print(f"\nLambda cold start, {count} fresh processes each (python 3.12 as the runtime, the Lambda package, no "
          "bytecode written; this machine; S3 and DynamoDB on moto)\n")  # fmt: skip
    print("| subject | build | import (median / p90) | first manifest GET | import + first answer "
          "| vs floor, same build | warm GET |\n|---|---|---|---|---|---|---|")  # fmt: skip
    floors = {build: _total(runs[("floor", build)]) for build in BUILDS}
    for (subject, build), measured in runs.items():
        imported, imported_p90 = median_p90([run["import_ms"] for run in measured])
        answered = "first_ms" in measured[0]
        total = _total(measured) if answered else imported
        first = f"{statistics.median(run['first_ms'] for run in measured):.0f} ms" if answered else ""
        warm = f"{statistics.median(run['warm_ms'] for run in measured):.1f} ms" if answered else ""
        print(f"| {LABELS[subject]} | {build} | {imported:.0f} / {imported_p90:.0f} ms | {first} | "
              f"{total:.0f} ms | {total / floors[build]:.2f}x | {warm} |")  # fmt: skip
    shipped = _total(runs[("api", "lambda-build")])
    print(
        f"\nApiFunction as `make lambda-build` ships it, against the floor as `sam build` ships it: "
        f"{shipped / floors['sam build']:.2f}x ({shipped:.0f} / {floors['sam build']:.0f} ms)"
    )


def _total(measured: list[dict[str, float]]) -> float:
    """Median of import + first answer (or of the import alone, for the functions only imported)."""
    return statistics.median(run["import_ms"] + run.get("first_ms", 0.0) for run in measured)


def print_importtime(profile: str) -> None:
    """The heaviest modules by their own import time, and the top-level packages by cumulative time."""
    rows = []
    for line in profile.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((int(own), int(cumulative), name))
    print("\nImport of handlers.functions.api, heaviest modules by their own time\n")
    print("| module | self | cumulative |\n|---|---|---|")
    for own, cumulative, name in sorted(rows, reverse=True)[:15]:
        print(f"| {name.strip()} | {own / 1000:.1f} ms | {cumulative / 1000:.1f} ms |")


def _prepare(env: dict[str, str], upstream_url: str) -> None:
    script = (
        "from core.rules import Rule, RuleSet\n"
        "from handlers.composition.aws import ensure_resources, store_rules\n"
        "from handlers.settings import AwsSettings\n"
        "settings = AwsSettings.from_environment()\n"
        "ensure_resources(settings)\n"
        f"store_rules(settings, RuleSet([Rule('up', {upstream_url!r})]))\n"
    )
    subprocess.run([LAMBDA_PYTHON, "-S", "-c", script], env=env, check=True)


if __name__ == "__main__":
    main()

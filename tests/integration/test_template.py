"""The AWS deployment (template.yaml, samconfig.toml, src/requirements.txt, events/) checked without an AWS account.

cfn-lint validates the SAM template, and the template SAM expands it into; the SAM translator (the code that runs as
the `AWS::Serverless-2016-10-31` transform) expands it offline with a stub managed-policy loader; every Lambda handler
must import; IAM must stay least-privilege; the sample events must look like what API Gateway and EventBridge
Scheduler send.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pullthrough_adapters.aws.dynamodb_metadata_store import TABLE_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SRC = ROOT / "src"
EVENTS = ROOT / "events"

FUNCTIONS = {"ApiFunction", "FillFunction", "RefreshFunction", "AdminFunction", "SweepFunction"}
# Secrets Manager ARNs end in a random suffix: credentials secrets are granted by name prefix, as ECR names them.
CREDENTIALS_SECRETS = (
    "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:ecr-pullthroughcache/*"
)
SNAPSTART_FUNCTIONS = {"ApiFunction"}
# What only the local server and the CLI use, and the Lambda package (src/requirements.txt) leaves out.
LOCAL_MODE_ONLY = {"uvicorn", "click", "prometheus-client", "jinja2", "rich", "pyyaml"}
LOCAL_MODE_MODULES = {"uvicorn", "click", "prometheus_client", "jinja2", "rich", "yaml"}
# What each function's cold start leaves unimported (handlers.composition keeps a module per kind of function).
NOT_AT_COLD_START = {
    "ApiFunction": {"core.lifecycle", "core.refresh", "core.stats", "handlers.http.admin"},
    "AdminFunction": {"core.lifecycle", "core.refresh", "core.stats", "handlers.http.registry"},
    "FillFunction": {"fastapi", "core.lifecycle", "core.refresh", "core.stats"},
    "RefreshFunction": {"fastapi"},
    "SweepFunction": {"fastapi"},
}
# The AWS clients each function makes at its cold start (the API's are then in its SnapStart snapshot).
CLIENTS_AT_COLD_START = {
    "ApiFunction": {"s3", "dynamodb"},
    "AdminFunction": {"dynamodb"},
    "FillFunction": {"s3", "dynamodb"},
    "RefreshFunction": {"s3", "dynamodb"},
    "SweepFunction": {"s3", "dynamodb"},
}
API_GATEWAY_TIMEOUT_SECONDS = 30
# SAM attaches these AWS managed policies to every role it generates (logs; X-Ray for Tracing: Active).
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
PLACEHOLDER = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::StackName": "pullthrough"}


def _require(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        pytest.fail(f"{module} is missing: pip install cfn-lint aws-sam-translator (project dev dependencies)")


def _load_template() -> dict[str, Any]:
    yaml_helper = _require("samtranslator.yaml_helper")
    return yaml_helper.yaml_parse(TEMPLATE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return _load_template()


class _NoManagedPolicies:
    """Test double for samtranslator's ManagedPolicyLoader, which would call IAM ListPolicies."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    return _translate(template, {})


def _translate(template: dict[str, Any], parameters: dict[str, str]) -> dict[str, Any]:
    """What the SAM transform makes of the template, given these parameter values."""
    transform = _require("samtranslator.translator.transform").transform
    sam = copy.deepcopy(template)
    # `sam package`/`sam deploy` replace the local CodeUri by the S3 location of the uploaded zip; so do we.
    sam["Globals"]["Function"]["CodeUri"] = "s3://pullthrough-artifacts/code.zip"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        return transform(sam, parameters, _NoManagedPolicies())  # type: ignore[no-any-return]


def deployed(template: dict[str, Any], **parameters: str) -> dict[str, Any]:
    """The template as CloudFormation would deploy it with these parameters (the others at their defaults): each
    condition decided, resources whose condition is false gone, every Fn::If taken, AWS::NoValue dropped."""
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    unknown = set(parameters) - set(values)
    assert not unknown, f"no such parameters: {unknown}"
    values.update(parameters)
    conditions: dict[str, bool] = {}

    lists = {name for name, spec in template.get("Parameters", {}).items() if spec["Type"] == "CommaDelimitedList"}

    def value(node: Any) -> Any:
        """A value in a condition: Ref, Fn::Select, Fn::Split, Fn::Join and Fn::Sub over parameters."""
        if not isinstance(node, dict):
            return node
        (function, arguments), *_ = node.items()
        if function == "Ref":
            found = values[arguments]
            return found.split(",") if arguments in lists else found
        if function == "Fn::Select":
            return value(arguments[1])[int(arguments[0])]
        if function == "Fn::Split":
            return value(arguments[1]).split(arguments[0])
        if function == "Fn::Join":
            parts = value(arguments[1]) if isinstance(arguments[1], dict) else [value(part) for part in arguments[1]]
            return arguments[0].join(parts)
        if function == "Fn::Sub":
            text, names = arguments
            return re.sub(r"\$\{(\w+)\}", lambda match: value(names[match.group(1)]), text)
        raise AssertionError(f"{function} not understood in a condition")

    def decide(node: Any) -> bool:
        (function, arguments), *_ = node.items()
        if function == "Condition":
            return condition(arguments)
        if function == "Fn::Equals":
            return bool(value(arguments[0]) == value(arguments[1]))
        if function == "Fn::Not":
            return not decide(arguments[0])
        if function == "Fn::And":
            return all(decide(argument) for argument in arguments)
        if function == "Fn::Or":
            return any(decide(argument) for argument in arguments)
        raise AssertionError(f"condition function {function} not understood")

    def condition(name: str) -> bool:
        if name not in conditions:
            conditions[name] = decide(template["Conditions"][name])
        return conditions[name]

    no_value = {"Ref": "AWS::NoValue"}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Fn::If"}:
                name, when_true, when_false = node["Fn::If"]
                return resolve(when_true if condition(name) else when_false)
            return {key: resolved for key, item in node.items() if (resolved := resolve(item)) != no_value}
        if isinstance(node, list):
            return [resolved for item in node if (resolved := resolve(item)) != no_value]
        return node

    result = copy.deepcopy(template)
    result["Resources"] = {name: resource for name, resource in result["Resources"].items()
                           if "Condition" not in resource or condition(resource["Condition"])}  # fmt: skip
    result["Outputs"] = {name: output for name, output in result.get("Outputs", {}).items()
                         if "Condition" not in output or condition(output["Condition"])}  # fmt: skip
    return resolve(result)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def by_default(transformed: dict[str, Any]) -> dict[str, Any]:
    """What `sam deploy` with every parameter at its default creates."""
    return deployed(transformed)


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def _cfn_lint(*paths: Path, ignore: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    _require("cfnlint")
    command = [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]
    ignored = ["--ignore-checks", *ignore] if ignore else []
    result = subprocess.run(
        [*command, "--format", "json", "--include-checks", "I", *ignored, "--regions", "us-east-1", "eu-west-1", "--"]
        + [str(path) for path in paths],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.strip().startswith("["), f"cfn-lint did not run:\n{result.stdout}\n{result.stderr}"
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    for finding in findings:
        where = f"{finding['Filename']}:{finding['Location']['Start']['LineNumber']}"
        print(f"{finding['Level']} {finding['Rule']['Id']} {where} {finding['Message']}")
    return findings


# --- (a) cfn-lint -------------------------------------------------------------------------------------------------


def test_cfn_lint_finds_nothing_in_the_sam_template() -> None:
    findings = _cfn_lint(TEMPLATE)
    assert [f for f in findings if f["Level"] == "Error"] == []
    assert findings == [], "cfn-lint warnings/informational findings (printed above)"


def test_cfn_lint_finds_nothing_in_the_transformed_template(transformed: dict[str, Any], tmp_path: Path) -> None:
    expanded = tmp_path / "transformed.json"
    expanded.write_text(json.dumps(transformed, indent=1))
    findings = _cfn_lint(expanded)
    assert findings == [], "cfn-lint findings in what SAM generates (printed above)"


def test_cfn_lint_finds_nothing_in_what_each_deploy_option_creates(template: dict[str, Any], tmp_path: Path) -> None:
    """Every mode's template, translated by SAM with its parameters and its conditions decided (`deployed`), linted
    on its own: a reference left dangling by a resource another mode leaves out would show here."""
    paths = []
    for mode, parameters in MODES.items():
        decided = deployed(_translate(template, parameters), **parameters)
        decided.pop("Conditions", None)
        for declared in [*decided["Resources"].values(), *decided["Outputs"].values()]:
            declared.pop("Condition", None)
        for name, value in parameters.items():  # checked as this mode's values, not the defaults
            decided["Parameters"][name]["Default"] = value
        path = tmp_path / f"{re.sub(r'[^a-z]+', '-', mode)}.json"
        path.write_text(json.dumps(decided, indent=1))
        paths.append(path)
    # W2001: a parameter only other modes use is unused in this one
    assert _cfn_lint(*paths, ignore=("W2001",)) == [], "cfn-lint findings in a mode's template (printed above)"


# --- (b) the SAM translation ---------------------------------------------------------------------------------------


def test_http_api_serves_the_default_route_from_the_root(by_default: dict[str, Any]) -> None:
    (api,) = resources_of(by_default, "AWS::ApiGatewayV2::Api").values()
    paths = api["Properties"]["Body"]["paths"]
    assert sorted(paths) == ["/$default", "/admin/{proxy+}"]
    integration = paths["/$default"]["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
    # the rules admin API only takes SigV4-signed requests
    admin = paths["/admin/{proxy+}"]["x-amazon-apigateway-any-method"]
    assert admin["security"] == [{"AWS_IAM": []}]
    assert "AdminFunction" in json.dumps(admin["x-amazon-apigateway-integration"]["uri"])
    assert integration["payloadFormatVersion"] == "2.0"
    assert integration["timeoutInMillis"] <= API_GATEWAY_TIMEOUT_SECONDS * 1000
    # SnapStart only applies to published versions: the integration must call the alias, not $LATEST.
    assert "${ApiFunctionAliaslive}" in integration["uri"]["Fn::Sub"]

    (stage,) = resources_of(by_default, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default"
    assert props["AutoDeploy"] is True
    assert set(props["DefaultRouteSettings"]) >= {"ThrottlingRateLimit", "ThrottlingBurstLimit"}
    log_format = json.loads(props["AccessLogSettings"]["Format"])
    assert set(log_format) >= {"requestId", "ip", "method", "path", "status", "latency", "integrationError"}
    log_group = props["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert "RetentionInDays" in by_default["Resources"][log_group]["Properties"]

    permissions = [
        p["Properties"]["FunctionName"] for p in resources_of(by_default, "AWS::Lambda::Permission").values()
    ]
    assert sorted(permissions, key=json.dumps) == [{"Ref": "AdminFunction"}, {"Ref": "ApiFunctionAliaslive"}]


DOMAIN = {
    "DomainName": "registry.example.com",
    "HostedZoneId": "Z0123456789ABCDEFGHIJ",
    "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012",
}
PRIVATE = {"Exposure": "private", "VpcId": "vpc-0123456789abcdef0", "S3VpcEndpointId": "vpce-0123456789abcdef0",
           "SubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210"}  # fmt: skip


def test_custom_domain_is_conditional_and_mapped_at_the_root(transformed: dict[str, Any]) -> None:
    assert resources_of(deployed(transformed), "AWS::ApiGatewayV2::DomainName") == {}
    public = deployed(transformed, **DOMAIN)
    (domain,) = resources_of(public, "AWS::ApiGatewayV2::DomainName").values()
    (mapping,) = resources_of(public, "AWS::ApiGatewayV2::ApiMapping").values()
    (record,) = resources_of(public, "AWS::Route53::RecordSet").values()
    assert domain["Properties"]["DomainNameConfigurations"][0]["EndpointType"] == "REGIONAL"
    assert "ApiMappingKey" not in mapping["Properties"]
    assert mapping["Properties"]["Stage"] == {"Ref": "HttpApiApiGatewayDefaultStage"}
    assert record["Properties"]["AliasTarget"]["DNSName"] == {"Fn::GetAtt": ["CustomDomain", "RegionalDomainName"]}
    for parameter in DOMAIN:
        assert transformed["Parameters"][parameter]["Default"] == ""


def test_functions_are_arm64_traced_with_logs_and_sized_for_their_job(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    assert set(functions) == FUNCTIONS
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Architectures"] == [{"Ref": "Architecture"}], name  # arm64 unless run by `sam local` on x86
        assert props["Runtime"] in {"python3.12", "python3.13"}, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        log_group = transformed["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Type"] == "AWS::Logs::LogGroup", name
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
        assert ("SnapStart" in props) == (name in SNAPSTART_FUNCTIONS), name
    assert transformed["Parameters"]["Architecture"]["Default"] == "arm64"
    assert functions["ApiFunction"]["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert functions["ApiFunction"]["Properties"]["Timeout"] < API_GATEWAY_TIMEOUT_SECONDS
    assert functions["FillFunction"]["Properties"]["Timeout"] == 900


# The table every function uses: its own, the global one it made, or (a replica Region's stack) the primary's.
TABLE_NAME = {"Fn::If": ["IsReplica", {"Ref": "PrimaryTableName"},
                         {"Fn::If": ["HasReplicas", {"Ref": "GlobalTable"}, {"Ref": "Table"}]}]}  # fmt: skip


def test_environment_matches_what_the_code_reads(transformed: dict[str, Any]) -> None:
    functions = resources_of(transformed, "AWS::Lambda::Function")
    shared = {
        "PULLTHROUGH_TABLE_NAME": TABLE_NAME,
        "PULLTHROUGH_VERIFY_STORED_BYTES": {"Fn::If": ["SpansRegions", "true", "false"]},
        "PULLTHROUGH_BUCKET_NAME": {"Ref": "Bucket"},
        "PULLTHROUGH_BUILTIN_RULES": {"Ref": "BuiltinUpstreams"},
        "PULLTHROUGH_SYNC_FILL_MAX_BYTES": {"Ref": "SyncFillMaxBytes"},
        "PULLTHROUGH_PRESIGN_EXPIRY_SECONDS": {"Ref": "PresignExpirySeconds"},
        "POWERTOOLS_SERVICE_NAME": {"Ref": "AWS::StackName"},
        "POWERTOOLS_METRICS_NAMESPACE": "Pullthrough",
        "POWERTOOLS_LOG_LEVEL": {"Ref": "LogLevel"},
        "POWERTOOLS_TRACE_DISABLED": {"Fn::If": ["HasDetailedTracing", "false", "true"]},
    }
    for name, function in functions.items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables.items() >= shared.items(), name
    fill = {"PULLTHROUGH_FILL_FUNCTION_NAME": {"Ref": "FillFunction"}}
    assert functions["ApiFunction"]["Properties"]["Environment"]["Variables"].items() >= fill.items()
    # The fill function knows nothing of the API function (no dependency cycle).
    assert "ApiFunction" not in json.dumps(functions["FillFunction"])
    parameters = transformed["Parameters"]
    assert parameters["BuiltinUpstreams"]["Default"] == "docker-hub,ghcr,quay,ecr-public,k8s"
    from handlers.presets import PRESETS  # every preset can be enabled, and nothing else

    pattern = parameters["BuiltinUpstreams"]["AllowedPattern"]
    assert re.fullmatch(pattern, ",".join(PRESETS)) and re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "docker-hub,nope") and not re.fullmatch(pattern, "docker-hub, ghcr")
    assert parameters["SyncFillMaxBytes"]["Default"] == 67108864
    assert parameters["PresignExpirySeconds"]["Default"] == 600
    assert parameters["LogLevel"]["Default"] == "INFO"
    assert parameters["DetailedTracing"]["Default"] == "false"  # the X-Ray SDK's import is a cold start cost


def test_the_live_alias_gets_a_new_version_when_a_parameter_changes(template: dict[str, Any]) -> None:
    # SAM names the version after a hash of the template text, so a parameter-only change would leave `live` on a
    # version with the old environment; the version description carries every parameter the environment uses.
    environment = json.dumps(template["Globals"]["Function"]["Environment"])
    used = set(re.findall(r'"Ref": "([A-Za-z0-9]+)"', environment)) & set(template["Parameters"])
    description = json.dumps(template["Resources"]["ApiFunction"]["Properties"]["VersionDescription"]["Fn::Sub"])
    assert used
    assert {parameter for parameter in used if f"${{{parameter}}}" not in description} == set()


def test_table_is_on_demand_encrypted_recoverable_with_ttl(by_default: dict[str, Any]) -> None:
    (table,) = resources_of(by_default, "AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    # the keys and indexes the adapter queries (and `serve --lambda` creates) are the deployed table's
    assert {key: props[key] for key in TABLE_SCHEMA} == TABLE_SCHEMA
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_bucket_is_private_encrypted_tls_only_and_cleans_up_uploads(by_default: dict[str, Any]) -> None:
    (bucket,) = resources_of(by_default, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert {"DaysAfterInitiation": 1} in [rule.get("AbortIncompleteMultipartUpload") for rule in rules]

    (policy,) = resources_of(by_default, "AWS::S3::BucketPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["Bucket", "Arn"]} in statement["Resource"]


def schedule_of(transformed: dict[str, Any], function: str) -> dict[str, Any]:
    (schedule,) = [schedule for schedule in resources_of(transformed, "AWS::Scheduler::Schedule").values()
                   if schedule["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [function, "Arn"]}]  # fmt: skip
    return schedule


def test_refresh_runs_on_an_eventbridge_scheduler_schedule(transformed: dict[str, Any]) -> None:
    assert resources_of(transformed, "AWS::Events::Rule") == {}
    assert len(resources_of(transformed, "AWS::Scheduler::Schedule")) == 2  # the refresh and the sweep
    schedule = schedule_of(transformed, "RefreshFunction")
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "RefreshSchedule"}
    assert transformed["Parameters"]["RefreshSchedule"]["Default"] == "rate(15 minutes)"
    assert props["FlexibleTimeWindow"]["Mode"] in {"OFF", "FLEXIBLE"}
    assert props["Target"]["Arn"] == {"Fn::GetAtt": ["RefreshFunction", "Arn"]}
    assert {"MaximumRetryAttempts", "MaximumEventAgeInSeconds"} <= set(props["Target"]["RetryPolicy"])
    assert "Name" not in props, "a fixed schedule name collides between two stacks in one account"


def test_the_lifecycle_sweep_runs_on_its_own_schedule(transformed: dict[str, Any]) -> None:
    props = schedule_of(deployed(transformed), "SweepFunction")["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "SweepSchedule"} and props["State"] == {"Ref": "SweepState"}
    assert transformed["Parameters"]["SweepSchedule"]["Default"] == "rate(1 day)"
    assert transformed["Parameters"]["BuiltinExpireUnpulled"]["Default"] == ""  # keep forever unless asked
    assert "Name" not in props
    sweep = resources_of(transformed, "AWS::Lambda::Function")["SweepFunction"]["Properties"]
    assert sweep["Environment"]["Variables"]["PULLTHROUGH_SWEEP_GRACE_SECONDS"] == {"Ref": "SweepGraceSeconds"}
    grace = transformed["Parameters"]["SweepGraceSeconds"]
    presign = transformed["Parameters"]["PresignExpirySeconds"]
    assert int(grace["MinValue"]) >= int(presign["MaxValue"])  # a presigned URL handed out never outlives its bytes


def test_scheduler_input_has_the_shape_of_the_sample_event(transformed: dict[str, Any]) -> None:
    schedule = schedule_of(transformed, "RefreshFunction")
    text = schedule["Properties"]["Target"]["Input"]["Fn::Sub"]
    for name, value in PLACEHOLDER.items():
        text = text.replace(f"${{{name}}}", value)
    text = re.sub(r"<aws\.scheduler\.[a-z-]+>", "x", text)
    sample = json.loads((EVENTS / "scheduled-refresh.json").read_text())
    assert set(json.loads(text)) == set(sample)


def test_outputs_tell_users_where_the_registry_is(transformed: dict[str, Any]) -> None:
    def output(name: str, **parameters: str) -> Any:
        return deployed(transformed, **parameters)["Outputs"][name]["Value"]

    outputs = deployed(transformed)["Outputs"]
    assert {"RegistryUrl", "RegistryHost", "TableName", "BucketName"} <= set(outputs)
    assert {f"{name}Name" for name in FUNCTIONS} <= set(outputs)
    default_url = "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    assert output("RegistryUrl") == {"Fn::Sub": default_url}
    assert output("RegistryHost") == {"Fn::Sub": default_url.removeprefix("https://")}
    assert output("RegistryUrl", **DOMAIN) == {"Fn::Sub": "https://${DomainName}"}
    assert output("RegistryUrl", **PRIVATE, **DOMAIN) == {"Fn::Sub": "https://${DomainName}"}
    assert output("RegistryUrl", **PRIVATE) == {"Fn::Sub": "http://${LoadBalancer.DNSName}"}
    assert output("RegistryHost", **PRIVATE) == {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}


# --- (c) every handler imports --------------------------------------------------------------------------------------


def _handlers() -> list[tuple[str, str]]:
    template = _load_template()
    return sorted(
        (name, res["Properties"]["Handler"])
        for name, res in template["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    )


def _lambda_environment(template: dict[str, Any], function: str) -> dict[str, str]:
    """The variables the template gives `function`, with parameter defaults and dummy resource names."""
    by_default = deployed(template)
    variables = {
        **by_default["Globals"]["Function"]["Environment"]["Variables"],
        **by_default["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    return {key: str(_resolve(template, value)) for key, value in variables.items()}


def _resolve(template: dict[str, Any], value: Any) -> Any:
    """A deployed value with parameters at their defaults: a Ref, or a resource's name (a dummy)."""
    if not isinstance(value, dict):
        return value
    ref = value["Ref"]
    parameter = template["Parameters"].get(ref)
    return str(parameter["Default"]) if parameter else f"pullthrough-test-{ref.lower()}"


def test_every_function_has_its_handler_checked() -> None:
    assert {function for function, _ in _handlers()} == FUNCTIONS


@pytest.mark.parametrize(("function", "handler"), _handlers(), ids=[h for _, h in _handlers()])
def test_handler_is_importable(template: dict[str, Any], function: str, handler: str) -> None:
    module, _, attribute = handler.rpartition(".")
    path = SRC.joinpath(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (
        f"{function}: Handler {handler!r} needs module {module!r}, but src/{module.replace('.', '/')}.py does not exist"
    )
    env = _function_environment(template, function)
    probe = (  # as on Lambda, where the local mode's packages are not installed
        "import gc, importlib, sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in sys.argv[3].split(','): raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "collections = []\n"
        "def collected(phase, info):  # once handlers.functions can pause the GC\n"
        "    if phase == 'start' and hasattr(sys.modules.get('handlers.functions'), 'cold_start'):\n"
        "        collections.append(info['generation'])\n"
        "gc.callbacks.append(collected)\n"
        "module = importlib.import_module(sys.argv[1])\n"
        "function = getattr(module, sys.argv[2], None)\n"
        "if not callable(function): sys.exit(f'{sys.argv[1]} has no callable {sys.argv[2]!r}')\n"
        "if 'aws_xray_sdk' in sys.modules: sys.exit('the X-Ray SDK was imported with DetailedTracing off')\n"
        "if collections: sys.exit(f'the garbage collector ran during the cold start: generations {collections}')\n"
        "if not gc.isenabled() or gc.get_freeze_count() < 10000: sys.exit('the GC left off, or nothing frozen')\n"
        "extra = sorted(name for name in sys.argv[4].split(',') if name in sys.modules)\n"
        "if extra: sys.exit(f'the cold start imported {extra}')\n"
        "from handlers.composition.aws import clients_for\n"
        "from handlers.settings import AwsSettings\n"
        "clients = vars(clients_for(AwsSettings.from_environment()))\n"
        "made = sorted(name for name in ('s3', 'dynamodb') if name in clients)\n"
        "if made != sorted(sys.argv[5].split(',')): sys.exit(f'the cold start made the clients {made}')\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            module,
            attribute,
            ",".join(LOCAL_MODE_MODULES),
            ",".join(NOT_AT_COLD_START[function]),
            ",".join(CLIENTS_AT_COLD_START[function]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    hint = ""
    if "127.0.0.1:9" in result.stderr:
        hint = " (it called AWS at import: AWS_ENDPOINT_URL points at a closed local port)"
    assert result.returncode == 0, f"{function}: importing {handler} failed{hint}:\n{result.stderr[-4000:]}"


def _function_environment(template: dict[str, Any], function: str) -> dict[str, str]:
    """The function's variables from the template, with credentials and an endpoint that go nowhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(_lambda_environment(template, function))
    env.update(
        PYTHONPATH=str(SRC),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # anything that does call AWS at import fails fast, locally
        AWS_LAMBDA_FUNCTION_NAME=f"pullthrough-{function}",
        POWERTOOLS_METRICS_DISABLED="1",
    )
    return env


def test_detailed_tracing_puts_the_tracer_around_the_handler(template: dict[str, Any]) -> None:
    """DetailedTracing=true (POWERTOOLS_TRACE_DISABLED=false): Powertools Tracer, and with it the X-Ray SDK."""
    env = {**_function_environment(template, "FillFunction"), "POWERTOOLS_TRACE_DISABLED": "false"}
    probe = (
        "import sys\n"
        "from handlers.functions import fill\n"
        "if 'aws_xray_sdk' not in sys.modules: sys.exit('no X-Ray SDK with DetailedTracing on')\n"
        "layers, handler = [], fill.handler\n"
        "while handler is not None:\n"
        "    layers.append(handler.__code__.co_qualname)\n"
        "    handler = getattr(handler, '__wrapped__', None)\n"
        "if not any('capture_lambda_handler' in layer for layer in layers): sys.exit(f'no Tracer in {layers}')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]


# --- (d) least privilege --------------------------------------------------------------------------------------------


def _statements(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if isinstance(node.get("Statement"), list | dict):
            statements = node["Statement"] if isinstance(node["Statement"], list) else [node["Statement"]]
            for statement in statements:
                yield where, statement
        for key, value in node.items():
            yield from _statements(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _statements(value, f"{where}/{index}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _bucket_object_arns(template: dict[str, Any]) -> set[str]:
    return {f"${{{name}.Arn}}/*" for name in resources_of(template, "AWS::S3::Bucket")}


# S3 replication writes the objects of the replica Regions' buckets, encrypted with the same multi-Region key there.
REPLICATION = {"arn:${AWS::Partition}:s3:::${Name}/*", "arn:${AWS::Partition}:kms:*:${AWS::AccountId}:key/${KeyId}"}


def test_no_allow_statement_uses_wildcards(by_default: dict[str, Any]) -> None:
    object_arns = _bucket_object_arns(by_default)
    statements = list(_statements(by_default["Resources"]))
    assert len(statements) > 10
    problems = []
    for where, statement in statements:
        if "Effect" not in statement:  # an OpenAPI fragment or the like, not IAM
            continue
        if statement["Effect"] == "Deny":  # denials may be broad: they only take away
            continue
        assert "NotAction" not in statement and "NotResource" not in statement, where
        for action in _as_list(statement["Action"]):
            if "*" in action:
                problems.append(f"{where}: action {action}")
        if "Principal" in statement:  # a trust policy: who may assume the role, no Resource
            continue
        for resource in _as_list(statement["Resource"]):
            text = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
            if isinstance(text, list):
                text = text[0]
            if isinstance(text, str) and "*" in text and text not in object_arns | {CREDENTIALS_SECRETS} | REPLICATION:
                problems.append(f"{where}: resource {text}")
    assert problems == []
    assert '"Resource": "*"' not in json.dumps(by_default)


def test_each_function_role_grants_only_what_its_function_does(by_default: dict[str, Any]) -> None:
    table = {"Fn::GetAtt": ["Table", "Arn"]}

    def index_of(name: str) -> dict[str, Any]:
        return {"Fn::Sub": [f"${{TableArn}}/index/{name}", {"TableArn": table}]}

    objects = {"Fn::Sub": "${Bucket.Arn}/*"}
    bucket = {"Fn::GetAtt": ["Bucket", "Arn"]}
    fill = {"Fn::GetAtt": ["FillFunction", "Arn"]}
    default_bus = {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"}
    secrets = {("secretsmanager:GetSecretValue", json.dumps({"Fn::Sub": CREDENTIALS_SECRETS}))}
    dynamodb = {f"dynamodb:{a}" for a in ("GetItem", "BatchGetItem", "Query", "PutItem", "UpdateItem", "DeleteItem")}
    s3_objects = {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    expected: dict[str, set[tuple[str, str]]] = {
        "ApiFunctionRole": {(a, json.dumps(table)) for a in dynamodb}
        | {(a, json.dumps(objects)) for a in s3_objects}
        | {("s3:ListBucket", json.dumps(bucket)), ("lambda:InvokeFunction", json.dumps(fill))}
        | {("secretsmanager:GetSecretValue", json.dumps({"Ref": "SigningKeysSecret"}))}
        | secrets,
        "FillFunctionRole": {(a, json.dumps(table)) for a in dynamodb}
        | {(a, json.dumps(objects)) for a in s3_objects}
        | {("s3:ListBucket", json.dumps(bucket))}
        | secrets,
        "RefreshFunctionRole": {(a, json.dumps(table)) for a in dynamodb}
        | {("dynamodb:Query", json.dumps(index_of("pulled")))}
        | {(a, json.dumps(objects)) for a in ("s3:GetObject", "s3:PutObject")}
        | {("s3:ListBucket", json.dumps(bucket)), ("lambda:InvokeFunction", json.dumps(fill))}
        | {("events:PutEvents", json.dumps(default_bus))}
        | secrets,
        # the admin API manages rules (and validates them with their credentials); it touches no cached content
        "AdminFunctionRole": {
            (f"dynamodb:{a}", json.dumps(table)) for a in ("GetItem", "Query", "PutItem", "DeleteItem")
        }
        | secrets,
        # the sweep reads repositories and manifests, forgets records, and is the only one that deletes bytes
        "SweepFunctionRole": {(a, json.dumps(table)) for a in dynamodb | {"dynamodb:BatchWriteItem"}}
        | {("dynamodb:Query", json.dumps(index_of("content")))}
        | {(a, json.dumps(objects)) for a in ("s3:GetObject", "s3:DeleteObject")}
        | {("s3:ListBucket", json.dumps(bucket)), ("events:PutEvents", json.dumps(default_bus))},
    }
    for role_name, grants in expected.items():
        role = by_default["Resources"][role_name]["Properties"]
        assert set(role["ManagedPolicyArns"]) == SAM_MANAGED_POLICIES, role_name
        actual = {
            (action, json.dumps(resource))
            for policy in role["Policies"]
            for statement in policy["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"])
            for resource in _as_list(statement["Resource"])
        }
        assert actual == grants, role_name


KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_KEY = "arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"  # a multi-Region key
PRIMARY = {"ReplicaRegions": "eu-west-1,ap-southeast-2", "ReplicaBucketNames": "pt-eu-bucket,pt-ap-bucket"}
REPLICA = {"PrimaryTableName": "pullthrough-GlobalTable-1A2B3C4D5E6F"}
# The deployment options, each as `sam deploy --parameter-overrides` would give them.
MODES: dict[str, dict[str, str]] = {
    "default": {},
    "customer-managed key": {"KmsKeyArn": KMS_KEY},
    "private": PRIVATE,
    "private, own domain and key": {**PRIVATE, **DOMAIN, "KmsKeyArn": KMS_KEY},
    "primary of two replica Regions": PRIMARY,
    "primary of two replica Regions, own key": {**PRIMARY, "KmsKeyArn": MRK_KEY},
    "replica Region": REPLICA,
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_keeps_iam_free_of_wildcards(transformed: dict[str, Any], mode: str) -> None:
    test_no_allow_statement_uses_wildcards(deployed(transformed, **MODES[mode]))


def test_private_mode_has_no_internet_front_door_only_an_internal_load_balancer(transformed: dict[str, Any]) -> None:
    public, private, private_tls = (
        deployed(transformed),
        deployed(transformed, **PRIVATE),
        deployed(transformed, **PRIVATE, **DOMAIN),
    )

    def endpoint_disabled(template: dict[str, Any]) -> Any:
        (server,) = template["Resources"]["HttpApi"]["Properties"]["Body"]["servers"]
        return server["x-amazon-apigateway-endpoint-configuration"]["disableExecuteApiEndpoint"]

    # The HTTP API keeps its routes (what `sam local start-api` serves) but no endpoint, and no custom domain.
    assert endpoint_disabled(public) is False and endpoint_disabled(private) is True
    assert resources_of(private_tls, "AWS::ApiGatewayV2::DomainName") == {}
    load_balancing = ("AWS::ElasticLoadBalancingV2::LoadBalancer", "AWS::ElasticLoadBalancingV2::Listener",
                      "AWS::ElasticLoadBalancingV2::TargetGroup", "AWS::EC2::SecurityGroup")  # fmt: skip
    assert all(resources_of(public, kind) == {} for kind in load_balancing)

    (balancer,) = resources_of(private, "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    assert balancer["Properties"]["Scheme"] == "internal" and balancer["Properties"]["Type"] == "application"
    assert balancer["Properties"]["Subnets"] == {"Ref": "SubnetIds"}
    (group,) = resources_of(private, "AWS::EC2::SecurityGroup").values()
    (ingress,) = group["Properties"]["SecurityGroupIngress"]
    assert (ingress["CidrIp"], ingress["FromPort"], ingress["ToPort"]) == ({"Ref": "ClientCidr"}, 80, 80)
    (ingress,) = resources_of(private_tls, "AWS::EC2::SecurityGroup")["LoadBalancerSecurityGroup"]["Properties"][
        "SecurityGroupIngress"]  # fmt: skip
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)
    (listener,) = resources_of(private, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert (listener["Properties"]["Protocol"], listener["Properties"]["Port"]) == ("HTTP", 80)
    (listener,) = resources_of(private_tls, "AWS::ElasticLoadBalancingV2::Listener").values()
    assert (listener["Properties"]["Protocol"], listener["Properties"]["Port"]) == ("HTTPS", 443)
    assert listener["Properties"]["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert listener["Properties"]["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")

    # The load balancer invokes the live alias (SnapStart), with repeated query parameters and headers whole.
    (targets,) = resources_of(private, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert targets["Properties"]["TargetType"] == "lambda"
    assert targets["Properties"]["Targets"] == [{"Id": {"Ref": "ApiFunctionAliaslive"}}]
    assert {"Key": "lambda.multi_value_headers.enabled", "Value": "true"} in targets["Properties"][
        "TargetGroupAttributes"]  # fmt: skip
    (permission,) = [permission for permission in resources_of(private, "AWS::Lambda::Permission").values()
                     if permission["Properties"]["Principal"] == "elasticloadbalancing.amazonaws.com"]  # fmt: skip
    assert permission["Properties"]["FunctionName"] == {"Ref": "ApiFunctionAliaslive"}
    assert ":targetgroup/pullthrough-${StackId}/*" in permission["Properties"]["SourceArn"]["Fn::Sub"][0]

    # Behind the load balancer the token realm is the configured URL (an ALB event names no domain).
    def public_url(template: dict[str, Any]) -> Any:
        return template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]["PULLTHROUGH_PUBLIC_URL"]

    assert public_url(public) == ""
    assert public_url(private) == {"Fn::Sub": "http://${LoadBalancer.DNSName}"}
    assert public_url(private_tls) == {"Fn::Sub": "https://${DomainName}"}
    (record,) = resources_of(private_tls, "AWS::Route53::RecordSet").values()
    assert record["Properties"]["AliasTarget"]["DNSName"] == {"Fn::GetAtt": ["LoadBalancer", "DNSName"]}

    # The functions stay outside the VPC: they reach the upstream registries with no NAT gateway.
    assert all("VpcConfig" not in function["Properties"]
               for function in resources_of(private, "AWS::Lambda::Function").values())  # fmt: skip
    assert resources_of(private, "AWS::EC2::NatGateway") == {}


def test_private_mode_serves_presigned_urls_only_through_the_vpc_endpoint(transformed: dict[str, Any]) -> None:
    def statements(template: dict[str, Any]) -> dict[str, Any]:
        (policy,) = resources_of(template, "AWS::S3::BucketPolicy").values()
        return {statement["Sid"]: statement for statement in policy["Properties"]["PolicyDocument"]["Statement"]}

    assert set(statements(deployed(transformed))) == {"DenyInsecureTransport"}
    private = statements(deployed(transformed, **PRIVATE))["PresignedOnlyThroughTheVpcEndpoint"]
    assert private["Effect"] == "Deny" and private["Action"] == "s3:GetObject"  # GET and HEAD
    # query-string authentication is what a presigned URL is: the functions' own calls sign headers
    assert private["Condition"] == {"StringEquals": {"s3:authType": "REST-QUERY-STRING"},
                                    "StringNotEquals": {"aws:SourceVpce": {"Ref": "S3VpcEndpointId"}}}  # fmt: skip


def test_replicas_make_a_global_table_and_replicate_the_bytes(transformed: dict[str, Any]) -> None:
    def environment(template: dict[str, Any]) -> dict[str, Any]:
        return template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]  # type: ignore[no-any-return]

    def bucket(template: dict[str, Any]) -> dict[str, Any]:
        (found,) = resources_of(template, "AWS::S3::Bucket").values()
        return found["Properties"]  # type: ignore[no-any-return]

    single = deployed(transformed)
    assert resources_of(single, "AWS::DynamoDB::GlobalTable") == {} and "VersioningConfiguration" not in bucket(single)
    assert environment(single)["PULLTHROUGH_VERIFY_STORED_BYTES"] == "false"

    primary = deployed(transformed, **PRIMARY)
    assert resources_of(primary, "AWS::DynamoDB::Table") == {}
    (table,) = resources_of(primary, "AWS::DynamoDB::GlobalTable").values()
    props = table["Properties"]
    assert {key: props[key] for key in TABLE_SCHEMA} == TABLE_SCHEMA  # the same keys and indexes as a lone table
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    # the second from a padded list: a Select past a list's end fails a deploy even in a branch not taken
    padded = {
        "Fn::Split": [",", {"Fn::Sub": ["${Regions},,", {"Regions": {"Fn::Join": [",", {"Ref": "ReplicaRegions"}]}}]}]
    }
    regions = [{"Fn::Select": [0, {"Ref": "ReplicaRegions"}]}, {"Fn::Select": [1, padded]}]
    assert [replica["Region"] for replica in props["Replicas"]] == [{"Ref": "AWS::Region"}, *regions]
    assert all(
        replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] for replica in props["Replicas"]
    )
    one_replica = deployed(transformed, ReplicaRegions="eu-west-1")
    (table,) = resources_of(one_replica, "AWS::DynamoDB::GlobalTable").values()
    assert len(table["Properties"]["Replicas"]) == 2
    assert environment(primary)["PULLTHROUGH_TABLE_NAME"] == {"Ref": "GlobalTable"}
    assert environment(primary)["PULLTHROUGH_VERIFY_STORED_BYTES"] == "true"  # records global, bytes per Region

    # The bytes: a versioned bucket replicated (blobs/ only) to each replica Region's bucket, deletions too.
    assert bucket(primary)["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = bucket(primary)["ReplicationConfiguration"]["Rules"]
    assert [rule["Destination"]["Bucket"]["Fn::Sub"][0] for rule in rules] == ["arn:${AWS::Partition}:s3:::${Name}"] * 2
    assert all(rule["Filter"] == {"Prefix": "blobs/"} and rule["DeleteMarkerReplication"] == {"Status": "Enabled"}
               for rule in rules)  # fmt: skip
    assert "ReplicationConfiguration" not in bucket(deployed(transformed, ReplicaRegions="eu-west-1"))  # no names yet
    (role,) = resources_of(primary, "AWS::IAM::Role")["ReplicationRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"]  # fmt: skip
    assert role["Principal"] == {"Service": "s3.amazonaws.com"}
    encrypted = deployed(transformed, **PRIMARY, KmsKeyArn=MRK_KEY)
    (rule, _) = bucket(encrypted)["ReplicationConfiguration"]["Rules"]
    assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    assert "ReplicaKmsKeyID" in rule["Destination"]["EncryptionConfiguration"]

    # A replica Region's stack: the primary's table, no refresh or sweep of its own, its own copies expiring.
    replica = deployed(transformed, **REPLICA)
    assert resources_of(replica, "AWS::DynamoDB::Table") == resources_of(replica, "AWS::DynamoDB::GlobalTable") == {}
    assert environment(replica)["PULLTHROUGH_TABLE_NAME"] == {"Ref": "PrimaryTableName"}
    grants = json.dumps(replica["Resources"]["ApiFunctionRole"])
    assert "table/${PrimaryTableName}" in grants and "Table" not in grants.replace("PrimaryTableName", "")
    assert {schedule["Properties"]["State"] for schedule in resources_of(replica, "AWS::Scheduler::Schedule").values()
            } == {"DISABLED"}  # fmt: skip
    assert {"Id": "ReplicaCopies", "Status": "Enabled", "ExpirationInDays": 30} in bucket(replica)[
        "LifecycleConfiguration"]["Rules"]  # fmt: skip
    assert bucket(replica)["VersioningConfiguration"] == {"Status": "Enabled"}  # a replication destination
    assert "ReplicationConfiguration" not in bucket(replica)


def _kms_grants(template: dict[str, Any]) -> dict[str, tuple[set[str], set[str]]]:
    """Per role: the KMS actions it is allowed, and the services (kms:ViaService) it may use them through."""
    grants = {}
    for name, role in resources_of(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = {action for action in _as_list(statement["Action"]) if action.startswith("kms:")}
                if actions:
                    assert statement["Resource"] == {"Ref": "KmsKeyArn"}, name
                    via = statement["Condition"]["StringEquals"]["kms:ViaService"]
                    grants[name] = (actions, {entry["Fn::Sub"].split(".")[0] for entry in via})
    return grants


def test_a_customer_managed_key_encrypts_bytes_records_and_signing_keys(transformed: dict[str, Any]) -> None:
    own_key = deployed(transformed, KmsKeyArn=KMS_KEY)
    (bucket,) = resources_of(own_key, "AWS::S3::Bucket").values()
    (encryption,) = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "KmsKeyArn"}},
        "BucketKeyEnabled": True,  # one KMS request per data key period, not per object
    }
    (table,) = resources_of(own_key, "AWS::DynamoDB::Table").values()
    assert table["Properties"]["SSESpecification"] == {
        "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "KmsKeyArn"},
    }  # fmt: skip
    (secret,) = resources_of(own_key, "AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["KmsKeyId"] == {"Ref": "KmsKeyArn"}
    # A presigned GET is authorised with the signer's permissions: the API role decrypts for every client.
    read_write = {"kms:Decrypt", "kms:GenerateDataKey"}
    assert _kms_grants(own_key) == {
        "ApiFunctionRole": (read_write, {"s3", "secretsmanager"}),
        "FillFunctionRole": (read_write, {"s3"}),
        "RefreshFunctionRole": (read_write, {"s3"}),
        "SweepFunctionRole": ({"kms:Decrypt"}, {"s3"}),  # reads manifests; deleting needs no key
    }  # the admin function touches no cached content

    by_default = deployed(transformed)
    assert _kms_grants(by_default) == {}
    (secret,) = resources_of(by_default, "AWS::SecretsManager::Secret").values()
    assert "KmsKeyId" not in secret["Properties"]


# --- (e) sample events ----------------------------------------------------------------------------------------------

API_EVENTS = {
    "api-v2-ping.json": ("GET", r"/v2/"),
    "api-manifest-get.json": ("GET", r"/v2/up/library/single-oci/manifests/v1"),
    "api-manifest-head.json": ("HEAD", r"/v2/up/library/single-oci/manifests/v1"),
    "api-blob-get.json": ("GET", r"/v2/up/library/single-oci/blobs/sha256:[0-9a-f]{64}"),
}


@pytest.mark.parametrize("name", sorted(API_EVENTS))
def test_api_event_is_a_http_api_payload_v2(name: str) -> None:
    event = json.loads((EVENTS / name).read_text())
    method, path = API_EVENTS[name]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert re.fullmatch(path, event["rawPath"])
    assert isinstance(event["rawQueryString"], str)
    assert event["isBase64Encoded"] is False
    assert all(key == key.lower() for key in event["headers"]), "HTTP API lower-cases header names"
    assert event["headers"]["host"] == event["requestContext"]["domainName"]
    context = event["requestContext"]
    assert {"accountId", "apiId", "domainName", "requestId", "time", "timeEpoch"} <= set(context)
    assert context["routeKey"] == "$default"
    assert context["stage"] == "$default"
    assert context["domainName"].startswith(context["apiId"] + ".execute-api.")
    assert isinstance(context["timeEpoch"], int)
    http = context["http"]
    assert http["method"] == method
    assert http["path"] == event["rawPath"]
    assert {"protocol", "sourceIp", "userAgent"} <= set(http)
    if "manifests" in name:
        accepted = {media.strip() for media in event["headers"]["accept"].split(",")}
        assert accepted >= {
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        }


def test_scheduled_refresh_event_is_an_eventbridge_scheduler_event() -> None:
    event = json.loads((EVENTS / "scheduled-refresh.json").read_text())
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.scheduler"
    assert {"version", "id", "account", "time", "region", "resources", "detail"} <= set(event)
    assert re.fullmatch(r"arn:aws:scheduler:[a-z0-9-]+:\d{12}:schedule/[^/]+/.+", event["resources"][0])


def test_load_balancer_event_is_what_a_multi_value_lambda_target_receives() -> None:
    """Private mode's front door: an ALB event, with multi-value headers and query parameters (the target group's
    lambda.multi_value_headers.enabled), no domain name in its context."""
    event = json.loads((EVENTS / "alb-manifest-get.json").read_text())
    assert set(event["requestContext"]) == {"elb"}
    assert re.fullmatch(r"arn:aws:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/pullthrough-[0-9a-f]{8}/[0-9a-f]+",
                        event["requestContext"]["elb"]["targetGroupArn"])  # fmt: skip
    assert event["httpMethod"] == "GET" and event["path"] == "/v2/up/library/single-oci/manifests/v1"
    assert "headers" not in event and "queryStringParameters" not in event
    assert all(isinstance(values, list) for values in event["multiValueHeaders"].values())
    assert isinstance(event["multiValueQueryStringParameters"], dict)


def test_every_event_file_is_checked() -> None:
    checked = {*API_EVENTS, "scheduled-refresh.json", "alb-manifest-get.json"}
    assert {path.name for path in EVENTS.glob("*.json")} == checked


# --- samconfig.toml and src/requirements.txt ----------------------------------------------------------------------


def test_samconfig_overrides_name_real_parameters_with_valid_values(template: dict[str, Any]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    assert config["global"]["parameters"]["stack_name"] == "pullthrough"
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    overrides = dict(re.findall(r'(\w+)="([^"]*)"', deploy["parameter_overrides"]))
    parameters = template["Parameters"]
    assert set(overrides) == set(parameters)
    for name, value in overrides.items():
        parameter = parameters[name]
        assert value == str(parameter["Default"]), f"{name}: samconfig.toml and template.yaml disagree"
        if "AllowedPattern" in parameter:
            assert re.fullmatch(parameter["AllowedPattern"], value), name
        if "AllowedValues" in parameter:
            assert value in {str(allowed) for allowed in parameter["AllowedValues"]}, name
        if parameter["Type"] == "Number":
            assert float(parameter.get("MinValue", "-inf")) <= float(value) <= float(parameter.get("MaxValue", "inf"))


def _requirement_names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def test_lambda_requirements_are_the_runtime_dependencies_minus_local_mode() -> None:
    lambda_requirements = _requirement_names((SRC / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert lambda_requirements == _requirement_names(project) - LOCAL_MODE_ONLY


def _pullthrough_metrics_in_the_dashboard(template: dict[str, Any]) -> set[str]:
    body, _ = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))  # the substitutions are only names and ARNs
    names = set()
    for widget in document["widgets"]:
        for row in widget["properties"].get("metrics", []):
            if isinstance(row[0], str):
                assert row[0] != ".", "write every namespace out: the test reads each row alone"
                if row[0] == "Pullthrough":
                    names.add(row[1])
    return names


def test_the_dashboard_and_the_alarms_name_only_metrics_the_code_emits(template: dict[str, Any]) -> None:
    from core import metrics

    alarms = {name: resource["Properties"] for name, resource in template["Resources"].items()
              if resource["Type"] == "AWS::CloudWatch::Alarm"}  # fmt: skip
    assert set(alarms) == {"ApiServerErrorsAlarm", "UpstreamFailingAlarm", "FillFailuresAlarm", "RefreshFailuresAlarm"}
    ours = {alarm["MetricName"] for alarm in alarms.values() if alarm.get("Namespace") == "Pullthrough"}
    named = _pullthrough_metrics_in_the_dashboard(template) | ours
    assert named and named <= set(metrics.ALL), named - set(metrics.ALL)
    # ... and every name in core.metrics is counted somewhere in the code, by its constant
    code = "\n".join(path.read_text() for path in SRC.rglob("*.py") if path.name != "metrics.py")
    constants = {value: name for name, value in vars(metrics).items() if isinstance(value, str) and name.isupper()}
    silent = [name for value, name in constants.items() if value in metrics.ALL and f"counts.{name}" not in code]
    assert silent == []
    for alarm in alarms.values():  # notify the optional topic, and stay quiet without data
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}],
                                                    {"Ref": "AWS::NoValue"}]}  # fmt: skip

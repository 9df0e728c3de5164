"""The domain stays free of infrastructure: src/core imports no AWS, web or Lambda library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "core"
FORBIDDEN = {"boto3", "botocore", "fastapi", "starlette", "mangum", "aws_lambda_powertools", "httpx", "uvicorn",
             "adapters", "handlers", "sqlite3", "yaml", "pydantic", "click"}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda path: path.name)
def test_core_imports_no_infrastructure(path):
    assert not imported_modules(path) & FORBIDDEN


def test_the_check_sees_core_modules():
    assert len(list(CORE.rglob("*.py"))) >= 8

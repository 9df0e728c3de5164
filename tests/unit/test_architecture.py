"""The architecture, enforced: core <- pullthrough_adapters <- handlers; the HTTP apps speak to the core only; the
handlers' rooms are layered; no import cycle anywhere, imports inside functions included. The contracts live in
pyproject.toml and import-linter checks them; these tests also show that they catch what they forbid."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "src" / "core"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Standard-library modules that are infrastructure all the same: the core reaches them through ports.
INFRASTRUCTURE = {"sqlite3", "socket", "ssl", "http", "asyncio", "subprocess", "shutil"}


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(src)}  # ahead of the installed tree
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=src.parent,
                          env=environment, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_every_contract_holds():
    checked = lint_imports(ROOT / "src")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Contracts: 5 kept, 0 broken." in checked.stdout


@pytest.mark.parametrize(
    "module, wrong_import, contract",
    [
        ("pullthrough_adapters/aws/filler.py", "import handlers.composition.aws", "never the other way"),
        ("handlers/http/registry.py", "import pullthrough_adapters.local.blob_store", "never to an adapter"),
        ("handlers/http/registry.py", "import boto3", "never to an adapter or AWS"),
        ("handlers/composition/aws.py", "import handlers.functions.fill", "the handlers' rooms"),
        ("core/filling.py", "import core.cache", "no import cycle"),
        ("core/digest.py", "import httpx", "the core uses no"),
    ],
)
def test_the_contracts_catch_what_they_forbid(tmp_path: Path, module: str, wrong_import: str, contract: str):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    with (src / module).open("a") as file:  # inside a function: deferred imports count too
        file.write(f"\n\ndef _wrong() -> None:\n    {wrong_import}  # noqa\n")
    checked = lint_imports(src)
    assert checked.returncode != 0
    assert contract in checked.stdout.split("Broken contracts")[-1]  # that contract, in the report of what broke


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda path: path.name)
def test_core_imports_nothing_but_the_core_and_the_standard_library(path):
    outside = {module for module in imported_modules(path) - {"core", "__future__"}
               if module not in sys.stdlib_module_names or module in INFRASTRUCTURE}  # fmt: skip
    assert outside == set()


def test_the_check_sees_core_modules():
    assert len(list(CORE.rglob("*.py"))) >= 8

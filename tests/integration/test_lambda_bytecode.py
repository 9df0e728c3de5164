"""`make lambda-bytecode`: the functions' modules come from bytecode on Lambda, where the package's files are dated
1980 (SAM's zip) and the code directory is read-only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.lambda_image import SAM_BIN

ROOT = Path(__file__).resolve().parents[2]
ZIP_EPOCH = 315532800.0  # 1980-01-01, the date SAM's zip gives every file


def built_function(build: Path) -> Path:
    """The API function's code as `sam build` lays it out: no bytecode."""
    function = build / "ApiFunction"
    for package in ("core", "handlers", "pullthrough_adapters"):
        shutil.copytree(ROOT / "src" / package, function / package, ignore=shutil.ignore_patterns("__pycache__"))
    return function


def unzipped_on_lambda(function: Path) -> None:
    """`sam deploy` zips the build with every file dated 1980; Lambda unpacks it so."""
    for path in function.rglob("*"):
        os.utime(path, (ZIP_EPOCH, ZIP_EPOCH))


def make(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *arguments],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_every_module_of_a_built_function_is_imported_from_bytecode(tmp_path: Path):
    if not (SAM_BIN / "python").exists():
        pytest.fail("the Python 3.12 of `make sam-tools` is missing")
    function = built_function(tmp_path / "build")
    compiled = make("lambda-bytecode", f"LAMBDA_BUILD_DIR={tmp_path / 'build'}")
    assert compiled.returncode == 0, compiled.stderr
    unzipped_on_lambda(function)

    sources = sorted(function.rglob("*.py"))
    assert all((path.parent / "__pycache__" / f"{path.stem}.cpython-312.pyc").is_file() for path in sources)
    # -v names where each module's code came from; nothing may be compiled at import, as Lambda would on every start
    imported = subprocess.run(
        [SAM_BIN / "python", "-S", "-v", "-c", "import core.cache, core.rules, core.auth"],
        cwd=function, env={"PYTHONPATH": str(function), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    ours = [line for line in imported.splitlines() if line.startswith("# code object from") and str(function) in line]
    assert len(ours) >= 10
    assert all(".cpython-312.pyc'" in line for line in ours), [line for line in ours if ".py'" in line]


def test_bytecode_for_another_python_than_the_runtime_is_refused(tmp_path: Path):
    built_function(tmp_path / "build")
    refused = make("lambda-bytecode", f"LAMBDA_BUILD_DIR={tmp_path / 'build'}", "LAMBDA_RUNTIME=python3.99")
    assert refused.returncode != 0
    assert "is python3.12; the functions run python3.99" in refused.stderr
    assert not list((tmp_path / "build").rglob("*.pyc"))

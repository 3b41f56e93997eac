"""The layering in docs/architecture.md holds: `lint-imports` checks pyproject's contracts."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    return found


def test_every_import_contract_is_kept():
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_layer_imported_upwards_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package in which the plan's schema imports the CLI."""
    shutil.copytree(ROOT / "lowprec_core", tmp_path / "lowprec_core", ignore=shutil.ignore_patterns("_demo", "__pycache__"))
    plan = tmp_path / "lowprec_core" / "_quantize" / "plan.py"
    plan.write_text(plan.read_text() + "\nfrom .. import _cli  # noqa\n")
    config = tmp_path / "contracts.toml"
    config.write_text("""
[tool.importlinter]
root_packages = ["lowprec_core"]

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
containers = ["lowprec_core"]
layers = ["_cli", "_quantize.plan"]
""")
    result = subprocess.run([_lint_imports(), "--no-cache", str(config)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "lowprec_core._quantize.plan -> lowprec_core._cli" in result.stdout

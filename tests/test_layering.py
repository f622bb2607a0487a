"""The package's dependency direction: the import-linter contracts of pyproject.toml ([tool.importlinter]).

ops <- layers <- models <- tasks <- factory <- evaluation <- training and the browse modules <- cli, where a
lower layer imports no higher one, directly or through any other module; ops, layers, models and tasks import
no converter; no import cycle between the modules of any zoo package (none waived).
The contracts are read statically from the source (grimp), function-level imports included.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="the import contracts need import-linter (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the ``zoo`` package under ``root`` with ``root``'s pyproject.toml."""
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--config", "pyproject.toml"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=300)


def _copy_sources(tmp_path: Path) -> Path:
    """The package's Python sources and pyproject.toml under ``tmp_path`` (no weights, data or cards)."""
    for src in (ROOT / "zoo").rglob("*.py"):
        dst = tmp_path / src.relative_to(ROOT)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _breaks_a_contract():\n    {line}\n")


def test_the_import_contracts_hold():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_no_import_is_waived():
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert [c["id"] for c in contracts if c.get("ignore_imports")] == []


@pytest.mark.parametrize("module, line, broken", [
    ("zoo/models/flownet.py", "import zoo.tasks.optical_flow", "zoo.models is not allowed to import zoo.tasks"),
    ("zoo/models/rfcn.py", "from zoo.converters.mmdet_rcnn import convert", "zoo.models is not allowed to import zoo.converters"),
    ("zoo/models/drn.py", "import zoo.cards", "zoo.models is not allowed to import zoo.cards"),
    ("zoo/ops/aspp.py", "import zoo.layers", "zoo.ops is not allowed to import zoo.layers"),
    ("zoo/layers/heads.py", "import zoo.models.dmnet", "zoo.layers is not allowed to import zoo.models"),
    ("zoo/tasks/base.py", "import zoo.factory", "zoo.tasks is not allowed to import zoo.factory"),
    ("zoo/factory.py", "import zoo.training", "zoo.factory is not allowed to import zoo.training"),
    ("zoo/evaluation.py", "import zoo.cli", "zoo.evaluation is not allowed to import zoo.cli"),
    ("zoo/io.py", "import zoo.registry", "No cycles are allowed in zoo."),   # registry -> tasks -> io -> registry
    ("zoo/upstream.py", "import zoo.weights", "No cycles are allowed in zoo."),  # weights -> upstream -> weights
    ("zoo/converters/__init__.py", "import zoo.upstream", "No cycles are allowed in zoo."),  # upstream -> converters
], ids=["model-imports-task", "model-imports-converter", "model-imports-cards", "op-imports-layer", "layer-imports-model",
        "task-imports-factory", "factory-imports-training", "evaluation-imports-cli", "cycle", "upstream-imports-weights",
        "converter-imports-upstream"])
def test_a_violation_breaks_a_contract(tmp_path, module, line, broken):
    """The contracts are not vacuous: one function-level import against them, in a copy, fails the lint."""
    copy = _copy_sources(tmp_path)
    _append(copy / module, line)
    done = _lint(copy)
    assert done.returncode != 0 and broken in done.stdout, done.stdout + done.stderr

"""ruff, mypy and the function-size rule, run by the suite (configuration in pyproject.toml).

``CLEAN`` lists the files and folders held clean today; it widens to ``ort_cam``, ``tests`` and
``tools`` once every room is. mypy always checks the whole package (a module's errors depend on
what it imports) and this test fails on any finding inside ``CLEAN``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Paths (relative to the repository root) that must be ruff-clean, mypy-clean and have no
#: function over ``MAX_LINES`` lines.
CLEAN = (
    "ort_cam/_version.py",
    "ort_cam/errors.py",
    "ort_cam/runtime.py",
    "ort_cam/preprocess.py",
    "ort_cam/baselines.py",
    "ort_cam/maps.py",
    "ort_cam/graph",
    "ort_cam/demo.py",
    "ort_cam/audit/datasets.py",
    "ort_cam/audit/metrics.py",
    "ort_cam/audit/store.py",
    "ort_cam/audit/run.py",
    "ort_cam/cli/__init__.py",
    "ort_cam/cli/graph_cmds.py",
    "ort_cam/cli/metadata_cmd.py",
    "tools",
    "tests/test_lint.py",
)
#: ruff has no line-count rule (pyproject uses C901 and PLR0915 as proxies); this is the rule.
MAX_LINES = 60


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; pip install -e '.[test]' to run this check")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def _python_files() -> list[Path]:
    files: list[Path] = []
    for rel in CLEAN:
        p = ROOT / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return files


def test_clean_paths_exist():
    missing = [rel for rel in CLEAN if not (ROOT / rel).exists()]
    assert not missing, f"CLEAN names paths that do not exist: {missing}"


def test_ruff():
    _needs("ruff")
    r = _run("ruff", "check", "--no-fix", *CLEAN)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    _needs("mypy")
    r = _run("mypy", "ort_cam")
    assert r.returncode in (0, 1), f"mypy did not run:\n{r.stdout}{r.stderr}"
    finding = re.compile(r"^(?P<path>[^:]+\.py):\d+: error:")
    errors = [(m["path"], line) for line in r.stdout.splitlines() if (m := finding.match(line))]
    inside = [line for path, line in errors
              if any(path == c or path.startswith(c + "/") for c in CLEAN)]
    assert not inside, "mypy findings in CLEAN paths:\n" + "\n".join(inside)
    assert errors or r.returncode == 0, r.stdout + r.stderr


def test_no_function_over_max_lines():
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1  # def line to end
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_LINES} lines: {long}"

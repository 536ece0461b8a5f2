"""The Atlassian package is the portal's only HTTP client (DEVELOPERS.md, rules of the house)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Tooling, not the portal: it drives the sandbox over HTTP on purpose.
NOT_PRODUCTION = {"tests", "sandbox", "bench", "staticfiles", "artifacts"}


def _production_modules() -> list[Path]:
    modules = []
    for folder, subfolders, files in os.walk(ROOT):
        # Pruned in place, so .venv and the tooling are never walked.
        tooling = NOT_PRODUCTION if Path(folder) == ROOT else set()
        subfolders[:] = [name for name in subfolders if name not in tooling and not name.startswith(".")]
        modules += [Path(folder, name) for name in files if name.endswith(".py")]
    return modules


def _imports_requests(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "requests" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "requests":
            return True
    return False


def test_only_the_atlassian_package_imports_requests() -> None:
    importers = {path.relative_to(ROOT).as_posix() for path in _production_modules() if _imports_requests(path)}

    assert "integrations/atlassian/transport.py" in importers  # the scan sees the package
    assert {path for path in importers if not path.startswith("integrations/atlassian/")} == set()

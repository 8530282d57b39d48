"""The size rule of the code base, checked by ``make lint`` (``python -m tests.sizes``):
no module over 400 lines and no function over 80 (decorators included), so a module
holds one responsibility and a function fits on a screen. The exceptions, each with its
reason, are :data:`EXCEPTIONS`, here and nowhere else; one that no longer needs its
place is reported too, so the list only shrinks.

Also run by tests/test_sizes.py, which shows the check failing on an oversized module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
SOURCES = ("crds", "operator", "trainer", "server", "modelio", "cluster", "ui", "cli")
ROOT = Path(__file__).resolve().parents[1]

# "<path>::<function>" or "<path>" -> why it may be longer.
EXCEPTIONS: dict[str, str] = {
    "server/bertops/server/cli.py::serve": (
        "the `bertops server serve` typer command: most lines are its option declarations"
    ),
    "server/bertops/server/cli.py::gateway": (
        "the `bertops server gateway` typer command: most lines are its option declarations"
    ),
    "ui/bertops/ui/openapi.py::spec": "one literal OpenAPI document, read top to bottom",
}


def _function_lengths(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            found.append((node.name, (node.end_lineno or node.lineno) - start + 1))
    return found


def oversized(root: Path = ROOT, sources: tuple[str, ...] = SOURCES) -> dict[str, int]:
    """Every module and function over its limit: ``path`` or ``path::function`` -> lines."""
    found: dict[str, int] = {}
    for source in sources:
        for path in sorted((root / source).rglob("*.py")):
            name = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
                found[name] = lines
            for function, length in _function_lengths(ast.parse(text)):
                if length > MAX_FUNCTION_LINES:
                    found[f"{name}::{function}"] = length
    return found


def _limit(name: str) -> int:
    return MAX_FUNCTION_LINES if "::" in name else MAX_MODULE_LINES


def problems(root: Path = ROOT, sources: tuple[str, ...] = SOURCES) -> list[str]:
    found = oversized(root, sources)
    lines = [
        f"{name}: {length} lines (limit {_limit(name)}); split it by responsibility, "
        "or add it to tests/sizes.py EXCEPTIONS with the reason"
        for name, length in sorted(found.items())
        if name not in EXCEPTIONS
    ]
    if root == ROOT and sources == SOURCES:
        lines += [
            f"{name}: no longer over its limit; remove it from EXCEPTIONS"
            for name in sorted(EXCEPTIONS)
            if name not in found
        ]
    return lines


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())

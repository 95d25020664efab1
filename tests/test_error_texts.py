"""Texts that can reach ComfyUI's error dialog or a tooltip are plain text: the frontend shows Markdown
marks literally, so a backtick in a message is printed as a backtick (issue 25, item 4). Every string
literal in the pack's runtime code except docstrings is checked (comments are not strings)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nodes", "runtime", "common", "models", "kernels")


def _strings_with_backticks(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:80]!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "`" in node.value
            and id(node) not in docstrings]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_markdown_backticks_in_user_facing_strings(package):
    found = [hit for path in sorted((ROOT / package).rglob("*.py")) for hit in _strings_with_backticks(path)]
    assert not found, "backticks show raw in ComfyUI's dialog and tooltips; use quotes:\n" + "\n".join(found)

"""The house rules, read off the source: imports go one way (common <- kernels <- models <- runtime <-
nodes), only nodes/ (and the entry point) import ComfyUI, and no package imports itself in a cycle."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["common", "kernels", "models", "runtime", "nodes"]
COMFY = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes", "node_helpers"}


def imports(path: Path):
    """(top-level package inside the pack or None, absolute module) for every import in a file."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = ".".join(base + ([node.module] if node.module else []))
                yield (target.split(".")[0] if target else None), target
            else:
                yield None, node.module or ""
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield None, alias.name


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_go_one_way_and_comfyui_stays_in_nodes(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    problems = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for inner, module in imports(path):
            if inner in LAYERS and inner not in allowed:
                problems.append(f"{path.relative_to(ROOT)} imports {module} (upward)")
            if inner is None and layer != "nodes" and module.split(".")[0] in COMFY:
                problems.append(f"{path.relative_to(ROOT)} imports ComfyUI's {module}")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_modules_at_import_time():
    """Module-level imports between the pack's files form no cycle (imports inside functions are lazy)."""
    graph = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text())
            deps = set()
            for node in tree.body:   # module level only
                if isinstance(node, ast.ImportFrom) and node.level:
                    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = pkg[: len(pkg) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                    for alias in node.names:
                        sub = f"{target}.{alias.name}"
                        deps.add(sub if (ROOT / (sub.replace(".", "/") + ".py")).exists() else target)
            graph[name] = deps
    seen, stack = set(), []

    def visit(n):
        if n in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
        if n in seen or n not in graph:
            return
        stack.append(n)
        for d in graph[n]:
            visit(d)
        stack.pop()
        seen.add(n)
    for n in sorted(graph):
        visit(n)

"""The package's shape, checked: imports point down the layers, no cycles, files of one concern.

docs/dev/architecture.md draws these layers; this test is what keeps the picture true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "prefrl"

#: Rank of each top-level part of the package: a module may import only from parts of lower or equal
#: rank (equal: inside its own part, or between the shared-core parts that the table allows below).
RANK = {
    "names": 0,
    "utils": 0,
    "losses": 1,
    "data": 1,
    "rl": 2,
    "diagnostics": 2,
    "teachers": 2,
    "reward": 2,
    "control": 3,
    "lm": 3,
    "app": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 6,
}
#: Same-rank imports between different parts that the design allows (importer -> imported).
ALLOWED_SIDEWAYS = {("data", "losses"), ("reward", "teachers"), ("teachers", "reward"), ("diagnostics", "rl")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # include imports under `if TYPE_CHECKING:`-free try/if blocks at module level
        nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("prefrl"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("prefrl"):
                found.add(name)
                found.update(f"{name}.{a.name}" for a in node.names)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def test_imports_point_down_the_layers() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        src_part = _part(module)
        if src_part not in RANK:
            wrong.append(f"{module}: part {src_part!r} has no layer in tests/test_layers.py")
            continue
        for name in _imports(module, path, top_level_only=False):
            target = _resolve(name, modules)
            if target is None or target == "prefrl":
                continue
            dst_part = _part(target)
            if dst_part == src_part:
                continue
            if RANK[dst_part] > RANK[src_part] or (
                RANK[dst_part] == RANK[src_part] and (src_part, dst_part) not in ALLOWED_SIDEWAYS
            ):
                wrong.append(f"{module} imports {target} ({src_part} → {dst_part})")
    assert not wrong, "imports that break the layers:\n" + "\n".join(sorted(set(wrong)))


def test_no_import_cycles() -> None:
    """No cycle among module-level imports (the ones that run when a module is imported)."""
    modules = _modules()
    graph = {
        m: {t for n in _imports(m, p, top_level_only=True) if (t := _resolve(n, modules)) not in (None, m)}
        for m, p in modules.items()
    }
    # A package's __init__ importing its own submodules is not a cycle of concerns: skip those edges back.
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_over_500_lines(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= 500, f"{path.relative_to(SRC.parent)} has {n} lines: split it by concern"

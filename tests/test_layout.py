"""The shape of the codebase: a library without import circles, modules under 500 lines, short
launchers, no test hooks in library code (static checks: read the files, import nothing)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ifrl_jax"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules imported anywhere in the file (lazy imports inside functions included): `from p
    import x` counts as an import of p.x where that is a module, else of p."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                name = f"{node.module}.{a.name}"
                out |= {name} if name in modules else {node.module} & modules
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports, without a module's own packages (a package's
    __init__ importing its submodules, which import siblings through it, is no circle)."""
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for m, p in files.items():
        ancestors = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        graph[m] = _top_level_imports(p, set(files)) - ancestors - {m}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle_in_the_library():
    graph = _graph()
    assert "ifrl_jax.verifiers.batch" in graph and graph["ifrl_jax.jobs.grpo"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    """It found batch.py -> pool.py -> batch.py (a lazy import) in the tree before 2026-12-04."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_library_module_over_500_lines():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {p: n for p, n in sizes.items() if n > 500} == {}


def test_launchers_are_short():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (REPO / "launch").glob("*.py")}
    assert len(sizes) >= 9 and {p: n for p, n in sizes.items() if n > 80} == {}


def test_no_test_hooks_in_library_code():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "os._exit" not in text and "config.debug" not in text, path
        assert "import tests" not in text and "from tests" not in text, path
    for path in (REPO / "configs").glob("*.py"):
        assert "tests" not in {n.split(".")[0] for n in _top_level_imports(path, {"tests"})}

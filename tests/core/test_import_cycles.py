"""core/ has no import cycle: every module under core/ is parsed with `ast`, and every import it makes is an
edge, at module level and inside functions, including `if TYPE_CHECKING:` blocks (a type-only cycle is still
two modules that each need the other to be understood)."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> list[str]:
    """The project modules importing `name` runs: the module itself (or its package) and its parents."""
    hit = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)]
    return [m for m in hit if m in modules]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                graph[mod].update(m for m in _resolve(name, modules) if m != mod)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_core_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "core.routing" in graph["core.incidents"]  # the parser sees the real modules
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in core/: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_function_level_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_routing_imports_only_config_clock_and_models() -> None:
    # plus the pure rotation math (who is on call) and the wording of a schedule's shift reason
    allowed = {"core", "core.config", "core.clock", "core.models", "core.schedules", "core.schedules.rotation",
               "core.appearance", "core.appearance.oncall"}
    assert import_graph()["core.routing"] <= allowed

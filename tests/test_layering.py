"""Layering: the engine never imports the UI; the UI never imports torch or the stages."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(("." * node.level) + node.module)
    return names


def test_engine_never_imports_streamlit_or_app():
    for p in (ROOT / "cvdd").rglob("*.py"):
        bad = {n for n in _imports(p) if n.split(".")[0] in ("streamlit", "app", "wandb")}
        assert not bad, f"{p.relative_to(ROOT)} imports {bad}"


def test_app_never_imports_torch_or_engine_internals():
    allowed = {
        "cvdd",
        "cvdd.config",
        "cvdd.data_layouts",
        "cvdd.runs",
        "cvdd.layout",
        "cvdd.jobs",
        "cvdd.twins",
        "cvdd.repeats",
        "cvdd.report",
        "cvdd.spread",
        "cvdd.stats",
        "cvdd.utils",
    }
    for p in (ROOT / "app").rglob("*.py"):
        for n in _imports(p):
            assert n.split(".")[0] != "torch", f"{p.relative_to(ROOT)} imports torch"
            if n.startswith("cvdd"):
                assert n in allowed, f"{p.relative_to(ROOT)} imports {n}"


def test_ui_facing_modules_load_without_torch():
    code = (
        "import sys, cvdd, cvdd.config, cvdd.runs, cvdd.layout, cvdd.jobs, cvdd.twins, cvdd.utils, "
        "cvdd.data_layouts, cvdd.repeats, cvdd.stats, cvdd.spread, cvdd.report; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------------------------
# no import cycles inside cvdd


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """cvdd module -> the cvdd modules it imports, at module level or inside functions.

    `from P import x` counts as importing the submodule P.x when x is one, else P itself (its
    __init__). The parent packages Python initialises on the way are not counted: every
    submodule would then import its own package back. `cvdd/__init__.py` re-exports lazily
    with importlib.import_module inside its PEP 562 `__getattr__`; those strings are no import
    statements, so they are not edges here, and nothing runs them at import time.
    """
    files = {_module_name(p): p for p in (ROOT / "cvdd").rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package.split(".")[: package.count(".") + 2 - node.level]
                    target = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    out |= {sub} if sub in files else {target} & files.keys()
        graph[mod] = out - {mod}
    return graph


def _find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle closed by a back edge of a depth-first search (none when the graph is a DAG)."""
    cycles, done, path = [], set(), []

    def visit(mod: str) -> None:
        path.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if dep in path:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in done:
                visit(dep)
        path.pop()
        done.add(mod)

    for mod in sorted(graph):
        if mod not in done:
            visit(mod)
    return cycles


def test_cycle_finder_sees_a_long_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"d", "a"}, "d": set()}
    assert _find_cycles(graph) == [["a", "b", "c", "a"]]
    assert _find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_relative_and_function_level_imports():
    graph = _import_graph()
    assert "cvdd.models.base" in graph["cvdd.models._registry"]  # from .base import ...
    assert "cvdd.models" in graph["cvdd.pipeline"]  # inside _check_names: from .models import
    assert "cvdd.presets" in graph["cvdd.config"]


def test_no_module_of_cvdd_imports_a_module_that_imports_it_back():
    cycles = _find_cycles(_import_graph())
    assert not cycles, "import cycles in cvdd:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_stage_imports_another_stage():
    """Stages talk through the run directory; shared code lives in non-stage modules."""
    graph = _import_graph()
    for mod, deps in graph.items():
        if mod.startswith("cvdd.stages."):
            others = {d for d in deps if d.startswith("cvdd.stages.")}
            assert not others, f"{mod} imports {others}"

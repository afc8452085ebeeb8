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
    allowed = {"cvdd", "cvdd.config", "cvdd.runs", "cvdd.jobs", "cvdd.utils"}
    for p in (ROOT / "app").rglob("*.py"):
        for n in _imports(p):
            assert n.split(".")[0] != "torch", f"{p.relative_to(ROOT)} imports torch"
            if n.startswith("cvdd"):
                assert n in allowed, f"{p.relative_to(ROOT)} imports {n}"


def test_ui_facing_modules_load_without_torch():
    code = (
        "import sys, cvdd, cvdd.config, cvdd.runs, cvdd.jobs, cvdd.utils; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

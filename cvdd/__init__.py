"""cvdd: Committee Voting Dataset Distillation (CV-DD) engine.

Heavy submodules (torch) load lazily (PEP 562), so `import cvdd.runs` stays cheap for the UI.
"""

__version__ = "0.1.0"

_LAZY = {
    "RunConfig": "cvdd.config",
    "PRESETS": "cvdd.config",
    "from_preset": "cvdd.config",
    "RunDir": "cvdd.rundir",
    "create_model": "cvdd.models",
    "list_models": "cvdd.models",
    "load_dataset": "cvdd.data",
    "run_pipeline": "cvdd.pipeline",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cvdd' has no attribute {name!r}")

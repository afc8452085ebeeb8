"""cvdd: Committee Voting Dataset Distillation (CV-DD) engine.

Heavy submodules (torch) load lazily, so `import cvdd.runs` stays cheap for the UI.
"""
__version__ = "0.1.0"

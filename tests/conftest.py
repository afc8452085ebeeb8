"""Shared fixtures: a real run directory made by the engine on the `tiny` preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def _cli_run(runs_root: Path, *sets: str) -> Path:
    """`python -m cvdd run --preset tiny --set ...` in a subprocess; the finished run's folder."""
    argv = [sys.executable, "-m", "cvdd", "run", "--preset", "tiny", "--runs-dir", str(runs_root)]
    for s in sets:
        argv += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert (run_dir / "result.json").is_file()
    return run_dir


@pytest.fixture(scope="session")
def cli():
    """Runs `python -m cvdd ARGS` in a subprocess (1 thread); returns the CompletedProcess."""

    def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")
        argv = [sys.executable, "-m", "cvdd", *args]
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    return run


@pytest.fixture(scope="session")
def tiny_run_dir(runs_root) -> Path:
    """A finished run of the real engine on the `tiny` preset (one per test session)."""
    return _cli_run(runs_root, "seed=0")


@pytest.fixture(scope="session")
def voted_run_dir(tmp_path_factory) -> Path:
    """A finished tiny run with one expert per IPC index (each member votes for one of the two
    groups and not for the other) and two student architectures (incl. the 3-block ConvNet).
    Shared by the analysis and twin tests; its own runs root keeps the runs lists apart."""
    root = tmp_path_factory.mktemp("voted")
    # students at the quick preset's width: a full-width ConvNet-3 spent most of this run
    # scoring the 10,000 test images
    return _cli_run(
        root,
        "recover.num_experts=1",
        "validate.students=test_tiny_cnn,convnet3",
        "validate.width=0.25",
    )

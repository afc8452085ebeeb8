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


@pytest.fixture(scope="session")
def tiny_run_dir(runs_root) -> Path:
    """A finished run of the real engine on the `tiny` preset (one per test session)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cvdd",
            "run",
            "--preset",
            "tiny",
            "--runs-dir",
            str(runs_root),
            "--seed",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert (run_dir / "result.json").is_file()
    return run_dir

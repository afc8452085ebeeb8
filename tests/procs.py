"""Shared by the tests that start cvdd as separate processes (one, or several on torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
# The limit of every wait on another process: sized for a loaded 2-core machine (a full suite
# beside other work, load average 10-20 seen), where torch's import alone can take a minute.
# Each wait ends as soon as its condition holds; the limit only stops a hang.
HANG_S = 600


def env() -> dict:
    """One thread a process: two ranks on two cores, no oversubscription."""
    return dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1", OMP_NUM_THREADS="1")


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """`argv` to its end in the repository root; its output in the message when it fails."""
    out = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=HANG_S)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def images(run_dir: Path) -> np.ndarray:
    """The recover stage's final uint8 images of a run."""
    with np.load(run_dir / "recover/images.npz") as z:
        return z["images"]

"""torchrun: two gloo CPU processes make the distilled images of one process, pixel for pixel,
in one run directory written by rank 0; a stopped two-process run resumes in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["run", "--preset", "tiny", "--seed", "3", "--set", "validate.compare_eval_labels=false"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), CVDD_THREADS="1", OMP_NUM_THREADS="1")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _runs(root: Path) -> set[Path]:
    return {p for p in root.iterdir() if not p.name.startswith("_")} if root.exists() else set()


def _images(run_dir: Path) -> np.ndarray:
    with np.load(run_dir / "recover/images.npz") as z:
        return z["images"]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(s) for s in (run_dir / "events.jsonl").read_text().splitlines()]


def test_two_ranks_make_the_images_of_one_process(tmp_path):
    root = tmp_path / "runs"  # one root: the second run reuses the first one's squeeze cache
    _run([sys.executable, "-m", "cvdd", *ARGS, "--runs-dir", str(root)])
    (one,) = _runs(root)
    out = _run([*TORCHRUN, "2", "-m", "cvdd", *ARGS, "--runs-dir", str(root)])
    (two,) = _runs(root) - {one}  # exactly one new run directory
    assert out.stdout.strip().splitlines()[-1] == str(two.resolve())
    assert out.stdout.count("run dir:") == 1  # rank 0 alone prints
    assert np.array_equal(_images(one), _images(two))
    assert not np.array_equal(_images(two), np.load(two / "init/images.npz")["images"])
    evs = _events(two)
    assert [e["kind"] for e in evs].count("run_start") == 1  # one writer: rank 0
    assert evs[-1]["kind"] == "run_end" and evs[-1]["status"] == "done"
    assert (two / "result.json").is_file()
    # prior's members and validate's students, split across the ranks: the same scores
    priors = [json.loads((d / "prior/priors.json").read_text())["values"] for d in (one, two)]
    assert priors[0] == priors[1] and len(priors[0]) == 2
    top1 = [
        {
            k: s["top1"]
            for k, s in json.loads((d / "validate/students.json").read_text())["students"].items()
        }
        for d in (one, two)
    ]
    assert top1[0] == top1[1] and len(top1[0]) >= 2


@pytest.mark.slow
def test_a_stopped_two_rank_run_resumes_in_one_process(tmp_path):
    # 4 groups, one per wave: each rank finishes its first group, then the stop comes
    sets = [
        "--set",
        "ipc=4",
        "--set",
        "recover.iterations=200",
        "--set",
        "recover.groups_per_step=1",
    ]
    root = tmp_path / "runs"
    ref = _run([sys.executable, "-m", "cvdd", *ARGS, *sets, "--runs-dir", str(root)])
    ref_dir = Path(ref.stdout.strip().splitlines()[-1])
    argv = [*TORCHRUN, "2", "-m", "cvdd", *ARGS, *sets, "--runs-dir", str(root)]
    p = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # stop once rank 0 is into its second group
        new = _runs(root) - {ref_dir}
        evs = (
            _events(next(iter(new))) if new and (next(iter(new)) / "events.jsonl").exists() else []
        )
        if any(
            e["kind"] == "progress" and e.get("stage") == "recover" and e["step"] > 250 for e in evs
        ):
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    (run_dir,) = _runs(root) - {ref_dir}
    assert _events(run_dir)[-1].get("status") == "stopped"
    ck = torch.load(run_dir / "checkpoints/recover.pt", weights_only=True)
    assert len(ck["finished"]) >= 2 and ck["current"] is None  # a group of each rank
    _run([sys.executable, "-m", "cvdd", "resume", str(run_dir)])
    assert np.array_equal(_images(ref_dir), _images(run_dir))

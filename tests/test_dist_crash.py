"""A two-rank torchrun run killed without warning (every process at once, no clean stop) keeps
the recover groups its ranks finished: a resume in one process, or on torchrun again, continues
from them and makes the images of an uninterrupted one-process run, pixel for pixel. Group files
count only while checkpoints/recover.pt exists (cvdd/stages/recover.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from procs import HANG_S, ROOT, TORCHRUN, env, images, run

from cvdd.runs import run_status

# 4 groups, one per wave, 2 per rank; the tiny preset checkpoints every 3 steps, so a rank's
# first group file appears a few steps into its second group
ITERATIONS, GROUPS = 200, 4
ARGS = [
    "run",
    "--preset",
    "tiny",
    "--seed",
    "3",
    *("--set", "validate.compare_eval_labels=false"),
    *("--set", f"ipc={GROUPS}"),
    *("--set", f"recover.iterations={ITERATIONS}"),
    *("--set", "recover.groups_per_wave=1"),
]

# finding torchrun's ranks to kill reads /proc
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _kept(run_dir: Path) -> set[int]:
    return {int(p.stem) for p in (run_dir / "checkpoints/recover_groups").glob("*.npy")}


def _parent(pid: str) -> int | None:
    try:  # /proc/PID/stat: "pid (name) state ppid ..."
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:  # the process ended meanwhile
        return None


def _children(pid: int) -> list[int]:
    return [
        int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and _parent(d.name) == pid
    ]


def _crash(pid: int) -> None:
    """SIGKILL torchrun and its ranks, all frozen first, so that no survivor sees a peer die and
    stops cleanly. Each rank leads its own session (torchrun starts them so): killing torchrun's
    process group alone would leave them running."""
    procs, todo = [], [pid]
    while todo:
        q = todo.pop()
        os.kill(q, signal.SIGSTOP)  # before its children are listed: it starts no more
        procs.append(q)
        todo += _children(q)
    for q in procs:
        with contextlib.suppress(ProcessLookupError):  # a rank that ended by itself meanwhile
            os.kill(q, signal.SIGKILL)


def _crashed_run(root: Path, log: Path) -> Path:
    """A two-rank run killed once each rank has written the file of a finished group."""
    argv = [*TORCHRUN, "2", "-m", "cvdd", *ARGS, "--runs-dir", str(root)]
    with open(log, "w") as out:
        p = subprocess.Popen(
            argv, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline, run_dir = time.time() + HANG_S, None
    while run_dir is None or not {0, 1} <= _kept(run_dir):  # group g is on rank g % 2
        assert p.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        text = log.read_text()
        if run_dir is None and "run dir:" in text:
            run_dir = Path(text.split("run dir:", 1)[1].splitlines()[0].strip())
        time.sleep(0.05)
    _crash(p.pid)
    p.wait(timeout=HANG_S)
    deadline = time.time() + HANG_S
    while run_status(run_dir)["status"] != "crashed":  # until rank 0's exit drops the lock
        assert time.time() < deadline, run_status(run_dir)
        time.sleep(0.05)
    assert not (run_dir / "recover/images.npz").exists()
    return run_dir


def _last_attempt(run_dir: Path) -> list[dict]:
    evs = [json.loads(s) for s in (run_dir / "events.jsonl").read_text().splitlines()]
    start = max(i for i, e in enumerate(evs) if e["kind"] == "run_start")
    return evs[start:]


def _check_resume(run_dir: Path, kept: set[int], todo: set[int]) -> None:
    """The resume read the kept groups back and ran only the groups in `todo` (rank 0's)."""
    evs = _last_attempt(run_dir)
    logs = [e["msg"] for e in evs if e["kind"] == "log" and e.get("stage") == "recover"]
    assert f"resuming: {len(kept)} of {GROUPS} groups finished before" in logs
    totals = {e["total"] for e in evs if e["kind"] == "progress" and e.get("stage") == "recover"}
    assert totals == ({ITERATIONS * len(todo)} if todo else set())
    assert evs[-1]["kind"] == "run_end" and evs[-1]["status"] == "done"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The runs root (its cache shared by the crashed runs) and one process's images."""
    root = tmp_path_factory.mktemp("runs")
    out = run([sys.executable, "-m", "cvdd", *ARGS, "--runs-dir", str(root)])
    return root, images(Path(out.stdout.strip().splitlines()[-1]))


# the resume's trace shows the groups it ran: all of them in one process, rank 0's on torchrun
RESUMES = {
    "one process": ([sys.executable, "-m", "cvdd", "resume"], range(GROUPS)),
    "torchrun": ([*TORCHRUN, "2", "-m", "cvdd", "resume"], range(0, GROUPS, 2)),
}


@pytest.mark.slow  # a reference run, a two-rank run and a resume: ~20 s on 2 cores
@NEEDS_PROC
@pytest.mark.parametrize("how", list(RESUMES))
def test_a_crashed_two_rank_run_resumes(reference, tmp_path, how):
    root, ref = reference
    run_dir = _crashed_run(root, tmp_path / "torchrun.log")
    kept = _kept(run_dir)
    argv, traced = RESUMES[how]
    run([*argv, str(run_dir)])
    assert np.array_equal(ref, images(run_dir))
    _check_resume(run_dir, kept, set(traced) - kept)


def test_group_files_count_only_while_recover_pt_exists(tmp_path):
    from cvdd.config import from_preset
    from cvdd.recover.waves import checkpoint_state
    from cvdd.rundir import RunDir
    from cvdd.stages import recover as stage
    from cvdd.utils import CvddError

    rd = RunDir.create(tmp_path, from_preset("tiny").to_dict())
    ctx = SimpleNamespace(rd=rd, gen=lambda *keys: torch.Generator().manual_seed(0))
    hooks = SimpleNamespace(saved=set())
    folder = rd.path / "checkpoints/recover_groups"

    def put(g: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{g:05d}.npy", np.full((2, 3, 4, 4), g, np.uint8))

    put(1)  # left by an attempt whose recover.pt was deleted to redo the stage
    stage._claim(ctx, "h")
    assert not folder.exists() and stage._load_state(ctx, "h", hooks, GROUPS) is None
    put(2)  # a rank's finished group, after the claim
    (folder / ".00003.npy.x.tmp").write_bytes(b"cut")  # a write a crash cut short
    state = stage._load_state(ctx, "h", hooks, GROUPS)
    assert list(state["finished"]) == [2] and hooks.saved == {2}
    assert int(state["finished"][2][0, 0, 0, 0]) == 2 and state["current"] is None
    seed = state["seed"]
    stage._claim(ctx, "h")  # recover.pt exists: the files stay
    assert stage._load_state(ctx, "h", hooks, GROUPS)["seed"] == seed
    # the live wave makes its groups again: a file of one of them is left out
    put(3)
    live = {**checkpoint_state(seed, 5, {}, {"groups": [3], "step": 5}), "finished": [2]}
    rd.save_checkpoint("recover", live, "h")
    assert list(stage._load_state(ctx, "h", hooks, GROUPS)["finished"]) == [2]
    with pytest.raises(CvddError, match="different config"):
        stage._load_state(ctx, "another config", hooks, GROUPS)

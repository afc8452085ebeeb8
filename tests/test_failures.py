"""Bad input and failures end with one clear message naming the fix, and lose no earlier result:
a missing data folder, IPC over a class's images, unknown names, a corrupt cached member or
weights file, out of memory, a full disk, a NaN loss."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cvdd.config import from_preset
from cvdd.layout import read_events
from cvdd.rundir import RunDir
from cvdd.runs import run_status
from cvdd.utils import CvddError


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != "worker.lock":
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _make_imagefolder(root: Path, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )
    return root


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "/no/such/folder"], "does not exist"),
        (["--data", "/etc"], "matches no known data set layout"),
        (["--set", "ipc=1e3"], "cannot read '1e3' as int"),
        (["--set", "ipc=10.5"], "cannot read '10.5' as int"),
        (["--set", "ipc=0"], "ipc must be >= 1"),
        (["--set", "recover.num_experts=5"], "num_experts"),
        (
            ["--set", "squeeze.members=resnet18,nosuchnet", "--set", "relabel.teacher=resnet18"],
            "unknown model 'nosuchnet'",
        ),
        (["--preset", "nosuchpreset"], "unknown preset"),
        (["--preset", "cifar10_ipc10"], "needs a data set"),
        (["--set", "recover.lr=nan"], "finite number"),
    ],
)
def test_bad_input_fails_cleanly(tiny_run_dir, tmp_path, args, needle, cli):
    before = _tree_digest(tiny_run_dir)
    argv = ["run", "--preset", "tiny", "--runs-dir", str(tiny_run_dir.parent)]
    if "--preset" in args:
        argv = ["run", "--runs-dir", str(tiny_run_dir.parent)]
    out = cli(*argv, *args)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert _tree_digest(tiny_run_dir) == before


def test_ipc_larger_than_class(tmp_path, cli):
    data = _make_imagefolder(tmp_path / "data", per_class=3)
    out = cli(
        "run",
        "--preset",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data",
        str(data),
        "--set",
        "ipc=5",
        "--set",
        "prior.source=user",
        "--set",
        'prior.values={"test_tiny_cnn": 1, "test_tiny_resnet": 2}',
    )
    assert out.returncode == 2
    assert "has only 3 training images" in out.stderr and "ipc" in out.stderr


def test_unrecognised_data_layout(tmp_path, cli):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    out = cli(
        "run",
        "--preset",
        "tiny",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--data",
        str(tmp_path / "junk"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "ImageFolder" in out.stderr or "imagefolder" in out.stderr


def test_corrupt_cached_member_is_retrained_and_bad_weights_file_is_named(
    tiny_run_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("CVDD_THREADS", "1")
    from cvdd import pipeline

    cache = tiny_run_dir.parent / "_cache"
    victim = sorted((cache / "squeeze").glob("*test_tiny_cnn*.pt"))[0]
    victim.write_bytes(b"garbage")
    cfg = from_preset("tiny", [f"cache_dir={cache}"])  # the shared cache, a run of its own
    rd = RunDir.create(tmp_path / "runs", cfg.to_dict())
    pipeline.run_pipeline(rd.path)
    logs = [e.get("msg", "") for e in read_events(rd.path) if e["kind"] == "log"]
    assert any("corrupt; retraining" in m for m in logs)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    weights = "squeeze.weights=" + json.dumps({"test_tiny_cnn": str(bad)})
    rd = RunDir.create(tmp_path / "runs", from_preset("tiny", [weights]).to_dict())
    with pytest.raises(CvddError, match=str(bad)):  # the CLI prints this message alone
        pipeline.run_pipeline(rd.path)


def test_out_of_memory_and_full_disk_messages(tmp_path, monkeypatch):
    import errno

    import torch

    from cvdd import pipeline

    for exc, needle in (
        (torch.OutOfMemoryError("CUDA out of memory"), "CVDD_MEMORY_GB"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk is full"),
    ):
        rd = RunDir.create(tmp_path, from_preset("tiny").to_dict())

        def boom(ctx, h, exc=exc):
            raise exc

        monkeypatch.setattr(pipeline, "_stage_fn", lambda stage: boom)
        with pytest.raises(CvddError, match=needle):
            pipeline.run_pipeline(rd.path)
        end = read_events(rd.path)[-1]
        assert end["kind"] == "run_end" and end["status"] == "failed" and needle in end["error"]


def test_nan_loss_stops_with_advice(tmp_path, monkeypatch):
    import torch

    from cvdd import pipeline
    from cvdd.recover import step as recover

    monkeypatch.setenv("CVDD_THREADS", "1")
    rd = RunDir.create(tmp_path, from_preset("tiny").to_dict())
    real_bn = recover.bn_matching_loss
    monkeypatch.setattr(
        recover, "bn_matching_loss", lambda *a, **k: real_bn(*a, **k) * torch.tensor(float("nan"))
    )
    with pytest.raises(CvddError, match="lower recover.lr"):
        pipeline.run_pipeline(rd.path)
    assert (rd.path / "squeeze/members.json").is_file()  # earlier stages' results are kept
    assert run_status(rd.path)["status"] == "failed"


def test_a_device_this_machine_lacks_names_the_ones_it_has(monkeypatch):
    """A GPU index past the last one (or a misspelt device) fails before the run starts, with
    the devices there are, not CUDA's "invalid device ordinal" mid-stage."""
    import torch

    from cvdd.utils import resolve_device

    with pytest.raises(CvddError, match="unknown device 'gpu'.*cuda:N"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(CvddError, match="no CUDA GPU is visible.*device=cpu"):
            resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    for bad in ("cuda:2", "cuda:x"):
        with pytest.raises(CvddError, match="cuda:0 to cuda:1.*device=cuda"):
            resolve_device(bad)

"""The export any evaluator reads without cvdd: ImageFolder order, logits, teacher program; and
docs/evaluate.md's script, run as written on a tiny run in a process that never imports cvdd."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvdd.export import export_teacher
from cvdd.models import create_model
from cvdd.teacher import Teacher

ROOT = Path(__file__).resolve().parent.parent


def _imagefolder_order(root: Path) -> list[str]:
    """torchvision ImageFolder's sample order: sorted class folders, sorted files in each."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [f"{root.name}/{c}/{f.name}" for c in classes for f in sorted((root / c).iterdir())]


def test_order_and_logits_follow_imagefolder(tiny_run_dir):
    export = tiny_run_dir / "export"
    order = (export / "order.txt").read_text().split()
    assert order == _imagefolder_order(export / "images")
    cfg = json.loads((export / "config.json").read_text())
    logits = torch.load(export / cfg["soft_labels"]["file"], weights_only=True)
    z = np.load(export / "soft_labels.npz")
    assert list(z["files"]) == order
    assert (
        logits.shape == (len(order), len(cfg["class_names"])) == tuple(cfg["soft_labels"]["shape"])
    )
    mode = cfg["soft_labels"]["mode"]
    assert torch.allclose(torch.softmax(logits, 1), torch.from_numpy(z[f"probs_{mode}"]), atol=1e-6)
    other = next(iter(cfg["soft_labels"]["other"]))
    other_logits = torch.load(export / cfg["soft_labels"]["other"][other], weights_only=True)
    want = torch.from_numpy(z[f"probs_{other}"])
    assert torch.allclose(torch.softmax(other_logits, 1), want, atol=1e-6)
    norm = cfg["dataset"]["normalization"]
    assert norm["channels"] == 1 and len(norm["mean"]) == len(norm["std"]) == 1
    with Image.open(export / order[0]) as im:
        assert im.mode == "L"


@pytest.mark.parametrize("mode", ["bssl", "eval"])
def test_the_teacher_program_relabels_as_the_engine_does(mode):
    torch.manual_seed(0)
    models = [create_model(n, 5, 3, width=1.0) for n in ("test_tiny_cnn", "test_tiny_resnet")]
    for m in models:  # running statistics unlike any batch's, so that BN's mode shows
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    teacher = Teacher(models, [0.7, 0.3], mode)
    program = export_teacher(teacher, torch.randn(4, 3, 16, 16))
    loaded = torch.export.load(io.BytesIO(program)).module()
    x = torch.randn(6, 3, 16, 16)  # another batch size than the example
    with torch.no_grad():
        got = loaded(x)
    want = teacher.logits(x)
    assert torch.allclose(got, want, atol=1e-5)
    other = Teacher(models, [0.7, 0.3], "eval" if mode == "bssl" else "bssl").logits(x)
    assert not torch.allclose(got, other, atol=1e-3)  # the BN mode is really the one asked


def _doc_script() -> str:
    text = (ROOT / "docs" / "evaluate.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_documented_evaluation_runs_on_an_export_without_cvdd(tiny_run_dir, tmp_path):
    names = json.loads((tiny_run_dir / "export" / "config.json").read_text())["class_names"]
    with np.load(ROOT / "assets" / "fashion_mnist_test.npz") as z:
        images, labels = z["test_images"], z["test_labels"]
    for c, name in enumerate(names):  # a test ImageFolder in the run's class order
        folder = tmp_path / "test" / f"{c:03d}_{re.sub(r'[^A-Za-z0-9]+', '_', name)}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:15]:
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    script = tmp_path / "evaluate.py"
    guard = "\nassert not [m for m in sys.modules if m.split('.')[0] == 'cvdd'], 'cvdd imported'\n"
    script.write_text(_doc_script() + guard)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, str(script), str(tiny_run_dir / "export"), str(tmp_path / "test"), "2"],
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) == {"hard", "soft", "teacher"}
    assert all(0.0 <= v <= 100.0 for v in result.values())

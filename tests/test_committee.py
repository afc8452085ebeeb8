"""The shipped committee (assets/committee/): files match the manifest, the quick preset uses it,
and a damaged file stops the run with a message that names the fix."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from cvdd import layout, shipped
from cvdd.config import COMMITTEE, PRESETS, from_preset
from cvdd.context import Context
from cvdd.data import load_dataset
from cvdd.models import create_model
from cvdd.rundir import RunDir
from cvdd.stages import squeeze
from cvdd.stages.prior import prior_key, run_prior
from cvdd.utils import CvddError

SHIPPED = shipped.SHIPPED_DIR
MANIFEST = json.loads((SHIPPED / shipped.MANIFEST).read_text())


def _context(tmp_path: Path, overrides: list[str] | None = None) -> Context:
    cfg = from_preset(
        "quick", [f"cache_dir={tmp_path / 'cache'}", "device=cpu", *(overrides or [])]
    )
    rd = RunDir.create(tmp_path / "runs", cfg.to_dict())
    return Context(cfg, rd, torch.device("cpu"), load_dataset("builtin"), tmp_path / "cache")


@pytest.mark.parametrize("name", COMMITTEE)
def test_shipped_file_matches_manifest_and_loads_weights_only(name):
    entry = MANIFEST["members"][name]
    blob = (SHIPPED / entry["file"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"]
    state = torch.load(SHIPPED / entry["file"], map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = create_model(name, 10, 1, width=entry["width"])
    model.load_state_dict({k: v.float() for k, v in state.items()})  # strict: every key fits
    assert sum(p.numel() for p in model.parameters()) == entry["params"]
    assert 0 < entry["test_top1"] <= 100 and entry["epochs"] >= 1


def test_manifest_records_provenance_and_size():
    for key in ("command", "seed", "torch_version", "priors", "train_images", "test_images"):
        assert key in MANIFEST, key
    assert MANIFEST["train_images"] == 60000 and MANIFEST["test_images"] == 10000
    assert set(MANIFEST["priors"]["values"]) == set(COMMITTEE)
    assert (SHIPPED / "NOTICE.txt").is_file()
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) <= 3_000_000


def test_quick_preset_resolves_to_the_shipped_committee():
    cfg = from_preset("quick")
    assert cfg.squeeze.source == "shipped" and set(cfg.squeeze.members) == set(MANIFEST["members"])
    for name in cfg.squeeze.members:
        entry = MANIFEST["members"][name]
        assert cfg.squeeze.width_of(name) == entry["width"]
        # the shipped prior is used only while the preset's prior settings give the same key
        rel = layout.member_weights_path(
            "fashion_mnist_subset", name, f"shipped-{entry['sha256'][:12]}"
        )
        assert prior_key(cfg, rel, 10) == MANIFEST["priors"]["keys"][name], (
            "a setting the prior key covers changed (prior/init/recover/validate), so quick "
            "runs would recompute the priors: run python assets/make_committee.py --priors-only"
        )
    # settings that only validate's extra students read leave alpha (and the key) alone
    name, entry = next(iter(MANIFEST["members"].items()))
    rel = layout.member_weights_path(
        "fashion_mnist_subset", name, f"shipped-{entry['sha256'][:12]}"
    )
    extra = from_preset("quick", ["validate.hard_labels=true", "validate.students=convnet3"])
    assert prior_key(extra, rel, 10) == prior_key(cfg, rel, 10)
    others = [p for p in PRESETS if p not in ("quick", "lecture")]
    # only quick and lecture (quick with more recover steps) load the shipped committee;
    # imagenet1k_* load torchvision's (method.md §2)
    assert from_preset("lecture").squeeze.source == "shipped"
    assert all(from_preset(p).squeeze.source != "shipped" for p in others)


def test_squeeze_loads_shipped_members_and_prior_reuses_their_alpha(tmp_path):
    ctx = _context(tmp_path)
    squeeze.run_squeeze(ctx, "h")
    members = {m["name"]: m for m in ctx.members()}
    for name, entry in MANIFEST["members"].items():
        rec = members[name]
        assert rec["source"] == "shipped" and rec["test_top1"] == entry["test_top1"]
        assert (ctx.cache_dir / rec["file"]).is_file()
    assert not (ctx.rd.path / layout.checkpoint_path("squeeze")).exists()  # nothing trained
    msgs = [e.get("msg", "") for e in layout.read_events(ctx.rd.path) if e["kind"] == "log"]
    assert any("loaded the shipped committee" in m for m in msgs)
    run_prior(ctx, "h")
    assert ctx.priors() == MANIFEST["priors"]["values"]
    assert not (ctx.cache_dir / "prior").exists()  # read from the manifest, not computed
    assert ctx.load_member("resnet18").training is False


def _damaged_copy(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "committee"
    shutil.copytree(SHIPPED, folder)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", folder)
    return folder


def test_corrupt_shipped_file_names_the_fix(tmp_path, monkeypatch):
    folder = _damaged_copy(tmp_path, monkeypatch)
    path = folder / MANIFEST["members"]["mobilenetv2"]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CvddError, match="corrupt") as err:
        squeeze.run_squeeze(_context(tmp_path), "h")
    for fix in ("re-clone", "make_committee.py", "squeeze.source=train"):
        assert fix in str(err.value)


def test_missing_shipped_file_or_manifest_names_the_fix(tmp_path, monkeypatch):
    folder = _damaged_copy(tmp_path, monkeypatch)
    (folder / MANIFEST["members"]["resnet50"]["file"]).unlink()
    with pytest.raises(CvddError, match="missing.*squeeze.source=train"):
        squeeze.run_squeeze(_context(tmp_path), "h")
    (folder / shipped.MANIFEST).unlink()
    with pytest.raises(CvddError, match="manifest.json is missing.*make_committee"):
        squeeze.run_squeeze(_context(tmp_path), "h")


def test_shipped_members_refuse_another_width(tmp_path):
    with pytest.raises(CvddError, match="width.*squeeze.source=train"):
        squeeze.run_squeeze(_context(tmp_path, ["squeeze.width=0.25"]), "h")

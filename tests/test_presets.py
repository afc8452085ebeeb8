"""Paper presets: 224-px squeeze crops, torchvision weights, student lr / eta, prior table."""

import dataclasses

import pytest

from cvdd.config import PRESETS, PRIOR_TABLE, from_preset
from cvdd.presets import STUDENT_LR_ETA
from cvdd.utils import CvddError

PAPER = [k for k in PRESETS if "_ipc" in k]


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_imagenette_presets_use_rrc_and_the_method_table(ipc):
    cfg = from_preset(f"imagenette_ipc{ipc}")
    assert cfg.squeeze.augment == "rrc" and cfg.squeeze.source == "train"
    # docs/method.md §7.2: ResNet-18 lr 0.0005, eta 1 at IPC 10 else 2
    assert (cfg.validate.lr, cfg.validate.eta) == (0.0005, 1.0 if ipc == 10 else 2.0)


def test_augment_resolution_by_size():
    from cvdd.augment import resolve_train_augment

    assert resolve_train_augment("auto", 224) == "rrc"
    assert resolve_train_augment("auto", 32) == resolve_train_augment("auto", 64) == "pad_crop"
    assert resolve_train_augment("pad_crop", 224) == "pad_crop"
    for name in ("cifar10_ipc10", "tiny_imagenet_ipc10"):
        assert from_preset(name).squeeze.augment == "pad_crop"


def test_train_crop_flip_keeps_shape():
    import torch

    from cvdd.augment import train_crop_flip

    x = torch.randn(3, 3, 16, 16)
    for mode in ("rrc", "pad_crop"):
        out = train_crop_flip(x, torch.Generator().manual_seed(0), mode)
        assert out.shape == x.shape


@pytest.mark.parametrize("name", PAPER)
def test_every_paper_preset_follows_the_student_table(name):
    ds, ipc = name.rsplit("_ipc", 1)
    cfg = from_preset(name)
    lr, eta = STUDENT_LR_ETA[ds]["resnet18"][int(ipc)]
    assert (cfg.validate.lr, cfg.validate.eta) == (lr, eta)


def test_imagenet1k_presets_load_torchvision_weights():
    cfg = from_preset("imagenet1k_ipc10", ["squeeze.weights_dir=/some/hub"])
    assert cfg.squeeze.source == "torchvision" and cfg.squeeze.weights_dir == "/some/hub"
    assert cfg.squeeze.augment == "rrc"


def test_torchvision_source_error_lists_paths(tmp_path):
    from cvdd.stages.squeeze import member_weight_files

    s = from_preset("imagenet1k_ipc10", [f"squeeze.weights_dir={tmp_path}"]).squeeze
    with pytest.raises(CvddError) as e:
        member_weight_files(s, 1000)
    assert str(tmp_path / "checkpoints" / "densenet121-a639ec97.pth") in str(e.value)
    assert str(tmp_path / "shufflenetv2_x1-5666bf0f80.pth") in str(e.value)
    assert "squeeze.source=train" in str(e.value)
    with pytest.raises(CvddError, match="weights_dir"):
        member_weight_files(from_preset("imagenet1k_ipc10").squeeze, 1000)
    # files named in squeeze.weights need no published file in the folder
    own = {m: str(tmp_path / "w.pth") for m in s.members}
    assert member_weight_files(dataclasses.replace(s, weights=own), 1000) == own
    (tmp_path / "resnet18-f37072fd.pth").touch()
    part = dataclasses.replace(s, weights={m: v for m, v in own.items() if m != "tv_resnet18"})
    assert member_weight_files(part, 1000)["tv_resnet18"] == str(tmp_path / "resnet18-f37072fd.pth")


@pytest.mark.parametrize(
    "name, dataset", [("imagenette_ipc10", "imagenette"), ("imagenet1k_ipc10", "imagenet")]
)
def test_prior_table_reaches_224px_presets(name, dataset):
    from cvdd.stages.prior import table_priors

    cfg = from_preset(name)
    assert cfg.prior.source == "table"
    values = table_priors(dataset, list(cfg.squeeze.members))
    row = PRIOR_TABLE["imagenet1k" if dataset == "imagenet" else dataset]
    assert values["tv_resnet18"] == row["resnet18"]
    assert values["tv_shufflenet_v2_x1_0"] == row["shufflenetv2"]
    assert set(values) == set(cfg.squeeze.members)
    with pytest.raises(CvddError, match="no prior table"):
        table_priors("imagefolder", list(cfg.squeeze.members))

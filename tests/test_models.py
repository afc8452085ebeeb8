"""Tests for cvdd.models: registry, small-resolution committee models, wrappers, weight loading."""

import importlib.util

import pytest
import torch
from torch import nn

from cvdd.config import STUDENT_ONLY
from cvdd.models import (
    create_model,
    is_known_model,
    list_models,
    register_model,
    register_prefix,
)

torch.set_num_threads(1)

# committee-capable small models (students-only ones have no BN: tests/test_twins.py)
SMALL_MODELS = [n for n in list_models() if not n.startswith("tv_") and n not in STUDENT_ONLY]
COMMITTEE = ["resnet18", "resnet50", "resnet101", "mobilenetv2", "shufflenetv2", "densenet121"]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names():
    assert set(COMMITTEE) <= set(list_models())
    assert {"test_tiny_cnn", "test_tiny_resnet"} <= set(list_models("test_*"))
    assert list_models("tv_*") == sorted(
        [
            "tv_densenet121",
            "tv_mobilenet_v2",
            "tv_resnet101",
            "tv_resnet18",
            "tv_resnet50",
            "tv_shufflenet_v2_x1_0",
        ]
    )
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", SMALL_MODELS)
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_small_model_contract(name, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels, width=0.25)
    assert (model.num_classes, model.in_channels) == (7, in_channels)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) >= 2
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randn(2, in_channels, size, size)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, model.forward_head(feats))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_models_differ():
    def num_bn(model):
        return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    assert num_bn(create_model("test_tiny_cnn", 4)) == 2
    assert num_bn(create_model("test_tiny_resnet", 4)) == 3


@pytest.mark.parametrize(
    "name,expected",
    # Parameter counts of the pytorch-cifar definitions at 10 classes, RGB (method.md §8.1).
    [("resnet18", 11_173_962), ("mobilenetv2", 2_296_922), ("shufflenetv2", 352_042)],
)
def test_width_one_param_count(name, expected):
    model = create_model(name, num_classes=10, in_channels=3, width=1.0)
    assert abs(_num_params(model) - expected) <= 0.05 * expected


def test_width_scales_and_rounds():
    narrow = create_model("resnet18", 10, width=0.1)
    assert narrow.conv1.out_channels == 8  # 6.4 rounds to a multiple of 4
    tiniest = create_model("test_tiny_cnn", 10, width=0.01)
    assert tiniest.conv1.out_channels == 4  # the floor of 4 channels


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as info:
        create_model("resnet19", 10)
    assert "resnet18" in str(info.value) and "densenet121" in str(info.value)


def test_duplicate_registration_raises():
    def resnet18(num_classes, in_channels=3, width=1.0):
        return nn.Linear(1, num_classes)

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18)


def test_unknown_name_mentions_prefixes():
    with pytest.raises(ValueError, match=r"timm:<name>"):
        create_model("resnet19", 10)


@pytest.mark.parametrize(
    "name, known",
    [
        ("resnet18", True),
        ("test_tiny_cnn", True),
        ("tv_resnet18", True),
        ("timm:resnet10t", True),  # the form only; create_model asks timm itself
        ("timm:", False),
        ("resnet19", False),
        ("", False),
    ],
)
def test_is_known_model(name, known):
    assert is_known_model(name) is known


def test_a_prefix_routes_names_to_its_factory(monkeypatch):
    from cvdd.models import _registry

    # a private copy, so the test prefix does not leak into other tests
    monkeypatch.setattr(_registry, "_PREFIXES", dict(_registry._PREFIXES))
    seen = {}

    def factory(rest, num_classes, in_channels=3, width=1.0, **kw):
        seen.update(rest=rest, kw=kw)
        return nn.Linear(in_channels, num_classes)

    register_prefix("fake:", factory)
    model = create_model("fake:net:v2", num_classes=4, in_channels=2, depth=3)
    assert isinstance(model, nn.Linear) and model.out_features == 4
    assert seen == {"rest": "net:v2", "kw": {"depth": 3}}
    assert is_known_model("fake:x") and "fake:x" not in list_models()
    with pytest.raises(ValueError, match="already registered"):
        register_prefix("fake:", factory)


@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"in_channels": 0}, {"width": 0.0}])
def test_bad_arguments(bad):
    kwargs = {"num_classes": 10, **bad}
    with pytest.raises(ValueError):
        create_model("test_tiny_cnn", **kwargs)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_weights_round_trip(tmp_path, wrap):
    torch.manual_seed(0)
    src = create_model("test_tiny_resnet", 5, in_channels=1).eval()
    state = src.state_dict()
    path = tmp_path / "w.pt"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    dst = create_model("test_tiny_resnet", 5, in_channels=1, weights=path).eval()
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_weights_dataparallel_prefix(tmp_path):
    src = create_model("test_tiny_cnn", 3)
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    dst = create_model("test_tiny_cnn", 3, weights=path)
    torch.testing.assert_close(dst.linear.weight, src.linear.weight)


def test_weights_missing_and_corrupt_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ValueError, match="not found") as info:
        create_model("test_tiny_cnn", 3, weights=missing)
    assert str(missing) in str(info.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="could not read") as info:
        create_model("test_tiny_cnn", 3, weights=corrupt)
    assert str(corrupt) in str(info.value)
    truncated = tmp_path / "truncated.pt"
    torch.save(create_model("test_tiny_cnn", 3).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read"):
        create_model("test_tiny_cnn", 3, weights=truncated)


def test_weights_with_python_objects_refused(tmp_path):
    import argparse

    path = tmp_path / "with_args.pt"
    model = create_model("test_tiny_cnn", 3)
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError, match="state_dict") as info:
        create_model("test_tiny_cnn", 3, weights=path)
    assert str(path) in str(info.value)


def test_weights_mismatch(tmp_path):
    path = tmp_path / "ten.pt"
    torch.save(create_model("test_tiny_cnn", 10).state_dict(), path)
    with pytest.raises(ValueError, match="does not match model test_tiny_cnn") as info:
        create_model("test_tiny_cnn", 4, weights=path)
    msg = str(info.value)
    assert str(path) in msg and "linear.weight" in msg
    with pytest.raises(ValueError, match="missing keys"):
        create_model("test_tiny_resnet", 10, weights=path)


def test_torchvision_resnet18_forward():
    model = create_model("tv_resnet18", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features) == (2, 512)
    assert model(x).shape == (2, 10)


def test_torchvision_imagenet_file_loads(tmp_path):
    # A file in torchvision's own layout with a 1000-way head, like resnet18-f37072fd.pth.
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(tv.state_dict(), path)
    same = create_model("tv_resnet18", 1000, weights=path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(same(x), tv.eval()(x))
    gray = create_model("tv_resnet18", 10, in_channels=1, weights=path)
    torch.testing.assert_close(gray.net.layer4[1].bn2.weight, tv.layer4[1].bn2.weight)
    torch.testing.assert_close(gray.net.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    assert gray.net.fc.out_features == 10
    with pytest.raises(ValueError, match="width"):
        create_model("tv_resnet18", 10, width=0.5)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_timm_route(tmp_path):
    import timm

    name = "test_resnet" if timm.is_model("test_resnet") else "resnet10t"
    model = create_model(f"timm:{name}", num_classes=6, in_channels=1)
    x = torch.randn(2, 1, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features)
    assert model(x).shape == (2, 6)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    path = tmp_path / "timm.pt"
    torch.save(model.state_dict(), path)
    again = create_model(f"timm:{name}", num_classes=6, in_channels=1, weights=path)
    torch.testing.assert_close(again.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match="unknown timm model"):
        create_model("timm:no_such_net", 6)


def test_torchvision_hub_folder_loads_published_file(tmp_path):
    """A state dict under torchvision's published file name in a torch hub cache layout loads."""
    import torchvision

    from cvdd.models.pretrained import find_imagenet_weights, imagenet_weight_files

    torch.manual_seed(0)
    src = torchvision.models.shufflenet_v2_x1_0(weights=None)
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "shufflenetv2_x1-5666bf0f80.pth"
    torch.save(src.state_dict(), path)
    assert find_imagenet_weights("tv_shufflenet_v2_x1_0", tmp_path) == path
    assert imagenet_weight_files(["tv_shufflenet_v2_x1_0"], tmp_path) == {
        "tv_shufflenet_v2_x1_0": path
    }
    model = create_model("tv_shufflenet_v2_x1_0", 1000, weights=path)
    assert torch.equal(model.net.conv1[0].weight, src.conv1[0].weight)
    assert torch.equal(model.net.fc.weight, src.fc.weight)  # 1000-class head kept


def test_torchvision_hub_folder_missing_lists_every_path(tmp_path):
    from cvdd.models.pretrained import imagenet_weight_files

    with pytest.raises(ValueError) as e:
        imagenet_weight_files(["tv_resnet18", "tv_resnet50"], tmp_path)
    msg = str(e.value)
    for name in ("resnet18-f37072fd.pth", "resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"):
        assert str(tmp_path / "checkpoints" / name) in msg and str(tmp_path / name) in msg
    with pytest.raises(ValueError, match="1000 classes"):
        imagenet_weight_files(["tv_resnet18"], tmp_path, num_classes=10)
    with pytest.raises(ValueError, match="weights_dir"):
        imagenet_weight_files(["tv_resnet18"], "")


def test_torchvision_published_file_names_match_installed_torchvision():
    import torchvision.models as tvm

    from cvdd.models.pretrained import TV_IMAGENET_FILES

    for name, files in TV_IMAGENET_FILES.items():
        urls = [w.url.rsplit("/", 1)[1] for w in tvm.get_model_weights(name[len("tv_") :])]
        assert set(files) <= set(urls), name


def test_legacy_densenet_keys_renamed():
    from cvdd.models.pretrained import rename_legacy_densenet_keys

    old = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.norm5.bias": 2}
    assert rename_legacy_densenet_keys(old) == {
        "features.denseblock1.denselayer1.norm1.weight": 1,
        "features.norm5.bias": 2,
    }

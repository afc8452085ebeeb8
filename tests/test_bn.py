"""BN statistics, the recover loss against a hand computation, and the BSSL teacher context."""

import pytest
import torch
import torch.nn as nn

from cvdd.bn import BNStatsCollector, bn_batch_stats_frozen, bn_matching_loss
from cvdd.models import create_model

torch.set_num_threads(1)


def _net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)
    )
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_collector_matches_manual_stats_per_group():
    net = _net()
    col = BNStatsCollector(net)
    x = torch.randn(6, 3, 8, 8)
    col.reset(groups=2)
    net(x)
    feat = net[0](x)  # input of the first BN
    for g, part in enumerate(feat.split(3)):
        mean = part.mean(dim=(0, 2, 3))
        var = ((part - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # biased
        assert torch.allclose(col.means[0][g], mean, atol=1e-5)
        assert torch.allclose(col.vars[0][g], var, atol=1e-5)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_collector_gradient_matches_autograd_through_var_mean(fmt):
    """The statistics' own backward (one closed form for all groups) against autograd's."""
    net = _net()[:2]  # the BN input is the conv output
    col = BNStatsCollector(net)
    x = torch.randn(6, 3, 8, 8).to(memory_format=fmt).requires_grad_(True)
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    col.reset(groups=2)
    net(x)
    (grad,) = torch.autograd.grad((a * col.means[0] + b * col.vars[0]).sum(), x)
    var, mean = torch.var_mean(net[0](x).reshape(2, 3, 4, -1), dim=(1, 3), unbiased=False)
    (expect,) = torch.autograd.grad((a * mean + b * var).sum(), x)
    torch.testing.assert_close(grad, expect, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_bf16_statistics_are_fp32_and_keep_no_fp32_copy_for_backward(fmt):
    """bf16 recover (the GPU fast path; bf16 runs on a CPU too): the statistics and their
    gradient match an fp32 computation on the same bf16 values, and what backward keeps of the
    BN input is the bf16 input itself (2 bytes a value), not an fp32 copy (4)."""
    torch.manual_seed(0)
    h = torch.randn(8, 16, 12, 12).to(torch.bfloat16).to(memory_format=fmt).requires_grad_(True)
    bn = nn.BatchNorm2d(16).eval()
    col = BNStatsCollector(bn)
    saved = []  # bytes of every tensor autograd keeps for backward
    pack = lambda t: saved.append(t.numel() * t.element_size()) or t  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        col.reset(groups=2)
        bn(h)  # the collector's hook sees the bf16 input
    assert col.means[0].dtype == col.vars[0].dtype == torch.float32
    assert max(saved) == h.numel() * 2, saved  # the input as it came; no 4-byte copy
    a, b = torch.randn(2, 16), torch.randn(2, 16)
    (grad,) = torch.autograd.grad((a * col.means[0] + b * col.vars[0]).sum(), h)
    ref = h.detach().float().requires_grad_(True)
    var, mean = torch.var_mean(ref.reshape(2, 4, 16, -1), dim=(1, 3), unbiased=False)
    torch.testing.assert_close(col.means[0], mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(col.vars[0], var, rtol=1e-5, atol=1e-6)
    (expect,) = torch.autograd.grad((a * mean + b * var).sum(), ref)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad.float(), expect, rtol=1e-2, atol=1e-4)


def test_loss_matches_hand_computation():
    net = _net()
    col = BNStatsCollector(net)
    x = torch.randn(4, 3, 8, 8)
    col.reset(1)
    net(x)
    loss = bn_matching_loss(col, first_bn_multiplier=10.0)
    f1 = net[0](x)
    f2 = net[3](net[2](net[1](f1)))
    expect = 0.0
    for mult, f, bn in ((10.0, f1, net[1]), (1.0, f2, net[4])):
        mean = f.mean(dim=(0, 2, 3))
        var = f.var(dim=(0, 2, 3), unbiased=False)
        expect += mult * (torch.norm(var - bn.running_var) + torch.norm(mean - bn.running_mean))
    assert torch.allclose(loss[0], expect, rtol=1e-5)


def test_loss_is_zero_when_stats_match():
    net = _net()
    x = torch.randn(8, 3, 8, 8)
    # set every BN's running stats to this batch's stats, layer by layer (eval mode forward)
    col = BNStatsCollector(net)
    for _ in range(2):
        col.reset(1)
        net(x)
        for (_, bn), m, v in zip(col.layers, col.means, col.vars):
            bn.running_mean.copy_(m[0].detach())
            bn.running_var.copy_(v[0].detach())
    col.reset(1)
    net(x)
    assert bn_matching_loss(col)[0] < 1e-4


def test_grouped_loss_equals_separate_loss():
    net = _net()
    col = BNStatsCollector(net)
    a, b = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    col.reset(2)
    net(torch.cat([a, b]))
    both = bn_matching_loss(col)
    singles = []
    for part in (a, b):
        col.reset(1)
        net(part)
        singles.append(bn_matching_loss(col)[0])
    assert torch.allclose(both, torch.stack(singles), rtol=1e-5)


def test_bssl_context_uses_batch_stats_and_keeps_running_stats():
    model = create_model("resnet18", 10, 3, width=0.25)
    model.train()
    model(torch.randn(8, 3, 16, 16))  # move running stats away from their init
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 3, 16, 16) * 3 + 1
    with torch.no_grad():
        eval_logits = model(x)
        with bn_batch_stats_frozen(model):
            bssl_logits = model(x)
            assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.allclose(eval_logits, bssl_logits, atol=1e-3)  # labels change
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing stored changed
    assert not any(m.training for m in model.modules())  # back in eval mode

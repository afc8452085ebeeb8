"""app/figures.py: every figure builds from the frames app/shaping makes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import figures, shaping


def test_figures_build_from_the_shaped_frames():
    tr = shaping.trace_df(
        [
            {
                "step": i,
                "loss": 1.0 / (i + 1),
                "ce": 0.5,
                "bn": 0.2,
                "members": {"a": {"ce": 0.4, "bn": 0.1, "weight": 1.0}},
            }
            for i in range(5)
        ]
    )
    assert len(figures.loss_curves(tr, log_y=True).data) == 3
    assert len(figures.member_losses(tr).data) == 1
    com = {
        "priors": {"a": 60, "b": 65},
        "groups": [{"ipc_idx": 0, "members": ["a", "b"], "weights": [0.4, 0.6]}],
    }
    assert figures.committee_heatmap(shaping.committee_matrix(com)).data[0].type == "heatmap"
    assert len(figures.prior_bars({"a": 60, "b": 65}, {"a": 0.3, "b": 0.7}, 5).data) == 2
    layer = {
        "index": 0,
        "name": "bn1",
        "running_mean": [0.0],
        "running_var": [1.0],
        "sources": {"init": {"mean": [0.5], "var": [1.5], "mean_gap": 0.5, "var_gap": 0.5}},
    }
    assert len(figures.bn_gaps(shaping.bn_gap_df({"layers": [layer]})).data) == 2
    ch = shaping.bn_channels_df(layer)
    assert len(figures.bn_scatter(ch, "mean", ["init"]).data) == 2  # dots + y = x
    p = np.array([0.7, 0.2, 0.1])
    assert len(figures.topk_bars(shaping.topk_df({"bssl": p, "eval": p[::-1]}, 2, [])).data) == 2
    assert len(figures.entropy_hist({"bssl": np.ones(3)}).data) == 1
    assert figures.kl_hist(np.zeros(3)).data[0].type == "histogram"
    cur = shaping.curves_df({"students": {"s": {"curve": [[1, 5.0]]}}})
    assert len(figures.student_curves(cur).data) == 1
    div = {"sources": {"synthetic": {"per_class": [0.3]}, "random_real": {"per_class": [0.4]}}}
    assert len(figures.diversity_bars(shaping.diversity_df(div), "t").data) == 2
    assert figures.similarity_heatmap(np.eye(3), "t").data[0].zmin == 0.0

"""app/shaping.py: pure functions from run-dir contents to tables, arrays and texts."""

from __future__ import annotations

import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app import shaping


def test_shaping_does_not_import_streamlit_or_torch():
    # cvdd.layout (names of the run-dir files and stages), cvdd.stats, cvdd.repeats and
    # cvdd.spread (seed groups, intervals and their sentences) are torch- and streamlit-free
    # (tests/test_layering.py)
    for f in Path(shaping.__file__).parent.glob("*.py"):
        pat = (
            r"^\s*(?:import|from)\s+(streamlit|torch|cvdd(?!\.(?:layout|stats|repeats|spread)\b))\b"
        )
        bad = re.findall(pat, f.read_text(), re.MULTILINE)
        assert not bad, f"{f.name} imports {bad}"


@pytest.mark.parametrize(
    "s,txt",
    [(None, "?"), (float("nan"), "?"), (0, "0s"), (59.4, "59s"), (95, "1m35s"), (4000, "1h06m")],
)
def test_fmt_duration(s, txt):
    assert shaping.fmt_duration(s) == txt


def test_fmt_age():
    assert shaping.fmt_age(None) == "?"
    assert shaping.fmt_age(100, now=105) == "5 s ago"
    assert shaping.fmt_age(0, now=180) == "3 min ago"
    assert shaping.fmt_age(0, now=7300) == "2 h ago"
    assert shaping.fmt_age(0, now=3 * 86400) == "3 d ago"


def test_status_text():
    st = {"status": "running", "stage": "recover", "step": 120, "total": 300, "eta_s": 80}
    assert shaping.status_text(st) == "running · recover 120/300 (40%) · recover ETA 1m20s"
    st["run_eta_s"] = 400  # the whole run's time left, when the worker knows it, wins
    assert shaping.status_text(st) == "running · recover 120/300 (40%) · about 6m40s left"
    assert shaping.status_text({"status": "done", "stage": "validate"}) == "done"
    t = shaping.status_text({"status": "failed", "stage": "init", "error": "no data"})
    assert t.startswith("failed · init") and t.endswith("no data")
    assert shaping.status_text({}) == "created"


EVENTS = [
    {"kind": "run_start", "attempt": 1},
    {"kind": "stage_start", "stage": "squeeze"},
    {
        "kind": "progress",
        "stage": "squeeze",
        "step": 5,
        "total": 10,
        "eta_s": 3,
        "label": "r18",
        "metrics": {"loss": 1.0},
    },
    {"kind": "stage_end", "stage": "squeeze", "seconds": 12.5, "metrics": {}},
    {"kind": "stage_start", "stage": "prior"},
    {"kind": "stage_end", "stage": "prior", "seconds": 1.0},
    {"kind": "stage_start", "stage": "recover"},
    {"kind": "snapshot", "stage": "recover", "step": 0, "path": "snapshots/recover/000000.png"},
    {"kind": "progress", "stage": "recover", "step": 40, "total": 100, "eta_s": 9.0},
    {"kind": "snapshot", "stage": "recover", "step": 20, "path": "a.png"},
    {"kind": "log", "stage": "recover", "level": "warning", "msg": "slow"},
    {"kind": "snapshot", "stage": "recover", "step": 20, "path": "b.png"},  # after a resume
    {"kind": "snapshot", "stage": "init", "step": 5, "path": "x.png"},
]


def test_stage_rows_running_and_interrupted():
    rows = {r["stage"]: r for r in shaping.stage_rows(EVENTS, "running")}
    assert [r["stage"] for r in shaping.stage_rows([], "created")] == list(shaping.STAGES)
    assert rows["squeeze"]["state"] == "done" and rows["squeeze"]["seconds"] == 12.5
    assert rows["squeeze"]["frac"] == 1.0 and rows["squeeze"]["label"] == "r18"
    assert rows["recover"]["state"] == "running" and rows["recover"]["frac"] == pytest.approx(0.4)
    assert rows["recover"]["eta_s"] == 9.0
    assert rows["relabel"]["state"] == "pending" and rows["relabel"]["frac"] == 0.0
    stopped = {r["stage"]: r for r in shaping.stage_rows(EVENTS, "stopped")}
    assert stopped["recover"]["state"] == "interrupted" and stopped["recover"]["eta_s"] is None


def test_snapshots_dedupe_and_sort():
    snaps = shaping.snapshots(EVENTS)
    assert [s["step"] for s in snaps] == [0, 20]
    assert snaps[1]["path"] == "b.png"  # the last one wins
    assert [s["step"] for s in shaping.snapshots(EVENTS, "init")] == [5]


def test_log_messages_and_progress_df():
    msgs = shaping.log_messages(EVENTS + [{"kind": "run_end", "status": "failed", "error": "x"}])
    assert msgs[0].startswith("[run] run_start") and "[recover] warning: slow" in msgs
    assert msgs[-1] == "[run] run_end: failed — x"
    df = shaping.progress_df(EVENTS, "squeeze")
    assert list(df["step"]) == [5] and df["loss"].iloc[0] == 1.0


def test_trace_df_keeps_last_record_per_step():
    recs = [
        {
            "step": 1,
            "lr": 0.2,
            "loss": 3.0,
            "ce": 2.0,
            "bn": 1.0,
            "members": {"a": {"ce": 2.1, "bn": 0.9, "weight": 0.6}},
        },
        {"step": 2, "loss": 2.0, "ce": 1.5, "bn": 0.5},
        {"step": 1, "loss": 9.0, "ce": 9.0, "bn": 9.0},  # re-run after resume
        {"no": "step"},
    ]
    df = shaping.trace_df(recs)
    assert list(df["step"]) == [1, 2] and df["loss"].tolist() == [9.0, 2.0]
    empty = shaping.trace_df([])
    assert empty.empty and {"step", "loss", "ce", "bn"} <= set(empty.columns)
    df2 = shaping.trace_df(recs[:2])
    assert df2["a.weight"].iloc[0] == 0.6
    long = shaping.trace_df([{"step": i, "loss": i, "ce": 0, "bn": 0} for i in range(5000)])
    d = shaping.downsample(long, 100)
    assert len(d) <= 100 and d["step"].iloc[0] == 0 and d["step"].iloc[-1] == 4999


def test_softmax_weights_follow_temperature():
    pri = {"a": 60.0, "b": 65.0, "c": 50.0}
    w = shaping.softmax_weights(pri, ["a", "b"], 5.0)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["b"] == pytest.approx(1 / (1 + np.exp(-1)))  # exp(13)/(exp(12)+exp(13))
    flat = shaping.softmax_weights(pri, pri, 1e6)
    assert max(flat.values()) - min(flat.values()) < 1e-4
    assert shaping.softmax_weights(pri, ["zzz"], 5) == {}


def test_committee_matrix_and_usage():
    com = {
        "priors": {"a": 60, "b": 65, "c": 50},
        "groups": [
            {"ipc_idx": 0, "classes": [0, 1], "members": ["a", "b"], "weights": [0.3, 0.7]},
            {"ipc_idx": 0, "classes": [2, 3], "members": ["a", "b"], "weights": [0.3, 0.7]},
            {"ipc_idx": 1, "classes": [0, 1], "members": ["b", "c"], "weights": [0.9, 0.1]},
            {"ipc_idx": 1, "classes": [2, 3], "members": ["a", "c"], "weights": [0.8, 0.2]},
        ],
    }
    m = shaping.committee_matrix(com)
    assert list(m.columns) == ["a", "b", "c"]
    assert list(m.index) == ["IPC 0", "IPC 1 · classes 0–1", "IPC 1 · classes 2–3"]
    assert m.loc["IPC 0", "b"] == 0.7 and np.isnan(m.loc["IPC 0", "c"])
    u = shaping.member_usage(com).set_index("member")
    assert u.loc["a", "groups"] == 3 and u.loc["c", "mean_weight"] == pytest.approx(0.15)
    assert shaping.committee_matrix({}).empty


def _grid(n_rows, n_cols, cell, pad, border=True):
    h = n_rows * (cell + pad) + (pad if border else -pad)
    w = n_cols * (cell + pad) + (pad if border else -pad)
    g = np.full((h, w), 255, np.uint8)
    off = pad if border else 0
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = off + r * (cell + pad), off + c * (cell + pad)
            g[y : y + cell, x : x + cell] = 10 * r + c
    return g


@pytest.mark.parametrize("border", [True, False])
def test_crop_grid_row_and_cell(border):
    g = _grid(3, 4, 5, 2, border)
    row = shaping.crop_grid_row(g, 1, 3, 5, 2)
    assert row.shape[0] == 5 and (row[:, shaping.grid_cell_origin(g.shape[1], 4, 5, 2)] == 10).all()
    cell = shaping.crop_grid_cell(g, 2, 3, 3, 4, 5, 2)
    assert cell.shape == (5, 5) and (cell == 23).all()
    with pytest.raises(IndexError):
        shaping.crop_grid_row(g, 3, 3, 5, 2)
    with pytest.raises(IndexError):
        shaping.crop_grid_cell(g, 0, 4, 3, 4, 5, 2)


def test_to_display_layouts_and_upscale():
    gray = np.arange(28 * 28, dtype=np.uint8).reshape(1, 28, 28)
    out = shaping.to_display(gray, 96)
    assert out.shape == (112, 112) and out[0, 0] == gray[0, 0, 0] and out[0, 3] == gray[0, 0, 0]
    rgb = np.zeros((3, 32, 32), np.uint8)
    assert shaping.to_display(rgb, 32).shape == (32, 32, 3)
    hwc = np.zeros((10, 10, 3), np.float32) + 300
    d = shaping.to_display(hwc, 10)
    assert d.dtype == np.uint8 and d.max() == 255


def test_image_index_class_major():
    t = np.repeat(np.arange(3), 2)
    k = np.tile(np.arange(2), 3)
    assert shaping.image_index(t, k, 2, 1) == 5
    assert shaping.image_index(t, None, 1, 0) == 2
    assert shaping.image_index(t, k, 7, 0) is None
    assert shaping.class_indices(t, 1) == [2, 3]


def test_bn_frames():
    layer = {
        "index": 0,
        "name": "bn1",
        "channels": 2,
        "running_mean": [0.0, 1.0],
        "running_var": [1.0, 2.0],
        "sources": {
            "init": {"mean": [0.5, 1.5], "var": [1.0, 1.0], "mean_gap": 0.7, "var_gap": 1.0},
            "synthetic": {"mean": [0.1, 1.1], "var": [1.0, 2.0], "mean_gap": 0.14, "var_gap": 0.0},
        },
    }
    g = shaping.bn_gap_df({"layers": [layer]})
    assert len(g) == 2 and g.set_index("source").loc["init", "mean_gap"] == 0.7
    assert g["label"].iloc[0] == "0: bn1"
    ch = shaping.bn_channels_df(layer)
    assert len(ch) == 4 and ch.iloc[1]["running_mean"] == 1.0 and ch.iloc[1]["batch_mean"] == 1.5
    assert shaping.bn_gap_df({}).empty and shaping.bn_channels_df({}).empty


def test_entropy_kl_topk_and_stats():
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    q = np.array([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    e = shaping.entropy(p)
    assert e[0] == pytest.approx(0.0, abs=1e-9) and e[1] == pytest.approx(np.log(3))
    kl = shaping.kl_div(p, q)
    assert kl[0] == pytest.approx(np.log(2)) and kl[1] == pytest.approx(0.0, abs=1e-9)
    df = shaping.topk_df({"bssl": p[0], "eval": q[0]}, 1, ["x", "y", "z"])
    assert set(df["name"]) == {"x"}
    df2 = shaping.topk_df(
        {"bssl": np.array([0.1, 0.2, 0.7]), "eval": np.array([0.6, 0.3, 0.1])}, 1, ["x", "y"]
    )
    assert list(df2["name"].unique()) == ["class 2", "x"] and len(df2) == 4
    s = shaping.soft_label_stats(p, q, np.array([0, 2]))
    assert s["agreement"] == 1.0 and s["acc_bssl"] == 0.5
    assert s["kl_mean"] == pytest.approx(np.log(2) / 2)


def test_students_and_curves():
    stu = {
        "students": {
            "distilled_bssl": {
                "data": "distilled",
                "labels": "bssl",
                "top1": 60,
                "curve": [[1, 10.0], [2, 20.0]],
            },
            "distilled_eval": {"top1": 55, "curve": [[2, 18.0]]},
            "bad": 3,
        }
    }
    df = shaping.students_df(stu)
    assert list(df["key"]) == ["distilled_bssl", "distilled_eval"]
    c = shaping.curves_df(stu)
    assert len(c) == 3 and c["top1"].max() == 20.0
    assert shaping.students_df({}).empty and shaping.curves_df(None).empty


def test_diversity_frames():
    div = {
        "class_names": ["a", "b"],
        "sources": {
            "synthetic": {"per_class": [0.3, 0.4], "mean": 0.35},
            "random_real": {"per_class": [0.5, 0.6], "mean": 0.55},
        },
    }
    df = shaping.diversity_df(div)
    assert len(df) == 4 and df.iloc[1]["name"] == "b"
    assert shaping.diversity_means(div) == {"synthetic": 0.35, "random_real": 0.55}


def test_runs_table_and_compare_row():
    rows = [
        {
            "run_id": "r1",
            "status": "done",
            "stage": "validate",
            "preset": "tiny",
            "dataset": "/data/cifar10",
            "ipc": 2,
            "members": ["a", "b"],
            "student_top1": 10.0,
            "created_t": 0,
            "updated_t": 50,
        }
    ]
    df = shaping.runs_table(rows, now=120)
    assert df.iloc[0]["dataset"] == "cifar10" and df.iloc[0]["age"] == "2 min ago"
    assert df.iloc[0]["members"] == 2 and df.iloc[0]["status"] == "done"
    cfg = {
        "config": {
            "ipc": 2,
            "data": {"dataset": "builtin"},
            "squeeze": {"members": ["a"]},
            "recover": {"voter": "equal"},
            "relabel": {"mode": "eval"},
        }
    }
    r = shaping.compare_row(
        "r1",
        cfg,
        {
            "student_top1": 12.0,
            "labels": {"bssl": 12.0},
            "baselines": {"random_real": {"student_top1": 9.0}},
        },
    )
    assert r["method"] == "sre2l++" and r["voter"] == "equal" and r["relabel"] == "eval"
    assert r["random_real_top1"] == 9.0 and r["bssl_top1"] == 12.0 and r["eval_top1"] is None
    assert shaping.compare_row("x", None, None)["student_top1"] is None


def test_zip_folder(tmp_path):
    (tmp_path / "images/000_a").mkdir(parents=True)
    (tmp_path / "images/000_a/000.png").write_bytes(b"png")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".hidden.tmp").write_text("x")
    z = zipfile.ZipFile(io.BytesIO(shaping.zip_folder(tmp_path, "run-export")))
    assert sorted(z.namelist()) == ["run-export/config.json", "run-export/images/000_a/000.png"]


def test_form_overrides():
    v = {
        "ipc": 3,
        "seed": 1,
        "device": "cpu",
        "num_experts": 2,
        "temperature": 5.0,
        "voter": "prior",
        "schedule": "auto",
        "iterations": 40,
        "teacher": "a",
        "members": ["a", "b"],
        "bssl": False,
        "dataset": "builtin",
    }
    o = shaping.form_overrides(v)
    assert "squeeze.members=a,b" in o and "relabel.mode=eval" in o and "ipc=3" in o
    assert "recover.iterations=40" in o and "data.dataset=builtin" in o
    assert shaping.form_overrides({"dataset": None}) == []


def test_tail_and_config_summary():
    assert shaping.tail_lines(b"a\nb\nc\n", 2) == "b\nc" and shaping.tail_lines(None) == ""
    s = shaping.config_summary(
        {
            "name": "tiny",
            "ipc": 2,
            "squeeze": {"members": ["a"]},
            "recover": {"num_experts": 1},
            "relabel": {"mode": "bssl"},
        }
    )
    assert s["members"] == ["a"] and s["N"] == 1 and s["labels"] == "bssl" and s["T"] is None


def test_memory_rows_say_what_each_figure_measures():
    plan = {
        "device": "cuda:0",
        "precision": "bf16",
        "groups": 50,
        "images_per_group": 100,
        "groups_per_wave": 8,
        "waves": 7,
        "forced": False,
        "bytes_per_image": {"resnet18": 3 * 2**20},
        "measured_by": "CUDA peak",
        "budget_bytes": 40 * 2**30,
        "budget_source": "free CUDA memory",
        "estimated_peak_bytes": 30 * 2**30,
        "measured_peak_bytes": 28 * 2**30,
        "fits": True,
        "graph": "captured",
    }
    rows = dict(shaping.memory_rows(plan))
    assert rows["waves × groups per wave"] == "7 × 8 (800 images a wave, planned from the budget)"
    assert rows["measured peak (CUDA max allocated)"] == "28.00 GiB"
    assert rows["kept for backward per image (CUDA peak)"] == "resnet18 3.00 MiB"
    assert rows["step (recover.cuda_graph)"] == "captured"
    cpu = dict(shaping.memory_rows({**plan, "measured_peak_bytes": None, "graph": ""}))
    assert cpu["measured peak (CUDA max allocated)"].startswith("n/a")
    assert "step (recover.cuda_graph)" not in cpu
    assert shaping.memory_rows(None) == [] and shaping.memory_rows({"waves": "7"}) == []
    torn = dict(shaping.memory_rows({"waves": 2, "budget_bytes": "x"}))  # foreign values
    assert torn["memory budget a wave may fill"].startswith("n/a")

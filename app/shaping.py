"""Pure data shaping for the UI: run-dir contents -> DataFrames, arrays and short texts.

No streamlit import here (tests/test_shaping.py runs these without a server). Inputs are the
parsed files of docs/rundir.md; every function tolerates missing keys, because a run that is
still going, crashed or came from an older version may lack any of them.
"""
from __future__ import annotations

import io
import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

STAGES = ("squeeze", "prior", "init", "recover", "relabel", "validate")
STATUS_ICONS = {"running": ":material/play_circle:", "done": ":material/check_circle:",
                "failed": ":material/error:", "stopped": ":material/pause_circle:",
                "crashed": ":material/warning:", "created": ":material/schedule:",
                "corrupt": ":material/broken_image:"}  # Streamlit material icons (markdown)


# ---------------------------------------------------------------------------------------------
# small text helpers

def fmt_duration(s: float | None) -> str:
    """12 -> '12s', 95 -> '1m35s', 4000 -> '1h06m'; None -> '?'."""
    if s is None or not math.isfinite(s):
        return "?"
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_age(t: float | None, now: float | None = None) -> str:
    """Unix time -> '5 s ago', '3 min ago', '2 h ago', '4 d ago'."""
    if t is None:
        return "?"
    d = max(0.0, (now if now is not None else time.time()) - t)
    if d < 60:
        return f"{int(d)} s ago"
    if d < 3600:
        return f"{int(d // 60)} min ago"
    if d < 86400:
        return f"{int(d // 3600)} h ago"
    return f"{int(d // 86400)} d ago"


def status_text(st: dict) -> str:
    """One line for a run_status() dict, e.g. 'running · recover 120/300 (40%) · ETA 1m20s'."""
    status = st.get("status") or "created"
    parts = [status]
    stage = st.get("stage")
    if stage and status != "done":
        step, total = st.get("step"), st.get("total")
        if total:
            pct = 100 * (step or 0) / max(total, 1)
            parts.append(f"{stage} {step or 0}/{total} ({pct:.0f}%)")
        else:
            parts.append(stage)
    if status == "running" and st.get("eta_s") is not None:
        parts.append(f"ETA {fmt_duration(st['eta_s'])}")
    if status == "failed" and st.get("error"):
        parts.append(str(st["error"]))
    return " · ".join(parts)


def tail_lines(data: bytes | str | None, n: int = 40) -> str:
    if not data:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return "\n".join(text.splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# events

def parse_jsonl(data: bytes | str | None) -> list[dict]:
    """JSON lines -> dicts; a torn last line or a corrupt line is skipped."""
    if not data:
        return []
    if isinstance(data, str):
        data = data.encode()
    out = []
    for line in data.split(b"\n")[:-1]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def stage_rows(events: list[dict], status: str = "running") -> list[dict]:
    """Per stage: state (pending/running/done/interrupted), step, total, frac, eta_s, seconds."""
    rows = {s: {"stage": s, "state": "pending", "step": None, "total": None, "frac": 0.0,
                "eta_s": None, "seconds": None, "label": "", "metrics": {}} for s in STAGES}
    for e in events:
        s = e.get("stage")
        if s not in rows:
            continue
        r, k = rows[s], e.get("kind")
        if k == "stage_start":
            r.update(state="running", step=0, total=None, frac=0.0, eta_s=None, seconds=None)
        elif k == "progress":
            step, total = e.get("step") or 0, e.get("total") or 0
            r.update(state="running", step=step, total=total,
                     frac=min(1.0, step / total) if total else 0.0, eta_s=e.get("eta_s"),
                     label=e.get("label") or "", metrics=e.get("metrics") or {})
        elif k == "stage_end":
            r.update(state="done", frac=1.0, eta_s=None, seconds=e.get("seconds"),
                     metrics=e.get("metrics") or r["metrics"])
    if status != "running":  # a started stage without stage_end did not finish
        for r in rows.values():
            if r["state"] == "running":
                r.update(state="interrupted", eta_s=None)
    return list(rows.values())


def snapshots(events: list[dict], stage: str = "recover") -> list[dict]:
    """Snapshot events of a stage, one per step (the last wins after a resume), by step."""
    by_step = {e["step"]: e for e in events if e.get("kind") == "snapshot"
               and e.get("stage") == stage and isinstance(e.get("step"), int) and e.get("path")}
    return [by_step[k] for k in sorted(by_step)]


def log_messages(events: list[dict], n: int = 30) -> list[str]:
    out = []
    for e in events:
        if e.get("kind") == "log":
            out.append(f"[{e.get('stage') or 'run'}] {e.get('level', 'info')}: {e.get('msg', '')}")
        elif e.get("kind") in ("run_start", "run_end"):
            extra = e.get("status") or f"attempt {e.get('attempt', '?')} on {e.get('device', '?')}"
            out.append(f"[run] {e['kind']}: {extra}" + (f" — {e['error']}" if e.get("error") else ""))
    return out[-n:]


def progress_df(events: list[dict], stage: str) -> pd.DataFrame:
    """Metrics of a stage's progress events (step + one column per metric)."""
    rows = [{"step": e.get("step"), "label": e.get("label") or "", **(e.get("metrics") or {})}
            for e in events if e.get("kind") == "progress" and e.get("stage") == stage]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# recover: trace, committee

def trace_df(records: list[dict]) -> pd.DataFrame:
    """recover/trace.jsonl -> one row per step (last record wins), columns step, lr, loss, ce, bn
    and '<member>.ce' / '<member>.bn' / '<member>.weight'."""
    by_step: dict[int, dict] = {}
    for r in records:
        if not isinstance(r.get("step"), (int, float)):
            continue
        row = {k: r.get(k) for k in ("step", "lr", "loss", "ce", "bn")}
        for m, v in (r.get("members") or {}).items():
            if isinstance(v, dict):
                for k in ("ce", "bn", "weight"):
                    if k in v:
                        row[f"{m}.{k}"] = v[k]
        by_step[int(r["step"])] = row
    cols = ["step", "lr", "loss", "ce", "bn"]
    if not by_step:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame([by_step[k] for k in sorted(by_step)])
    return df


def downsample(df: pd.DataFrame, max_points: int = 1500) -> pd.DataFrame:
    if len(df) <= max_points:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, max_points).round().astype(int))
    return df.iloc[idx]


def softmax_weights(priors: dict, members: Iterable[str], temperature: float) -> dict:
    """softmax(alpha / T) over the given members (paper Eq. 5)."""
    ms = [m for m in members if m in priors]
    if not ms:
        return {}
    a = np.array([float(priors[m]) for m in ms]) / max(float(temperature), 1e-9)
    w = np.exp(a - a.max())
    w /= w.sum()
    return {m: float(x) for m, x in zip(ms, w)}


def committee_matrix(committee: dict) -> pd.DataFrame:
    """Rows = IPC index (or IPC index + class range when groups of one index differ),
    columns = members, values = voting weight (NaN = not on that committee)."""
    groups = committee.get("groups") or []
    members: list[str] = list((committee.get("priors") or {}).keys())
    for g in groups:
        for m in g.get("members") or []:
            if m not in members:
                members.append(m)
    by_ipc: dict[int, list[dict]] = {}
    for g in groups:
        by_ipc.setdefault(int(g.get("ipc_idx", 0)), []).append(g)
    rows, index = [], []
    for k in sorted(by_ipc):
        gs = by_ipc[k]
        sig = {(tuple(g.get("members") or []), tuple(round(w, 6) for w in g.get("weights") or []))
               for g in gs}
        for g in (gs[:1] if len(sig) == 1 else gs):
            row = {m: np.nan for m in members}
            for m, w in zip(g.get("members") or [], g.get("weights") or []):
                row[m] = float(w)
            rows.append(row)
            cls = g.get("classes") or []
            rng = f" · classes {min(cls)}–{max(cls)}" if len(sig) > 1 and cls else ""
            index.append(f"IPC {k}{rng}")
    return pd.DataFrame(rows, index=index, columns=members)


def member_usage(committee: dict) -> pd.DataFrame:
    """How often each member votes and its mean weight when it does."""
    count: dict[str, int] = {}
    wsum: dict[str, float] = {}
    for g in committee.get("groups") or []:
        for m, w in zip(g.get("members") or [], g.get("weights") or []):
            count[m] = count.get(m, 0) + 1
            wsum[m] = wsum.get(m, 0.0) + float(w)
    priors = committee.get("priors") or {}
    names = list(dict.fromkeys(list(priors) + list(count)))
    return pd.DataFrame({"member": names,
                         "alpha": [priors.get(m, np.nan) for m in names],
                         "groups": [count.get(m, 0) for m in names],
                         "mean_weight": [wsum[m] / count[m] if count.get(m) else np.nan
                                         for m in names]})


# ---------------------------------------------------------------------------------------------
# images

def grid_cell_origin(size: int, n: int, cell: int, pad: int) -> int:
    """Offset of the first cell along one axis, whether or not the grid has an outer border."""
    inner = n * cell + max(n - 1, 0) * pad
    return max(0, (size - inner) // 2)


def crop_grid_row(grid: np.ndarray, r: int, n_rows: int, cell: int, pad: int) -> np.ndarray:
    """Row `r` (one class) of a snapshot grid (H, W[, C]) as an image strip."""
    if not 0 <= r < n_rows:
        raise IndexError(f"row {r} outside 0..{n_rows - 1}")
    y = grid_cell_origin(grid.shape[0], n_rows, cell, pad) + r * (cell + pad)
    return grid[y:y + cell]


def crop_grid_cell(grid: np.ndarray, r: int, c: int, n_rows: int, n_cols: int, cell: int,
                   pad: int) -> np.ndarray:
    row = crop_grid_row(grid, r, n_rows, cell, pad)
    if not 0 <= c < n_cols:
        raise IndexError(f"column {c} outside 0..{n_cols - 1}")
    x = grid_cell_origin(grid.shape[1], n_cols, cell, pad) + c * (cell + pad)
    return row[:, x:x + cell]


def to_display(img: np.ndarray, min_side: int = 96) -> np.ndarray:
    """One uint8 image (C, H, W) or (H, W[, C]) -> (H, W) or (H, W, 3), upscaled by an integer
    factor (nearest neighbour) so that small images are visible."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    f = max(1, int(math.ceil(min_side / max(1, min(a.shape[:2])))))
    if f > 1:
        a = a.repeat(f, axis=0).repeat(f, axis=1)
    return a


def image_index(targets: np.ndarray, ipc_idx: np.ndarray | None, cls: int, k: int) -> int | None:
    """Row of (class, IPC index) in an images.npz / soft_labels.npz (class-major order)."""
    t = np.asarray(targets)
    if ipc_idx is not None and len(ipc_idx) == len(t):
        hit = np.where((t == cls) & (np.asarray(ipc_idx) == k))[0]
    else:
        hit = np.where(t == cls)[0]
        hit = hit[k:k + 1]
    return int(hit[0]) if len(hit) else None


def class_indices(targets: np.ndarray, cls: int) -> list[int]:
    return [int(i) for i in np.where(np.asarray(targets) == cls)[0]]


# ---------------------------------------------------------------------------------------------
# BN statistics (paper Fig. 5)

def bn_gap_df(bn: dict) -> pd.DataFrame:
    """Long table: layer index, name, source, mean_gap, var_gap."""
    rows = []
    for layer in bn.get("layers") or []:
        for src, v in (layer.get("sources") or {}).items():
            rows.append({"layer": layer.get("index"), "name": layer.get("name", ""),
                         "label": f"{layer.get('index')}: {layer.get('name', '')}",
                         "source": src, "mean_gap": v.get("mean_gap"), "var_gap": v.get("var_gap")})
    return pd.DataFrame(rows, columns=["layer", "name", "label", "source", "mean_gap", "var_gap"])


def bn_channels_df(layer: dict) -> pd.DataFrame:
    """Per channel and source: running mean/var vs the batch mean/var of that source."""
    rm, rv = layer.get("running_mean") or [], layer.get("running_var") or []
    rows = []
    for src, v in (layer.get("sources") or {}).items():
        for c, (m, s) in enumerate(zip(v.get("mean") or [], v.get("var") or [])):
            if c < len(rm) and c < len(rv):
                rows.append({"channel": c, "source": src, "running_mean": rm[c],
                             "batch_mean": m, "running_var": rv[c], "batch_var": s})
    return pd.DataFrame(rows, columns=["channel", "source", "running_mean", "batch_mean",
                                       "running_var", "batch_var"])


# ---------------------------------------------------------------------------------------------
# soft labels (paper §3.7)

def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of a probability matrix."""
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1)


def kl_div(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, in nats."""
    p = np.clip(np.asarray(p, np.float64), 1e-12, None)
    q = np.clip(np.asarray(q, np.float64), 1e-12, None)
    return (p * (np.log(p) - np.log(q))).sum(axis=-1)


def topk_df(probs: dict[str, np.ndarray], k: int, class_names: list[str]) -> pd.DataFrame:
    """Top-k classes of one image for each labelling mode (union of their top-k classes)."""
    keep: list[int] = []
    for p in probs.values():
        for c in np.argsort(-np.asarray(p))[:k]:
            if int(c) not in keep:
                keep.append(int(c))
    rows = []
    for mode, p in probs.items():
        for c in keep:
            rows.append({"mode": mode, "class": c, "name": class_name(class_names, c),
                         "prob": float(p[c])})
    return pd.DataFrame(rows, columns=["mode", "class", "name", "prob"])


def soft_label_stats(pb: np.ndarray, pe: np.ndarray, targets: np.ndarray) -> dict:
    """Agreement of the argmax, mean KL(bssl||eval), mean entropies and label accuracy."""
    pb, pe, t = np.asarray(pb), np.asarray(pe), np.asarray(targets)
    return {"agreement": float((pb.argmax(1) == pe.argmax(1)).mean()) if len(pb) else float("nan"),
            "kl_mean": float(kl_div(pb, pe).mean()) if len(pb) else float("nan"),
            "entropy_bssl": float(entropy(pb).mean()) if len(pb) else float("nan"),
            "entropy_eval": float(entropy(pe).mean()) if len(pe) else float("nan"),
            "acc_bssl": float((pb.argmax(1) == t).mean()) if len(pb) else float("nan"),
            "acc_eval": float((pe.argmax(1) == t).mean()) if len(pe) else float("nan")}


def class_name(names: list[str] | None, c: int) -> str:
    return str(names[c]) if names and 0 <= c < len(names) else f"class {c}"


def students_df(students: dict) -> pd.DataFrame:
    rows = [{"key": k, "data": v.get("data"), "labels": v.get("labels"), "top1": v.get("top1"),
             "top5": v.get("top5"), "seconds": v.get("seconds")}
            for k, v in ((students or {}).get("students") or {}).items() if isinstance(v, dict)]
    return pd.DataFrame(rows, columns=["key", "data", "labels", "top1", "top5", "seconds"])


def curves_df(students: dict) -> pd.DataFrame:
    rows = []
    for k, v in ((students or {}).get("students") or {}).items():
        for pt in (v.get("curve") or []) if isinstance(v, dict) else []:
            if isinstance(pt, (list, tuple)) and len(pt) >= 2:
                rows.append({"student": k, "epoch": pt[0], "top1": pt[1]})
    return pd.DataFrame(rows, columns=["student", "epoch", "top1"])


# ---------------------------------------------------------------------------------------------
# diversity (paper Fig. 4)

def diversity_df(div: dict, names: list[str] | None = None) -> pd.DataFrame:
    """Long table: class, name, source, cosine (mean pairwise cosine similarity in the class)."""
    names = names or div.get("class_names") or []
    rows = []
    for src, v in (div.get("sources") or {}).items():
        for c, x in enumerate(v.get("per_class") or []):
            rows.append({"class": c, "name": class_name(names, c), "source": src, "cosine": x})
    return pd.DataFrame(rows, columns=["class", "name", "source", "cosine"])


def diversity_means(div: dict) -> dict:
    return {src: v.get("mean") for src, v in (div.get("sources") or {}).items()}


# ---------------------------------------------------------------------------------------------
# runs list, comparison, export

def runs_table(rows: list[dict], now: float | None = None) -> pd.DataFrame:
    """cvdd.runs.list_runs() rows -> the runs-list table."""
    out = []
    for r in rows:
        ds = r.get("dataset") or ""
        out.append({"run": r.get("run_id"),
                    "status": r.get("status"),
                    "stage": r.get("stage") or "", "preset": r.get("preset") or "",
                    "dataset": Path(str(ds)).name if ds else "", "ipc": r.get("ipc"),
                    "members": len(r.get("members") or []) or None,
                    "top1": r.get("student_top1"),
                    "age": fmt_age(r.get("created_t"), now),
                    "updated": fmt_age(r.get("updated_t"), now) if r.get("updated_t") else ""})
    return pd.DataFrame(out, columns=["run", "status", "stage", "preset", "dataset", "ipc",
                                      "members", "top1", "age", "updated"])


def compare_row(run_id: str, cfg_doc: dict | None, result: dict | None) -> dict:
    """One comparison row from config.json and result.json (either may be missing)."""
    cfg = (cfg_doc or {}).get("config") or {}
    res = result or {}
    members = (cfg.get("squeeze") or {}).get("members") or []
    rec, rel = cfg.get("recover") or {}, cfg.get("relabel") or {}
    rr = ((res.get("baselines") or {}).get("random_real") or {}).get("student_top1")
    return {"run": run_id, "method": res.get("method") or ("sre2l++" if len(members) == 1 else
                                                            "cvdd" if members else None),
            "dataset": Path(str(res.get("dataset") or (cfg.get("data") or {}).get("dataset")
                                or "")).name,
            "ipc": res.get("ipc", cfg.get("ipc")), "members": len(members) or None,
            "voter": rec.get("voter"), "relabel": rel.get("mode"),
            "student_top1": res.get("student_top1"), "random_real_top1": rr,
            "bssl_top1": (res.get("labels") or {}).get("bssl"),
            "eval_top1": (res.get("labels") or {}).get("eval")}


def zip_folder(folder: str | Path, arc_root: str = "") -> bytes:
    """Zip a folder (recursively) into memory; paths inside start with `arc_root/`."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(folder).as_posix()
                z.write(p, f"{arc_root}/{rel}" if arc_root else rel)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# new-run form

FIELD_KEYS = {  # config key mentioned in a CvddError -> form field that shows it
    "recover.num_experts": "num_experts", "num_experts": "num_experts",
    "recover.fixed_members": "schedule", "recover.temperature": "temperature",
    "recover.iterations": "iterations", "squeeze.members": "members",
    "relabel.teacher": "teacher", "ipc": "ipc", "device": "device", "data.dataset": "dataset",
    "recover.voter": "voter", "recover.schedule": "schedule", "seed": "seed",
}


def field_for_error(msg: str) -> str | None:
    """Which form field a config error is about (longest matching key wins), or None."""
    hits = [k for k in FIELD_KEYS if k in msg]
    return FIELD_KEYS[max(hits, key=len)] if hits else None


def form_overrides(v: dict[str, Any]) -> list[str]:
    """Form values -> `section.key=value` overrides for cvdd.config.from_preset."""
    out = []
    simple = [("ipc", "ipc"), ("seed", "seed"), ("device", "device"),
              ("num_experts", "recover.num_experts"), ("temperature", "recover.temperature"),
              ("voter", "recover.voter"), ("schedule", "recover.schedule"),
              ("iterations", "recover.iterations"), ("teacher", "relabel.teacher"),
              ("dataset", "data.dataset")]
    for field, key in simple:
        if v.get(field) is not None and v.get(field) != "":
            out.append(f"{key}={v[field]}")
    if v.get("members") is not None:
        out.append("squeeze.members=" + ",".join(v["members"]))
    if v.get("bssl") is not None:
        out.append("relabel.mode=" + ("bssl" if v["bssl"] else "eval"))
    return out


def config_summary(cfg: dict) -> dict:
    """A few headline settings of a RunConfig dict, for captions."""
    rec = cfg.get("recover") or {}
    return {"preset": cfg.get("name"), "dataset": (cfg.get("data") or {}).get("dataset"),
            "ipc": cfg.get("ipc"), "members": list((cfg.get("squeeze") or {}).get("members") or []),
            "N": rec.get("num_experts"), "T": rec.get("temperature"), "voter": rec.get("voter"),
            "schedule": rec.get("schedule"), "iterations": rec.get("iterations"),
            "labels": (cfg.get("relabel") or {}).get("mode"), "device": cfg.get("device"),
            "seed": cfg.get("seed")}

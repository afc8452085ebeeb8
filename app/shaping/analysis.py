"""The analysis files: BN statistics (Fig. 5), soft labels (§3.7), students, diversity (Fig. 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def bn_gap_df(bn: dict) -> pd.DataFrame:
    """Long table: layer index, name, source, mean_gap, var_gap."""
    rows = []
    for layer in bn.get("layers") or []:
        for src, v in (layer.get("sources") or {}).items():
            rows.append(
                {
                    "layer": layer.get("index"),
                    "name": layer.get("name", ""),
                    "label": f"{layer.get('index')}: {layer.get('name', '')}",
                    "source": src,
                    "mean_gap": v.get("mean_gap"),
                    "var_gap": v.get("var_gap"),
                }
            )
    return pd.DataFrame(rows, columns=["layer", "name", "label", "source", "mean_gap", "var_gap"])


def bn_channels_df(layer: dict) -> pd.DataFrame:
    """Per channel and source: running mean/var vs the batch mean/var of that source."""
    rm, rv = layer.get("running_mean") or [], layer.get("running_var") or []
    rows = []
    for src, v in (layer.get("sources") or {}).items():
        for c, (m, s) in enumerate(zip(v.get("mean") or [], v.get("var") or [])):
            if c < len(rm) and c < len(rv):
                rows.append(
                    {
                        "channel": c,
                        "source": src,
                        "running_mean": rm[c],
                        "batch_mean": m,
                        "running_var": rv[c],
                        "batch_var": s,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=["channel", "source", "running_mean", "batch_mean", "running_var", "batch_var"],
    )


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
            rows.append(
                {"mode": mode, "class": c, "name": class_name(class_names, c), "prob": float(p[c])}
            )
    return pd.DataFrame(rows, columns=["mode", "class", "name", "prob"])


def soft_label_stats(pb: np.ndarray, pe: np.ndarray, targets: np.ndarray) -> dict:
    """Agreement of the argmax, mean KL(bssl||eval), mean entropies and label accuracy."""
    pb, pe, t = np.asarray(pb), np.asarray(pe), np.asarray(targets)
    return {
        "agreement": float((pb.argmax(1) == pe.argmax(1)).mean()) if len(pb) else float("nan"),
        "kl_mean": float(kl_div(pb, pe).mean()) if len(pb) else float("nan"),
        "entropy_bssl": float(entropy(pb).mean()) if len(pb) else float("nan"),
        "entropy_eval": float(entropy(pe).mean()) if len(pe) else float("nan"),
        "acc_bssl": float((pb.argmax(1) == t).mean()) if len(pb) else float("nan"),
        "acc_eval": float((pe.argmax(1) == t).mean()) if len(pe) else float("nan"),
    }


def class_name(names: list[str] | None, c: int) -> str:
    return str(names[c]) if names and 0 <= c < len(names) else f"class {c}"


def students_df(students: dict) -> pd.DataFrame:
    rows = [
        {
            "key": k,
            "data": v.get("data"),
            "labels": v.get("labels"),  # bssl | eval | hard (one-hot, no teacher)
            "student": v.get("student"),
            "top1": v.get("top1"),
            "top5": v.get("top5"),
            "seconds": v.get("seconds"),
        }
        for k, v in ((students or {}).get("students") or {}).items()
        if isinstance(v, dict)
    ]
    return pd.DataFrame(
        rows, columns=["key", "data", "labels", "student", "top1", "top5", "seconds"]
    )


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


def zoom_range(values, pad: float = 0.15, min_pad: float = 0.005) -> list[float] | None:
    """A y range that fits the finite values with some margin, so small differences show
    (0.93 vs 0.97 would look equal on an axis from 0); None when there is nothing to fit."""
    v = np.asarray(pd.to_numeric(pd.Series(list(values)), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    p = max((hi - lo) * pad, min_pad)
    return [lo - p, hi + p]


def diversity_pair_df(divs: dict, names: list[str] | None = None) -> pd.DataFrame:
    """Fig. 4: per class, the synthetic images' mean pairwise cosine of each run (label -> the
    run's diversity.json)."""
    rows = []
    for label, div in divs.items():
        src = ((div or {}).get("sources") or {}).get("synthetic") or {}
        per = src.get("per_class") if isinstance(src, dict) else None
        for c, x in enumerate(per if isinstance(per, list) else []):
            if isinstance(x, (int, float)):
                rows.append({"class": c, "name": class_name(names, c), "run": label, "cosine": x})
    return pd.DataFrame(rows, columns=["class", "name", "run", "cosine"])


def students_table(results: dict, headline: dict | None = None) -> pd.DataFrame:
    """Table 4 style: one row per run, one column per student architecture (top-1 %), from
    result.json's `students`; older runs give their headline student only, named by
    `headline` (run -> validate.student)."""
    rows = []
    for run, res in results.items():
        res = res if isinstance(res, dict) else {}
        stu = res.get("students")
        if not isinstance(stu, dict):
            name = (headline or {}).get(run) or "student"
            stu = {name: res["student_top1"]} if "student_top1" in res else {}
        row = {"run": run, "method": res.get("method")}
        row.update({str(k): v for k, v in stu.items() if isinstance(v, (int, float))})
        if len(row) > 2:
            rows.append(row)
    return pd.DataFrame(rows)

"""analysis/bn_groups.json and the recover trace -> the BN page's tables and its findings text.

Recover optimises each group of images (one IPC index x a chunk of classes) against the BN
statistics of the members voting for it only. So the file splits every member's BN loss by the
groups it voted for and the groups it did not, before (init images) and after recover.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SPLITS = {"voted": "groups it voted for", "not_voted": "groups it did not vote for"}
SUMMARY_COLS = [
    "member",
    "layers",
    "voted_groups",
    "voted_init",
    "voted_synthetic",
    "voted_change_pct",
    "not_voted_groups",
    "not_voted_init",
    "not_voted_synthetic",
    "not_voted_change_pct",
]


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _members(doc) -> dict:
    m = doc.get("members") if isinstance(doc, dict) else None
    return {k: v for k, v in m.items() if isinstance(v, dict)} if isinstance(m, dict) else {}


def _mean_loss(member: dict, src: str, want: bool) -> tuple[int, float | None]:
    """(groups, mean BN loss) over the groups with voted == want, for one source."""
    voted = member.get("voted") if isinstance(member.get("voted"), list) else []
    loss = (member.get("loss") or {}).get(src) if isinstance(member.get("loss"), dict) else None
    vals = [_num(v) for v, w in zip(loss if isinstance(loss, list) else [], voted) if w is want]
    vals = [v for v in vals if v is not None]
    return len(vals), (sum(vals) / len(vals) if vals else None)


def _change(a: float | None, b: float | None) -> float | None:
    return 100 * (b - a) / a if a and b is not None else None


def summary(doc) -> pd.DataFrame:
    """One row per member: its BN loss, mean over the groups it voted for and over the others,
    before (init) and after (synthetic) recover, and the change in %."""
    rows = []
    for name, m in _members(doc).items():
        layers = m.get("layers")
        row = {"member": name, "layers": len(layers) if isinstance(layers, list) else None}
        for split, want in (("voted", True), ("not_voted", False)):
            n, init = _mean_loss(m, "init", want)
            _, syn = _mean_loss(m, "synthetic", want)
            row.update(
                {
                    f"{split}_groups": n,
                    f"{split}_init": init,
                    f"{split}_synthetic": syn,
                    f"{split}_change_pct": _change(init, syn),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLS)


def layers_df(doc, member: str) -> pd.DataFrame:
    """Per BN layer of one member: the layer's gap ||mean gap|| + ||var gap|| (recover's term
    without the first-layer multiplier), mean over the groups of each split, init vs synthetic."""
    cols = ["layer", "label", "split", "source", "gap", "mean_gap", "var_gap", "groups"]
    m = _members(doc).get(member) or {}
    layers = m.get("layers") if isinstance(m.get("layers"), list) else []
    layers = [x for x in layers if isinstance(x, dict)]
    gaps = m.get("layer_gaps") if isinstance(m.get("layer_gaps"), dict) else {}
    rows = []
    for split in SPLITS:
        part = gaps.get(split) if isinstance(gaps.get(split), dict) else {}
        for src in ("init", "synthetic"):
            g = part.get(src) if isinstance(part.get(src), dict) else {}
            means, vars_ = g.get("mean_gap"), g.get("var_gap")
            means, vars_ = [x if isinstance(x, list) else [] for x in (means, vars_)]
            for i, (layer, a, b) in enumerate(zip(layers, means, vars_)):
                if _num(a) is None or _num(b) is None:
                    continue
                rows.append(
                    {
                        "layer": layer.get("index", i),
                        "label": f"{layer.get('index', i)}: {layer.get('name', '')}",
                        "split": split,
                        "source": src,
                        "gap": a + b,
                        "mean_gap": a,
                        "var_gap": b,
                        "groups": part.get("groups"),
                    }
                )
    return pd.DataFrame(rows, columns=cols)


def _fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}"


def _moves(df: pd.DataFrame, split: str) -> tuple[list[str], list[str]]:
    """'member a → b (±p %)' for the members whose loss fell, and for those where it did not."""
    fell, rose = [], []
    for _, r in df.iterrows():
        a, b, p = r[f"{split}_init"], r[f"{split}_synthetic"], r[f"{split}_change_pct"]
        if r[f"{split}_groups"] and _num(a) is not None and _num(b) is not None:
            pct = f" ({p:+.0f} %)" if _num(p) is not None else ""
            (fell if b < a else rose).append(f"{r['member']} {_fmt(a)} → {_fmt(b)}{pct}")
    return fell, rose


def _split_sentence(df: pd.DataFrame, split: str, where: str) -> str | None:
    fell, rose = _moves(df, split)
    k = len(fell) + len(rose)
    if not k:
        return None
    if not rose:
        who = "the one member" if k == 1 else f"each of the {k} members"
        return f"{where}, recover lowered its BN loss for {who}: {'; '.join(fell)}."
    if not fell:
        return f"{where}, recover did not lower its BN loss for any of {k} members: " + (
            "; ".join(rose) + "."
        )
    return (
        f"{where}, recover lowered its BN loss for {len(fell)} of {k} members "
        f"({'; '.join(fell)}) and not for {'; '.join(rose)}."
    )


def _open_layers(doc, limit: int = 4) -> str:
    """Which layers recover left with a gap at least as large (voted groups), from the data."""
    stuck, total, ratios = [], 0, []
    for name in _members(doc):
        d = layers_df(doc, name)
        d = d[d["split"] == "voted"].pivot_table(index="label", columns="source", values="gap")
        if not {"init", "synthetic"} <= set(d.columns):
            continue
        total += len(d)
        ratios += list((d["synthetic"] / d["init"].where(d["init"] > 0)).dropna())
        for label, r in d[d["synthetic"] >= d["init"]].iterrows():
            a, b = _fmt(r["init"], 4), _fmt(r["synthetic"], 4)
            stuck.append(f"{name} layer {label} ({a} → {b})")
    if not total:
        return ""
    left = (
        f" On average a layer keeps {100 * float(np.mean(ratios)):.0f} % of its gap."
        if (ratios)
        else ""
    )
    if not stuck:
        return f"In the voted groups recover narrowed the gap of all {total} BN layers.{left}"
    more = f" and {len(stuck) - limit} more" if len(stuck) > limit else ""
    return (
        f"In the voted groups recover did not narrow {len(stuck)} of {total} layer gaps: "
        f"{'; '.join(stuck[:limit])}{more}.{left}"
    )


def findings(doc) -> list[str]:
    """What the data shows, as sentences computed from it (never a fixed claim)."""
    df = summary(doc)
    if df.empty:
        return []
    out = [_split_sentence(df, "voted", "Where a member voted")]
    not_voted = _split_sentence(df, "not_voted", "Where a member did not vote")
    out.append(
        not_voted
        or "Every analysed member voted for every group (N equals the committee size), so no "
        "group shows what recover does to a member that did not vote."
    )
    out.append(_open_layers(doc))
    return [s for s in out if s]


def trace_bn_df(trace: pd.DataFrame, iterations: int | None) -> pd.DataFrame:
    """recover/trace.jsonl's per-member BN loss -> long rows: member, step (within its wave),
    wave, bn. A trace row holds each voting member's mean over the groups it votes for in
    that wave; rows exist every `trace_every` steps only, so steps may be missing."""
    cols = ["member", "step", "wave", "bn"]
    if trace is None or trace.empty or "step" not in trace:
        return pd.DataFrame(columns=cols)
    it = iterations if isinstance(iterations, int) and iterations > 0 else None
    rows = []
    for c in (c for c in trace.columns if isinstance(c, str) and c.endswith(".bn")):
        d = trace[["step", c]].apply(pd.to_numeric, errors="coerce").dropna()
        for s, v in zip(d["step"].astype(int), d[c]):
            wave, step = ((s - 1) // it, (s - 1) % it + 1) if it else (0, s)
            rows.append({"member": c[: -len(".bn")], "step": step, "wave": wave, "bn": v})
    return pd.DataFrame(rows, columns=cols)


def trace_spacing(df: pd.DataFrame) -> int | None:
    """The usual number of steps between two trace rows (1 = every step)."""
    if df.empty:
        return None
    diffs = df.sort_values("step").groupby(["member", "wave"])["step"].diff().dropna()
    return int(diffs.median()) if len(diffs) else None


def pair_rows(docs: dict) -> pd.DataFrame:
    """Run label -> bn_groups.json: each run's BN loss over all (member, voted group) pairs."""
    rows = []
    for label, doc in docs.items():
        df = summary(doc)
        n = df["voted_groups"].sum() if len(df) else 0
        if not n:
            continue
        w = df["voted_groups"]
        init = float((df["voted_init"] * w).sum() / n)
        syn = float((df["voted_synthetic"] * w).sum() / n)
        rows.append(
            {
                "run": label,
                "members": ", ".join(df.loc[w > 0, "member"]),
                "member-group pairs": int(n),
                "BN loss before": init,
                "BN loss after": syn,
                "change %": _change(init, syn),
            }
        )
    return pd.DataFrame(rows)

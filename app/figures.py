"""Plotly figures built from the DataFrames of app/shaping.py (no streamlit import)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SOURCE_COLORS = {
    "init": "#9e9e9e",
    "synthetic": "#e4572e",
    "real": "#2e86ab",
    "random_real": "#2e86ab",
}
MODE_COLORS = {"bssl": "#e4572e", "eval": "#2e86ab"}
# data names in the run files -> legend entries a reader understands
LEGEND_NAMES = {
    "init": "initial (real patches)",
    "synthetic": "synthetic (after recover)",
    "real": "real images",
    "random_real": "random real images",
    "distilled": "distilled set",
    "bssl": "BSSL labels",
    "eval": "eval-mode labels",
    "student_top1": "distilled set",
    "random_real_top1": "random real images",
}


def legend_name(raw: str) -> str:
    """'distilled_bssl-resnet18' -> 'distilled set, BSSL labels, resnet18'; known names mapped."""
    if raw in LEGEND_NAMES:
        return LEGEND_NAMES[raw]
    key, _, arch = str(raw).partition("-")
    data, _, labels = key.rpartition("_")
    if data in LEGEND_NAMES and labels in LEGEND_NAMES:
        return ", ".join([LEGEND_NAMES[data], LEGEND_NAMES[labels]] + ([arch] if arch else []))
    return str(raw)


def _legend(fig: go.Figure, title: str) -> go.Figure:
    """Human legend entries and title (plotly express titles the legend with a column name)."""
    fig.for_each_trace(lambda t: t.update(name=legend_name(t.name)) if t.name else None)
    fig.update_layout(legend_title_text=title)
    return fig


def _tidy(fig: go.Figure, height: int = 320) -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def ema_span(n: int) -> int:
    """Steps an EMA of the loss averages over: about 1/20 of the curve, at least 5."""
    return max(5, n // 20)


def with_ema(df: pd.DataFrame, cols: tuple[str, ...], span: int) -> pd.DataFrame:
    """`df` plus `<col>_ema`: an exponential moving average per wave (each wave starts over
    from its initial images, so one wave's average must not carry into the next)."""
    out = df.copy()
    keys = out["wave"] if "wave" in out else pd.Series(0, index=out.index)
    for c in (c for c in cols if c in out):
        out[f"{c}_ema"] = out.groupby(keys)[c].transform(lambda v: v.ewm(span=span).mean())
    return out


def loss_curves(df: pd.DataFrame, log_y: bool = False, span: int = 0) -> go.Figure:
    """Total, CE and BN loss per recover step, side by side (their scales differ a lot): the
    raw values faint, their EMA over `span` steps (`<col>_ema`, see with_ema) on top."""
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("total loss", "CE (committee vote)", "BN statistics")
    )
    curves = (("loss", "#333333"), ("ce", "#e4572e"), ("bn", "#2e86ab"))
    for i, (col, color) in enumerate(curves, start=1):
        if col in df:
            raw = {"color": color, "width": 1}
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=df[col],
                    name="each step",
                    mode="lines",
                    line=raw,
                    opacity=0.3 if f"{col}_ema" in df else 1.0,
                    legendgroup="raw",
                    showlegend=i == 1,
                ),
                row=1,
                col=i,
            )
        if f"{col}_ema" in df:
            fig.add_trace(
                go.Scatter(
                    x=df["step"],
                    y=df[f"{col}_ema"],
                    name=f"EMA over {span} steps",
                    mode="lines",
                    line={"color": color, "width": 2.5},
                    legendgroup="ema",
                    showlegend=i == 1,
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(title_text="step", row=1, col=i)
        if log_y:
            fig.update_yaxes(type="log", row=1, col=i)
    return _tidy(fig, 330).update_layout(legend=LEGEND_ABOVE, margin={"t": 90})


def member_losses(df: pd.DataFrame, what: str = "ce") -> go.Figure:
    cols = [c for c in df.columns if c.endswith(f".{what}")]
    fig = go.Figure()
    for c in cols:
        fig.add_trace(go.Scatter(x=df["step"], y=df[c], name=c.rsplit(".", 1)[0], mode="lines"))
    fig.update_layout(
        title=f"{what.upper()} loss per committee member (while it votes)", xaxis_title="step"
    )
    return _tidy(fig)


def committee_heatmap(mat: pd.DataFrame) -> go.Figure:
    z = mat.to_numpy(dtype=float)
    text = np.where(np.isnan(z), "", np.vectorize(lambda v: f"{v:.2f}")(np.nan_to_num(z)))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(mat.columns),
            y=list(mat.index),
            text=text,
            texttemplate="%{text}",
            colorscale="Oranges",
            zmin=0,
            zmax=1,
            hoverongaps=False,
            colorbar={"title": "weight"},
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title="Who votes for each IPC index, and with which weight softmax(α/T)")
    return _tidy(fig, max(260, 28 * len(mat) + 120))


def prior_bars(priors: dict, weights: dict, temperature: float) -> go.Figure:
    ms = list(priors)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "prior α (student top-1 %, SRe²L++ alone)",
            f"softmax(α/T), T={temperature:g}, all members",
        ),
    )
    fig.add_trace(go.Bar(x=ms, y=[priors[m] for m in ms], marker_color="#2e86ab"), row=1, col=1)
    fig.add_trace(
        go.Bar(x=ms, y=[weights.get(m, 0) for m in ms], marker_color="#e4572e"), row=1, col=2
    )
    fig.update_layout(showlegend=False)
    return _tidy(fig, 300)


def bn_gaps(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("‖batch mean − running mean‖", "‖batch var − running var‖")
    )
    for src in df["source"].unique() if len(df) else []:
        d = df[df["source"] == src]
        color = SOURCE_COLORS.get(src)
        fig.add_trace(
            go.Bar(x=d["label"], y=d["mean_gap"], name=src, marker_color=color, legendgroup=src),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=d["label"],
                y=d["var_gap"],
                name=src,
                marker_color=color,
                legendgroup=src,
                showlegend=False,
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(tickangle=-60, tickfont={"size": 10}, title_text="BN layer (module order)")
    fig.update_yaxes(title_text="L2 gap, mean over batches", row=1, col=1)
    _legend(_tidy(fig, 460), "images")
    fig.update_layout(barmode="group", legend=LEGEND_ABOVE, margin={"t": 110})
    return fig


# a legend above the subplot titles (anchored by its bottom edge, clear of them)
LEGEND_ABOVE = {"orientation": "h", "yanchor": "bottom", "y": 1.14, "x": 0}
SPLIT_TITLES = {"voted": "groups it voted for", "not_voted": "groups it did not vote for"}


def bn_group_layers(df: pd.DataFrame, member: str) -> go.Figure:
    """Per BN layer of one member: its gap before (init) and after (synthetic) recover, in the
    groups it voted for (left) and the others (right)."""
    titles, splits = [], []
    for split, text in SPLIT_TITLES.items():
        n = df.loc[df["split"] == split, "groups"]
        k = int(n.iloc[0]) if len(n) else 0
        if k:  # a member that voted for every group (SRe²L++) gets one panel, not an empty one
            splits.append(split)
            titles.append(f"{member}: {text} ({k} group{'s' * (k != 1)})")
    splits = splits or ["voted"]
    fig = make_subplots(rows=1, cols=len(splits), subplot_titles=titles or None, shared_yaxes=True)
    for col, split in enumerate(splits, start=1):
        for src in ("init", "synthetic"):
            d = df[(df["split"] == split) & (df["source"] == src)]
            fig.add_trace(
                go.Bar(
                    x=d["label"],
                    y=d["gap"],
                    name="before recover (init)" if src == "init" else "after recover",
                    marker_color=SOURCE_COLORS[src],
                    legendgroup=src,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="BN layer (module order)", row=1, col=col)
    fig.update_xaxes(tickangle=-60, tickfont={"size": 10})
    fig.update_yaxes(title_text="‖μ_B − μ‖ + ‖σ²_B − σ²‖, mean over groups", row=1, col=1)
    _tidy(fig, 440)
    return fig.update_layout(barmode="group", legend=LEGEND_ABOVE, margin={"t": 110})


def bn_trace(df: pd.DataFrame) -> go.Figure:
    """Each member's BN loss over recover steps (one line per member and wave; a trace row
    exists every trace_every steps, markers show where)."""
    fig = px.line(df, x="step", y="bn", color="member", line_group="wave", markers=True)
    fig.update_traces(marker={"size": 4})
    fig.update_layout(
        title="BN loss during recover (each member: mean over the groups it votes for)",
        xaxis_title="recover step (of its wave)",
        yaxis_title="BN loss, augmented batch",
    )
    return _tidy(fig, 340)


def bn_scatter(df: pd.DataFrame, stat: str, sources: list[str]) -> go.Figure:
    """Per channel: running stat (x) vs the batch stat of each source (y); y = x is a match."""
    d = df[df["source"].isin(sources)]
    x, y = f"running_{stat}", f"batch_{stat}"
    fig = px.scatter(
        d,
        x=x,
        y=y,
        color="source",
        hover_data=["channel"],
        color_discrete_map=SOURCE_COLORS,
        labels={x: f"running {stat} (stored in the model)", y: f"batch {stat}"},
    )
    if len(d):
        lo = float(min(d[x].min(), d[y].min()))
        hi = float(max(d[x].max(), d[y].max()))
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[lo, hi],
                mode="lines",
                name="y = x",
                line={"color": "black", "dash": "dot"},
            )
        )
    fig.update_layout(title=f"per-channel {stat}: batch vs running")
    return _legend(_tidy(fig, 380), "images")


def topk_bars(df: pd.DataFrame) -> go.Figure:
    fig = px.bar(
        df, x="name", y="prob", color="mode", barmode="group", color_discrete_map=MODE_COLORS
    )
    fig.update_layout(title="soft label of this image", yaxis_title="probability", xaxis_title="")
    return _legend(_tidy(fig, 320), "soft labels")


def entropy_hist(ent: dict[str, np.ndarray]) -> go.Figure:
    fig = go.Figure()
    for mode, v in ent.items():
        fig.add_trace(
            go.Histogram(x=v, name=mode, opacity=0.6, nbinsx=30, marker_color=MODE_COLORS.get(mode))
        )
    fig.update_layout(
        barmode="overlay",
        title="entropy of the soft labels (nats)",
        xaxis_title="entropy",
        yaxis_title="images",
    )
    return _legend(_tidy(fig), "soft labels")


def kl_hist(kl: np.ndarray) -> go.Figure:
    fig = go.Figure(go.Histogram(x=kl, nbinsx=30, marker_color="#7a5195"))
    fig.update_layout(
        title="KL(BSSL ‖ eval) per image (nats)", xaxis_title="KL", yaxis_title="images"
    )
    return _tidy(fig)


def student_curves(df: pd.DataFrame) -> go.Figure:
    fig = px.line(df, x="epoch", y="top1", color="student", markers=True)
    fig.update_layout(title="student test top-1 during training", yaxis_title="top-1 %")
    return _legend(_tidy(fig), "student trained on")


def diversity_bars(
    df: pd.DataFrame, title: str, y_range: list[float] | None = None, color: str = "source"
) -> go.Figure:
    """Per class, mean pairwise cosine per source (or per run, color="run"); `y_range` zooms
    the axis to the data, since the values of a class often differ in the second decimal."""
    colors = SOURCE_COLORS if color == "source" else None
    seq = ["#e4572e", "#2e86ab", "#9e9e9e", "#7a5195"]
    fig = px.bar(
        df,
        x="name",
        y="cosine",
        color=color,
        barmode="group",
        color_discrete_map=colors,
        color_discrete_sequence=seq,
    )
    fig.update_layout(
        title=title, yaxis_title="mean pairwise cosine (lower = more diverse)", xaxis_title="class"
    )
    if y_range:
        fig.update_yaxes(range=y_range)
    return _legend(_tidy(fig, 360), "images" if color == "source" else color)


def similarity_heatmap(mat: np.ndarray, title: str, zmin: float | None = None) -> go.Figure:
    """Pairwise cosine similarity of one class's images; share `zmin` to compare sources."""
    m = np.asarray(mat, dtype=float)
    zmin = float(np.nanmin(m)) if zmin is None else zmin
    fig = go.Figure(
        go.Heatmap(
            z=m,
            colorscale="Viridis",
            zmin=min(zmin, 0.999),
            zmax=1,
            x=[f"#{i}" for i in range(m.shape[1])],
            y=[f"#{i}" for i in range(m.shape[0])],
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title)
    return _tidy(fig, 320)

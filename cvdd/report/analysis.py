"""The report's analysis sections, from the files relabel writes (docs/rundir.md, analysis):
the BN discrepancy before and after recover (paper Fig. 5), the soft labels with and without
BSSL (§3.7), and the diversity of each class's images (Fig. 4)."""

from __future__ import annotations

import math

import numpy as np

from .. import layout
from .html import count, esc, missing_note, num, section, table, what
from .images import thumb_uri
from .read import RunData
from .svg import Series, bar_chart, line_chart

__all__ = ["bn", "soft_labels", "diversity"]

SOURCES = {
    "init": "initial images (before recover)",
    "synthetic": "synthetic images (after recover)",
    "real": "real training images",
    "random_real": "random real images",
}


def bn(data: RunData) -> str:
    doc = data.get("bn_stats")
    title = "BatchNorm statistics: before and after recover (paper Fig. 5)"
    if not doc or not isinstance(doc.get("layers"), list) or not doc["layers"]:
        return section("bn", title, missing_note("the BN statistics", layout.BN_STATS, "relabel"))
    layers = [la for la in doc["layers"] if isinstance(la, dict)]
    srcs = [s for s in SOURCES if any(s in (la.get("sources") or {}) for la in layers)]
    labels = [str(la.get("index", i)) for i, la in enumerate(layers)]
    body = ""
    for key, word in (("mean_gap", "mean"), ("var_gap", "variance")):
        series = [
            Series(SOURCES[s], [((la.get("sources") or {}).get(s) or {}).get(key) for la in layers])
            for s in srcs
        ]
        body += (
            "<figure>"
            + line_chart(
                f"bn-{word}",
                labels,
                series,
                title=f"per BN layer of {doc.get('model')}: gap to the running {word}",
                y_label=f"L2 gap ({word})",
            )
            + "</figure>"
        )
    body += what(
        f"One model, {doc.get('model')} (the relabel teacher), sees batches of up to "
        f"{doc.get('batch_size')} images of each kind (batches: {_batches(doc)}). For each BN "
        "layer (x axis: its index, names below), the L2 distance between the batch's "
        "per-channel mean (top) or variance (bottom) and the running statistics stored while "
        "training on real data, averaged over batches. Lower = the images look more like the "
        "real data to this layer."
    )
    body += _bn_totals(layers)
    names = " · ".join(f"{la.get('index')} {la.get('name')}" for la in layers)
    body += f'<p class="what">Layers: {esc(names)}</p>'
    return section("bn", title, body)


def _batches(doc: dict) -> str:
    nb = doc.get("num_batches")
    return ", ".join(f"{k} {v}" for k, v in nb.items()) if isinstance(nb, dict) else str(nb)


def _bn_totals(layers: list[dict]) -> str:
    def total(src: str, key: str) -> float | None:
        vals = [((la.get("sources") or {}).get(src) or {}).get(key) for la in layers]
        vals = [v for v in vals if isinstance(v, (int, float))]
        return sum(vals) if vals else None

    rows = []
    for key, word in (("mean_gap", "mean gap"), ("var_gap", "variance gap")):
        a, b = total("init", key), total("synthetic", key)
        change = 100 * (b - a) / a if a and b is not None else None
        rows.append(
            (
                word,
                num(a, "{:.3g}"),
                num(b, "{:.3g}"),
                num(change, "{:+.0f}", " %"),
                num(total("real", key), "{:.3g}"),
            )
        )
    head = ["summed over all layers", "before recover", "after recover", "change", "real images"]
    return table(head, rows, numeric={1, 2, 3, 4})


def _top(p: np.ndarray, names, k: int = 3) -> str:
    idx = np.argsort(-p)[:k]
    return ", ".join(f"{names(int(c))} {100 * float(p[c]):.0f} %" for c in idx)


def _examples(data: RunData, z: dict, n: int = 6) -> str:
    """The n images whose two labels differ most (KL), each with its top classes both ways."""
    pb, pe = np.asarray(z["probs_bssl"], np.float64), np.asarray(z["probs_eval"], np.float64)
    kl = (data.get("soft_stats") or {}).get("kl")  # per image, written by relabel
    if not isinstance(kl, list) or len(kl) != len(pb):
        lp, lq = np.log(np.clip(pb, 1e-12, None)), np.log(np.clip(pe, 1e-12, None))
        kl = (np.clip(pb, 1e-12, None) * (lp - lq)).sum(1)
    kl = np.nan_to_num(np.asarray(kl, np.float64), nan=-1.0)
    imgs = data.npz(layout.RECOVER_IMAGES) or {}
    targets = np.asarray(z.get("targets", np.zeros(len(pb), int)))
    rows = []
    for i in np.argsort(-kl)[:n]:
        thumb = ""
        if "images" in imgs and i < len(imgs["images"]):
            thumb = f'<img class="thumb" alt="image {i}" src="{thumb_uri(imgs["images"][i])}">'
        rows.append(
            f"<tr><td>{thumb}</td><td>{esc(data.class_name(int(targets[i])))}</td>"
            f"<td>{esc(_top(pb[i], data.class_name))}</td>"
            f"<td>{esc(_top(pe[i], data.class_name))}</td>"
            f'<td class="n">{kl[i]:.3f}</td></tr>'
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "image",
            "made for",
            "BSSL label: top classes",
            "eval-mode label: top classes",
            "KL (nats)",
        )
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _mode(mode: object) -> str:
    return {"bssl": "BSSL", "eval": "eval-mode"}.get(str(mode), str(mode))


def _relabel(data: RunData) -> dict:
    return data.cfg.get("relabel") or {}


def _mean(v: object) -> float | None:
    vals = [x for x in v if isinstance(x, (int, float))] if isinstance(v, list) else []
    return sum(vals) / len(vals) if vals else (v if isinstance(v, (int, float)) else None)


def _soft_summary(data: RunData, an: dict, n_images: int) -> str:
    stu = ((data.get("students") or {}).get("students")) or {}
    b, e = stu.get("distilled_bssl") or {}, stu.get("distilled_eval") or {}
    n_test = count((data.get("result") or {}).get("test_images"))

    def pct(v: object) -> str:
        return num(100 * v if isinstance(v, (int, float)) else None, "{:.0f}", " %")

    rows = [
        (
            "argmax agreement",
            pct(an.get("agreement")),
            "images whose most likely class is the same both ways",
        ),
        (
            "mean KL(BSSL ‖ eval)",
            num(an.get("kl_mean"), "{:.3g}", " nats"),
            "how far apart an image's two labels are",
        ),
        (
            "mean entropy, BSSL",
            num(_mean(an.get("entropy_bssl")), "{:.3g}", " nats"),
            "higher = softer labels (probability on more classes)",
        ),
        (
            "mean entropy, eval mode",
            num(_mean(an.get("entropy_eval")), "{:.3g}", " nats"),
            "the same for eval-mode labels",
        ),
        (
            "label = class, BSSL / eval",
            f"{pct(an.get('label_acc_bssl'))} / {pct(an.get('label_acc_eval'))}",
            "images whose label's top class is the class they were made for",
        ),
    ]
    if b.get("top1") is not None or e.get("top1") is not None:
        rows.append(
            (
                "student top-1, BSSL / eval labels",
                f"{num(b.get('top1'), unit=' %')} / {num(e.get('top1'), unit=' %')}",
                f"a student trained on these images with each labelling, on {n_test} test images"
                + (
                    ""
                    if e.get("top1") is not None
                    else " (eval labels not validated: "
                    "validate.compare_eval_labels=true trains that student too)"
                ),
            )
        )
    head = ["over all " + str(n_images) + " images", "value", "what it measures"]
    return table(head, rows, numeric={1})


def soft_labels(data: RunData) -> str:
    title = "Soft labels: BSSL and eval mode"
    z = data.npz(layout.SOFT_LABELS)
    an = data.get("soft_stats") or {}
    if z is None or "probs_bssl" not in z or "probs_eval" not in z:
        return section(
            "soft-labels", title, missing_note("the soft labels", layout.SOFT_LABELS, "relabel")
        )
    body = (
        f"<p>The teacher ({esc(an.get('teacher', '?'))}) labels every synthetic image with a "
        "probability per class. In <b>eval mode</b> its BatchNorm layers use the running "
        "statistics of the real data; with <b>BSSL</b> they use the statistics of the synthetic "
        f"batch itself (batches of {esc(an.get('batch_size', '?'))}). This run trains its "
        f"students on the {esc(_mode(an.get('mode_used') or _relabel(data).get('mode')))} "
        "labels.</p>"
    )
    body += _soft_summary(data, an, len(z["probs_bssl"]))
    per = [p for p in an.get("per_class") or [] if isinstance(p, dict)]
    if per:
        names = [str(p.get("name", p.get("class"))) for p in per]
        series = [
            Series("BSSL", [p.get("entropy_bssl") for p in per]),
            Series("eval mode", [p.get("entropy_eval") for p in per]),
        ]
        body += (
            "<figure>"
            + bar_chart(
                "soft-entropy",
                names,
                series,
                title="mean label entropy per class",
                y_label="entropy (nats)",
                value_fmt="{:.2f}",
            )
            + "</figure>"
        )
        body += what(
            "Mean entropy of the soft labels of each class's images, both ways: higher "
            "bars = softer labels, which tell the student more about similar classes."
        )
    body += "<h3>The images whose two labels differ most</h3>" + _examples(data, z)
    return section("soft-labels", title, body)


def diversity(data: RunData) -> str:
    title = "Diversity of each class's images (paper Fig. 4)"
    div = data.get("diversity")
    srcs = (div or {}).get("sources")
    if not isinstance(srcs, dict) or not srcs:
        return section(
            "diversity", title, missing_note("the diversity analysis", layout.DIVERSITY, "relabel")
        )
    keys = [k for k in ("synthetic", "init", "random_real") if isinstance(srcs.get(k), dict)]
    n = max(len(srcs[k].get("per_class") or []) for k in keys)
    labels = [data.class_name(c) for c in range(n)]
    series = [Series(SOURCES[k], list(srcs[k].get("per_class") or [])) for k in keys]
    body = (
        "<figure>"
        + line_chart(
            "diversity",
            labels,
            series,
            connect=False,
            y_min=None,
            title="mean pairwise cosine similarity per class (lower = more diverse)",
            y_label="cosine similarity",
        )
        + "</figure>"
    )
    body += what(
        f"For each class, every image is embedded by {div.get('model')} "
        f"({div.get('feature')} features) and the cosine similarity of every pair of its "
        "images is averaged; the y axis is zoomed to the data. Lower = the class's images "
        "differ more from each other."
    )
    rows = [(SOURCES[k], num(srcs[k].get("mean"), "{:.3f}")) for k in keys]
    syn, ini = srcs.get("synthetic", {}).get("per_class"), srcs.get("init", {}).get("per_class")
    if isinstance(syn, list) and isinstance(ini, list):
        lower = sum(1 for a, b in zip(syn, ini) if _lt(a, b))
        body += (
            "<p>The synthetic images are more diverse than the initial ones in "
            f"{lower} of {min(len(syn), len(ini))} classes.</p>"
        )
    body += table(["images", "mean over classes"], rows, numeric={1})
    return section("diversity", title, body)


def _lt(a: object, b: object) -> bool:
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b))
    return ok and a < b

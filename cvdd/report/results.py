"""The report's results: each student's top-1 on the distilled images beside random real images
and the SRe2L++ twin (cvdd.twins), and how far one seed can be trusted: the run's repeat group
with 95 % t intervals (cvdd.repeats, cvdd.stats), else the typical spread (cvdd.spread)."""

from __future__ import annotations

from .. import layout, repeats, spread, stats, twins
from ..utils import read_json
from .html import count, esc, missing_note, num, section, table, what
from .read import RunData
from .svg import Series, bar_chart

__all__ = ["students"]

LABEL_WORDS = {"bssl": "BSSL labels", "eval": "eval-mode labels", "hard": "hard labels"}


def _scores(res: dict | None, stu: dict | None) -> dict[tuple[str, str], dict[str, float]]:
    """{(data, labels): {student: top-1}} from validate/students.json, else result.json."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for v in ((stu or {}).get("students") or {}).values():
        if isinstance(v, dict) and isinstance(v.get("top1"), (int, float)):
            key = (str(v.get("data")), str(v.get("labels")))
            out.setdefault(key, {})[str(v.get("student"))] = float(v["top1"])
    if out or not isinstance(res, dict):
        return out
    mode = res.get("relabel_mode") or "bssl"
    for name, top1 in (res.get("students") or {}).items():
        out.setdefault(("distilled", mode), {})[name] = top1
    return out


def _twin(data: RunData, docs: dict) -> tuple[str | None, dict | None, dict | None]:
    rid = twins.find_twin(data.run_id, docs)
    if rid is None:
        return None, None, None
    path = data.path.parent / rid
    return rid, read_json(path / layout.RESULT), read_json(path / layout.STUDENTS)


def _bars(data: RunData, docs: dict) -> tuple[str, str]:
    """The grouped bars (a group per student architecture) and a sentence on the twin."""
    res = data.get("result")
    scores = _scores(res, data.get("students"))
    own = "CV-DD" if repeats.method_of(data.doc) == "cvdd" else "SRe²L++"
    val = data.cfg.get("validate") or {}
    archs = list(val.get("students") or [val.get("student")])
    series = []
    order = sorted(scores, key=lambda k: (k[1] == "hard", k[0] != "distilled", k[1]))
    for data_kind, labels in order:
        who = f"{own} images" if data_kind == "distilled" else "random real images"
        vals = scores[(data_kind, labels)]
        series.append(
            Series(f"{who}, {LABEL_WORDS.get(labels, labels)}", [vals.get(a) for a in archs])
        )
    rid, t_res, t_stu = _twin(data, docs)
    note = "This run has no SRe²L++ twin in its runs folder (the app's twin button makes one)."
    if rid is not None:
        mode = (data.cfg.get("relabel") or {}).get("mode") or "bssl"
        t = _scores(t_res, t_stu).get(("distilled", mode), {})
        other = "SRe²L++" if own == "CV-DD" else "CV-DD"
        series.insert(
            1, Series(f"{other} twin, {LABEL_WORDS.get(mode, mode)}", [t.get(a) for a in archs])
        )
        note = f"Twin: {rid} (same seed, data and budgets; {'finished' if t else 'no result yet'})."
    if not series:
        return "", note
    svg = bar_chart(
        "students",
        [f"{a} student" for a in archs],
        series,
        title="student top-1 on the test split",
        y_label="top-1 %",
        y_max=100.0 if max(v for s in series for v in s.values if v is not None) > 80 else None,
    )
    return f"<figure>{svg}</figure>", note


def students(data: RunData) -> str:
    title = "What the students learned"
    res = data.get("result") or {}
    docs = repeats.config_docs(data.path.parent)
    docs.setdefault(data.run_id, data.doc)
    fig, twin_note = _bars(data, docs)
    if not fig:
        body = missing_note("the students' top-1", layout.STUDENTS, "validate")
        return section("students", title, body + _spread(data, docs))
    n_test = res.get("test_images") or (data.meta.get("dataset") or {}).get("test_size") or "?"
    body = fig + what(
        f"top-1: the share of the {count(n_test)} test images a student, trained from scratch on "
        f"{data.cfg.get('ipc')} images per class only, classifies correctly. Random real "
        "images: as many real training images per class, labelled by the same teacher, the "
        "baseline any distilled set must beat; hard labels: one-hot labels, no teacher."
    )
    teacher = res.get("teacher") if isinstance(res.get("teacher"), dict) else {}
    if teacher.get("top1") is not None:
        body += (
            f"<p>The relabel teacher ({esc(teacher.get('teacher'))}) itself: "
            f"{num(teacher.get('top1'), unit=' %')} top-1 on "
            f"{count(teacher.get('test_images', n_test))} test images.</p>"
        )
    body += f"<p>{esc(twin_note)}</p>" + _spread(data, docs)
    return section("students", title, body)


def _spread(data: RunData, docs: dict) -> str:
    """The repeat group's intervals when it has two or more finished seeds, else the typical
    spread of one seed (the shipped reference) or why there is none."""
    root = data.path.parent
    exp = repeats.experiment_runs(data.run_id, docs)
    results = {rid: read_json(root / rid / layout.RESULT) for rids in exp.values() for rid in rids}
    values = spread.experiment_values(exp, docs, results)
    method = repeats.method_of(data.doc)
    arms, diffs = repeats.summarise(values)
    student = (data.cfg.get("validate") or {}).get("student")
    if method not in arms or arms[method].n < 2:
        ref = spread.reference_text(
            spread.read_reference(),
            preset=data.cfg.get("name"),
            budget=(data.cfg.get("recover") or {}).get("iterations"),
            student=student,
            dataset=(data.cfg.get("data") or {}).get("dataset"),
        )
        return (
            "<h3>One seed is not a result</h3><p>These numbers come from one seed; seeds of one "
            f"setting differ by a few points. {esc(ref)}</p>"
        )
    series = [
        Series(spread.NAMES[a], [iv.mean], [iv.lo], [iv.hi], [sorted(values[a].values())])
        for a, iv in arms.items()
    ]
    svg = bar_chart(
        "repeats",
        [f"{student} student, {arms[method].n} seeds"],
        series,
        title="mean top-1 over seeds, 95 % t interval, each seed a dot",
        y_label="top-1 %",
        height=240,
    )
    rows = [
        (
            spread.NAMES[a],
            iv.n,
            num(iv.mean, "{:.2f}", " %"),
            "—" if iv.lo is None else f"[{iv.lo:.1f}, {iv.hi:.1f}]",
            num(iv.sd, "{:.2f}"),
        )
        for a, iv in arms.items()
    ]
    body = f"<h3>Over the seeds of this setting</h3><figure>{svg}</figure>"
    body += table(["method", "seeds", "mean top-1", "95 % interval", "sd"], rows, numeric={1, 2, 4})
    body += what(
        "Each method's mean over the seeds of this setting (runs that differ only in seed, in "
        "this runs folder), with a 95 % Student-t interval; differences are paired by seed."
    )
    lines = [stats.verdict(iv, spread.NAMES[a], spread.NAMES[b]) for (a, b), iv in diffs.items()]
    flags = repeats.env_flags({r: docs[r] for rs in exp.values() for r in rs if docs.get(r)})
    if flags:
        lines.append("These runs differ in environment (alike, not bit-equal): " + "; ".join(flags))
    return body + "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in lines) + "</ul>"

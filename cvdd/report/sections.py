"""The report's first sections: the title and what is missing, the settings, the time of each
stage, the committee with its priors and weights, and the image grids."""

from __future__ import annotations

import time

from .. import layout
from ..stats import softmax_weights
from .html import count, esc, missing_note, num, section, table, what
from .images import MAX_COLS, MAX_ROWS, grid_array, grids_svg
from .read import RunData

__all__ = ["header", "settings", "stages", "committee", "images", "method_name"]


def method_name(data: RunData) -> str:
    members = (data.cfg.get("squeeze") or {}).get("members") or []
    return "SRe²L++ (a committee of one)" if len(members) == 1 else "CV-DD"


def _date(t: object) -> str:
    if not isinstance(t, (int, float)):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def header(data: RunData) -> str:
    st = data.status
    parts = [
        f"<h1>{esc(method_name(data).split(' ')[0])} run {esc(data.run_id)}</h1>",
        f'<p class="sub">Dataset distillation by committee voting (CV-DD). Run created '
        f"{esc(_date(data.doc.get('created_t')))}; status <b>{esc(st['status'])}</b>; this "
        f"page made {esc(_date(time.time()))} from the run folder alone.</p>",
    ]
    if data.missing:
        items = "".join(
            f"<li>{esc(rel)} (written by {esc(stage)})</li>" for rel, stage in data.missing
        )
        parts.append(
            f'<div class="missing">This run has not written everything a finished run has, so '
            f"some sections below are empty. Missing:<ul>{items}</ul></div>"
        )
    return "\n".join(parts)


def settings(data: RunData) -> str:
    cfg, meta = data.cfg, data.meta
    ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    env = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    rec, val = cfg.get("recover") or {}, cfg.get("validate") or {}
    members = (cfg.get("squeeze") or {}).get("members") or []
    size = ds.get("image_size")
    rows = [
        ("preset", cfg.get("name")),
        (
            "data set",
            f"{ds.get('name', (cfg.get('data') or {}).get('dataset'))}: "
            f"{ds.get('num_classes', '?')} classes, {count(ds.get('train_size'))} training and "
            f"{count(ds.get('test_size'))} test images, {size}×{size} px, "
            f"{ds.get('in_channels', '?')} channel(s)",
        ),
        ("images per class (IPC)", cfg.get("ipc")),
        (
            "method",
            f"{method_name(data)}: {len(members)} member(s), "
            f"{rec.get('num_experts')} voter(s) per image, voter {rec.get('voter')}, "
            f"T = {rec.get('temperature')}",
        ),
        ("recover steps", rec.get("iterations")),
        (
            "soft labels",
            f"{str((cfg.get('relabel') or {}).get('mode')).upper()} "
            f"(teacher {(cfg.get('relabel') or {}).get('teacher')})",
        ),
        (
            "students",
            f"{', '.join(val.get('students') or [val.get('student')])}, "
            f"{val.get('epochs')} epochs each",
        ),
        ("seed", cfg.get("seed")),
        (
            "device, threads",
            f"{env.get('device', meta.get('device', '?'))}, "
            f"{env.get('threads', '?')} thread(s)"
            + (f", {env['gpu']}" if env.get("gpu") else f", {env.get('processor', '?')}"),
        ),
        (
            "versions",
            f"cvdd {meta.get('cvdd_version', '?')}, torch {env.get('torch', '?')}, "
            f"numpy {env.get('numpy', '?')}, python {env.get('python', '?')}",
        ),
    ]
    body = (
        '<dl class="kv">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
        + "</dl>"
    )
    return section("settings", "Settings", body)


def _stage_seconds(data: RunData) -> dict[str, float]:
    """Seconds per stage, summed over attempts: result.json's, else the stage_end events'."""
    res = data.get("result") or {}
    if isinstance(res.get("stage_seconds"), dict):
        return {k: v for k, v in res["stage_seconds"].items() if isinstance(v, (int, float))}
    out: dict[str, float] = {}
    for e in data.events:
        if e.get("kind") == "stage_end" and isinstance(e.get("seconds"), (int, float)):
            out[e.get("stage")] = out.get(e.get("stage"), 0.0) + e["seconds"]
    return out


def _duration(s: float) -> str:
    s = round(s)
    return (
        f"{s} s"
        if s < 60
        else f"{s // 60} min {s % 60:02d} s"
        if s < 3600
        else (f"{s // 3600} h {s % 3600 // 60:02d} min")
    )


def stages(data: RunData) -> str:
    secs = _stage_seconds(data)
    done = set(data.status.get("stages_done") or [])
    rows = [
        (s, _duration(secs[s]) if s in secs else "—", "done" if s in done else "not finished")
        for s in layout.STAGES
    ]
    total = sum(secs.values())
    rows.append(("total", _duration(total) if secs else "—", ""))
    body = table(["stage", "time", "state"], rows, numeric={1}) + what(
        "Wall-clock time of each stage on the device above, summed over attempts (a resumed "
        "run counts each attempt); squeeze and prior are short when the committee and its "
        "priors come shipped or cached."
    )
    return section("stages", "How long each stage took", body)


def _votes(com: dict) -> dict[str, list[tuple[int, float]]]:
    """member -> [(IPC index, its weight there)] from recover/committee.json's groups (one
    entry per IPC index: the groups of one index share their voters and weights)."""
    out: dict[str, dict[int, float]] = {}
    for g in com.get("groups") or []:
        if not isinstance(g, dict):
            continue
        for m, w in zip(g.get("members") or [], g.get("weights") or []):
            out.setdefault(str(m), {}).setdefault(int(g.get("ipc_idx", 0)), float(w))
    return {m: sorted(v.items()) for m, v in out.items()}


def _member_rows(data: RunData) -> tuple[list[tuple], int | None, float]:
    mem = (data.get("members") or {}).get("members") or []
    com = data.get("committee") or {}
    priors = com.get("priors") or (data.get("priors") or {}).get("values") or {}
    temp = float(com.get("temperature") or (data.cfg.get("recover") or {}).get("temperature") or 1)
    names = [m.get("name") for m in mem if isinstance(m, dict)] or list(priors)
    share = softmax_weights(priors, names, temp)
    votes = _votes(com)
    n_test = next((m.get("test_images") for m in mem if isinstance(m, dict)), None)
    n_test = n_test or (data.meta.get("dataset") or {}).get("test_size")
    top1 = {m.get("name"): m.get("test_top1") for m in mem if isinstance(m, dict)}
    rows = []
    for m in names:
        v = votes.get(m, [])
        rows.append(
            (
                m,
                num(top1.get(m), unit=" %"),
                num(priors.get(m), unit=" %"),
                num(share.get(m), "{:.2f}"),
                ", ".join(str(k) for k, _ in v) or "none",
                num(sum(w for _, w in v) / len(v), "{:.2f}") if v else "—",
            )
        )
    return rows, n_test, temp


def committee(data: RunData) -> str:
    if data.get("members") is None and data.get("priors") is None:
        return section(
            "committee", "The committee", missing_note("the committee", layout.MEMBERS, "squeeze")
        )
    rows, n_test, temp = _member_rows(data)
    head = ["member", "test top-1", "prior α", f"softmax(α/{temp:g})", "votes for IPC", "weight"]
    body = table(head, rows, numeric={1, 2, 3, 5})
    body += what(
        f"test top-1: the member's own accuracy on {count(n_test)} test images. "
        "prior α: top-1 of a student trained on images this member distilled alone (SRe²L++), "
        "how well its knowledge transfers, not its own accuracy. "
        f"softmax(α/{temp:g}): its share if the whole committee voted at once (paper Eq. 5, "
        "T = recover.temperature). votes for IPC: the IPC indices whose images it optimised; "
        "weight: its mean weight there, a softmax over the α/T of that index's voters."
    )
    note = (data.get("priors") or {}).get("note")
    if note:
        body += what(f"How the priors were made: {note}.")
    if data.get("committee") is None:
        body += missing_note("who voted for which images", layout.COMMITTEE, "recover")
    return section("committee", "The committee", body)


def images(data: RunData) -> str:
    init, synth = data.npz(layout.INIT_IMAGES), data.npz(layout.RECOVER_IMAGES)
    targets = next((z["targets"] for z in (synth, init) if z and "targets" in z), None)
    if targets is None:
        return section(
            "images",
            "Synthetic images beside the initial ones",
            missing_note("the images", layout.INIT_IMAGES, "init"),
        )
    classes = sorted({int(t) for t in targets})
    shown = classes[:MAX_ROWS]
    ipc = int(data.cfg.get("ipc") or 1)
    cols = min(ipc, MAX_COLS)
    steps = (data.cfg.get("recover") or {}).get("iterations")
    grids = []
    for title, z in (
        ("initial (RDED-style patches)", init),
        (f"synthetic ({steps} recover steps)", synth),
    ):
        g = grid_array(z, shown, cols) if z else None
        if g is not None:
            grids.append((title, g))
    width = sum(g.shape[1] for _, g in grids) + 92
    svg = grids_svg(grids, [data.class_name(c) for c in shown], scale=max(1, 600 // width))
    body = f"<figure>{svg}</figure>"
    body += what(
        f"One row per class, one column per IPC index ({cols} of {ipc} shown"
        + (
            f"; the first {len(shown)} of {len(classes)} classes"
            if len(shown) < len(classes)
            else ""
        )
        + "): the pixels the student trains on, before normalisation. Left: where recover "
        "started (real patches the committee finds easy); right: after recover matched each "
        "voter's BatchNorm statistics and class."
    )
    if synth is None:
        body += missing_note("the synthetic images", layout.RECOVER_IMAGES, "recover")
    return section("images", "Synthetic images beside the initial ones", body)

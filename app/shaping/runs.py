"""Runs, events, status texts, the recover trace and committee, tables and the new-run form.

Inputs are the parsed files of docs/rundir.md; every function tolerates missing keys, because a
run that is still going, crashed or came from an older version may lack any of them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvdd.layout import STAGES
from cvdd.stats import softmax_weights  # noqa: F401 -- re-exported: shared with the report

STATUS_ICONS = {
    "running": ":material/play_circle:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/pause_circle:",
    "crashed": ":material/warning:",
    "created": ":material/schedule:",
    "corrupt": ":material/broken_image:",
}  # Streamlit material icons (markdown)


# ---------------------------------------------------------------------------------------------
# small text helpers


def fmt_duration(s: float | None) -> str:
    """12 -> '12s', 95 -> '1m35s', 4000 -> '1h06m'; None -> '?'."""
    if s is None or not math.isfinite(s):
        return "?"
    s = max(0, round(s))
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
    if status == "running" and st.get("run_eta_s") is not None:  # the whole run's time left
        parts.append(f"about {fmt_duration(st['run_eta_s'])} left")
    elif status == "running" and st.get("eta_s") is not None:
        parts.append(f"{stage} ETA {fmt_duration(st['eta_s'])}")
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


def stage_rows(events: list[dict], status: str = "running") -> list[dict]:
    """Per stage: state (pending/running/done/interrupted), step, total, frac, eta_s, seconds."""
    rows = {
        s: {
            "stage": s,
            "state": "pending",
            "step": None,
            "total": None,
            "frac": 0.0,
            "eta_s": None,
            "seconds": None,
            "label": "",
            "metrics": {},
        }
        for s in STAGES
    }
    for e in events:
        s = e.get("stage")
        if s not in rows:
            continue
        r, k = rows[s], e.get("kind")
        if k == "stage_start":
            r.update(state="running", step=0, total=None, frac=0.0, eta_s=None, seconds=None)
        elif k == "progress":
            step, total = e.get("step") or 0, e.get("total") or 0
            r.update(
                state="running",
                step=step,
                total=total,
                frac=min(1.0, step / total) if total else 0.0,
                eta_s=e.get("eta_s"),
                label=e.get("label") or "",
                metrics=e.get("metrics") or {},
            )
        elif k == "stage_end":
            r.update(
                state="done",
                frac=1.0,
                eta_s=None,
                seconds=e.get("seconds"),
                metrics=e.get("metrics") or r["metrics"],
            )
    if status != "running":  # a started stage without stage_end did not finish
        for r in rows.values():
            if r["state"] == "running":
                r.update(state="interrupted", eta_s=None)
    return list(rows.values())


def snapshots(events: list[dict], stage: str = "recover") -> list[dict]:
    """Snapshot events of a stage, one per step (the last wins after a resume), by step."""
    by_step = {
        e["step"]: e
        for e in events
        if e.get("kind") == "snapshot"
        and e.get("stage") == stage
        and isinstance(e.get("step"), int)
        and e.get("path")
    }
    return [by_step[k] for k in sorted(by_step)]


def log_messages(events: list[dict], n: int = 30) -> list[str]:
    out = []
    for e in events:
        if e.get("kind") == "log":
            out.append(f"[{e.get('stage') or 'run'}] {e.get('level', 'info')}: {e.get('msg', '')}")
        elif e.get("kind") in ("run_start", "run_end"):
            extra = e.get("status") or f"attempt {e.get('attempt', '?')} on {e.get('device', '?')}"
            err = f" — {e['error']}" if e.get("error") else ""
            out.append(f"[run] {e['kind']}: {extra}{err}")
    return out[-n:]


def progress_df(events: list[dict], stage: str) -> pd.DataFrame:
    """Metrics of a stage's progress events (step + one column per metric)."""
    rows = [
        {"step": e.get("step"), "label": e.get("label") or "", **(e.get("metrics") or {})}
        for e in events
        if e.get("kind") == "progress" and e.get("stage") == stage
    ]
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
        sig = {
            (tuple(g.get("members") or []), tuple(round(w, 6) for w in g.get("weights") or []))
            for g in gs
        }
        for g in gs[:1] if len(sig) == 1 else gs:
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
    return pd.DataFrame(
        {
            "member": names,
            "alpha": [priors.get(m, np.nan) for m in names],
            "groups": [count.get(m, 0) for m in names],
            "mean_weight": [wsum[m] / count[m] if count.get(m) else np.nan for m in names],
        }
    )


# ---------------------------------------------------------------------------------------------
# runs list, comparison, export


def runs_table(rows: list[dict], now: float | None = None) -> pd.DataFrame:
    """cvdd.runs.list_runs() rows -> the runs-list table."""
    out = []
    for r in rows:
        ds = r.get("dataset") or ""
        out.append(
            {
                "run": r.get("run_id"),
                "status": r.get("status"),
                "stage": "" if r.get("status") == "done" else r.get("stage") or "",
                "preset": r.get("preset") or "",
                "dataset": Path(str(ds)).name if ds else "",
                "ipc": r.get("ipc"),
                "members": len(r.get("members") or []) or None,
                "top1": r.get("student_top1"),
                "age": fmt_age(r.get("created_t"), now),
                "updated": fmt_age(r.get("updated_t"), now) if r.get("updated_t") else "",
            }
        )
    return pd.DataFrame(
        out,
        columns=[
            "run",
            "status",
            "stage",
            "preset",
            "dataset",
            "ipc",
            "members",
            "top1",
            "age",
            "updated",
        ],
    )


def dig(d: Any, *keys: str) -> Any:
    """d[k1][k2]... or None where a level is missing or not a dict (files from elsewhere)."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def compare_row(run_id: str, cfg_doc: Any, result: Any) -> dict:
    """One comparison row from config.json and result.json (either may be missing or foreign)."""
    cfg = dig(cfg_doc, "config")
    cfg = cfg if isinstance(cfg, dict) else {}
    res = result if isinstance(result, dict) else {}
    members = dig(cfg, "squeeze", "members")
    members = members if isinstance(members, list) else []
    dataset = res.get("dataset") or dig(cfg, "data", "dataset") or ""
    method = res.get("method") or ("sre2l++" if len(members) == 1 else "cvdd" if members else None)
    return {
        "run": run_id,
        "method": method,
        "dataset": Path(str(dataset)).name,
        "ipc": res.get("ipc", cfg.get("ipc")),
        "members": len(members) or None,
        "voter": dig(cfg, "recover", "voter"),
        "relabel": dig(cfg, "relabel", "mode"),
        "student_top1": res.get("student_top1"),
        "random_real_top1": dig(res, "baselines", "random_real", "student_top1"),
        "bssl_top1": dig(res, "labels", "bssl"),
        "eval_top1": dig(res, "labels", "eval"),
        # one-hot labels, no teacher (validate.hard_labels): the images' own value
        "hard_top1": dig(res, "hard_labels", "distilled"),
        "random_real_hard_top1": dig(res, "hard_labels", "random_real"),
        "teacher_top1": dig(res, "teacher", "top1"),
    }


# ---------------------------------------------------------------------------------------------
# new-run form


def form_overrides(v: dict[str, Any]) -> list[str]:
    """Form values -> `section.key=value` overrides for cvdd.config.from_preset."""
    out = []
    simple = [
        ("ipc", "ipc"),
        ("seed", "seed"),
        ("device", "device"),
        ("num_experts", "recover.num_experts"),
        ("temperature", "recover.temperature"),
        ("voter", "recover.voter"),
        ("schedule", "recover.schedule"),
        ("iterations", "recover.iterations"),
        ("teacher", "relabel.teacher"),
        ("dataset", "data.dataset"),
    ]
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
    return {
        "preset": cfg.get("name"),
        "dataset": (cfg.get("data") or {}).get("dataset"),
        "ipc": cfg.get("ipc"),
        "members": list((cfg.get("squeeze") or {}).get("members") or []),
        "N": rec.get("num_experts"),
        "T": rec.get("temperature"),
        "voter": rec.get("voter"),
        "schedule": rec.get("schedule"),
        "iterations": rec.get("iterations"),
        "labels": (cfg.get("relabel") or {}).get("mode"),
        "device": cfg.get("device"),
        "seed": cfg.get("seed"),
    }

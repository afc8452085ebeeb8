"""What a data set holds and how long a run on it will take, before anything is queued.

`check_data(cfg, runs_dir)` loads the run's data exactly as the worker will (a zip is checked
and extracted into the runs folder's data area here, so the run reuses it), checks IPC against
every class, and estimates the run's time on this machine (`cvdd.estimate`). The CLI prints
`format_summary` before a run and for `python -m cvdd check-data`; the New run page reads the
same dict as JSON (`check-data --json`).
"""

from __future__ import annotations

from pathlib import Path

from . import layout
from .config import RunConfig
from .utils import CvddError


def _ipc_problem(cfg: RunConfig, summary: dict) -> str | None:
    train, names = summary["train_per_class"], summary["classes"]
    short = [(n, c) for n, c in zip(names, train) if c < cfg.ipc]
    if not short:
        return None
    name, count = min(short, key=lambda nc: nc[1])
    held = " (after holding out the test split)" if summary.get("held_out") else ""
    return (
        f"class {name!r} has {count} training image(s){held}, fewer than IPC {cfg.ipc}"
        f"{f' ({len(short)} classes are short)' if len(short) > 1 else ''}; lower IPC to "
        f"{min(train)} (--set ipc={max(min(train), 1)}), or add images to that class"
    )


def cached_stages(cfg: RunConfig, ds, runs_dir: str | Path) -> list[str]:
    """The committee stages a run of `cfg` on `ds` will take whole from the runs folder's cache
    (the keys squeeze and prior look up): squeeze when every member is there, prior too when
    every member's alpha is. A shipped committee is not counted here (the forecast already
    counts it as no work)."""
    from types import SimpleNamespace

    from .stages.prior import prior_key
    from .stages.squeeze import member_key

    s, p = cfg.squeeze, cfg.prior
    if s.source != "train" or s.weights:
        return []
    cache, ctx = layout.committee_cache(cfg.cache_dir, runs_dir), SimpleNamespace(cfg=cfg, data=ds)
    files = {m: layout.member_weights_path(ds.name, m, member_key(ctx, m)) for m in s.members}
    if not all((cache / f).is_file() for f in files.values()):
        return []
    if p.source != "compute" or len(s.members) < 2:
        return ["squeeze"]
    k = min(p.max_classes or ds.num_classes, ds.num_classes)
    alphas = [layout.prior_cache_path(ds.name, m, prior_key(cfg, f, k)) for m, f in files.items()]
    return ["squeeze", "prior"] if all((cache / a).is_file() for a in alphas) else ["squeeze"]


def check_data(cfg: RunConfig, runs_dir: str | Path, estimate: bool = True) -> dict:
    """The summary of `cfg.data.dataset`; CvddError (field data.dataset or ipc) when the data
    cannot be used. The summary's `ipc_problem` is set instead of raising for a too-high IPC,
    so a page can show the summary beside the message."""
    import torch

    from .data import DataError, load_dataset

    data_dir = Path(runs_dir) / layout.DATA_AREA
    try:
        ds = load_dataset(cfg.data.dataset or "", cfg.data.image_size or None, None, data_dir)
    except DataError as e:
        raise CvddError(str(e).replace("\n", " "), field="data.dataset") from e
    k = ds.num_classes
    train = torch.bincount(ds.train.targets, minlength=k).tolist()
    test = torch.bincount(ds.test.targets, minlength=k).tolist()
    arch = ds.archive or {}
    summary = {
        "data": str(cfg.data.dataset),
        "name": ds.name,
        "layout": ds.layout,
        "classes": list(ds.class_names),
        "train_per_class": train,
        "test_per_class": test,
        "image_size": ds.image_size,
        "channels": ds.in_channels,
        "mean": list(ds.mean),
        "std": list(ds.std),
        "size_rule": arch.get(
            "size_rule", "the data set's own size" if not cfg.data.image_size else "as set"
        ),
        "sizes_found": arch.get("sizes"),
        "modes_found": arch.get("modes"),
        "skipped": arch.get("skipped", {}),
        "test_split": arch.get("test_split", {"source": "the data set's own"}),
        "held_out": arch.get("test_split", {}).get("source") == "held_out",
        "extracted_to": arch.get("folder"),
        "sha256": arch.get("sha256"),
        "ipc": cfg.ipc,
    }
    summary["ipc_problem"] = _ipc_problem(cfg, summary)
    if estimate:
        from .estimate import estimate_run

        summary["estimate"] = estimate_run(
            cfg,
            num_classes=k,
            train=sum(train),
            test=sum(test),
            shape=(ds.in_channels, ds.image_size),
            cached=cached_stages(cfg, ds, runs_dir),
        )
    return summary


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def _counts(names: list[str], counts: list[int], limit: int = 12) -> str:
    shown = ", ".join(f"{n} {c}" for n, c in list(zip(names, counts))[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def format_summary(s: dict) -> list[str]:
    """The summary as lines for a terminal (and the page's plain-text view)."""
    split = s["test_split"]
    split_text = (
        f"held out: {split['fraction']:.0%} of each class, seed {split['seed']} "
        "(the zip has no test/ or val/; the same for every run on this zip)"
        if s["held_out"]
        else split.get("source", "")
    )
    lines = [
        f"data        {s['data']} ({s['layout']}, {len(s['classes'])} classes)",
        f"train       {sum(s['train_per_class'])} images: "
        + _counts(s["classes"], s["train_per_class"]),
        f"test        {sum(s['test_per_class'])} images; {split_text}",
        f"images      {s['image_size']} x {s['image_size']} px, {s['channels']} channel(s) "
        f"({s['size_rule']})",
    ]
    if s.get("sizes_found"):
        sizes = ", ".join(f"{k} ({v})" for k, v in sorted(s["sizes_found"].items())[:6])
        modes = ", ".join(f"{k} ({v})" for k, v in sorted(s["modes_found"].items()))
        lines.append(f"found       sizes {sizes}; modes {modes}")
    if s.get("skipped"):
        lines.append(
            "skipped     " + "; ".join(f"{n} {why}" for why, n in sorted(s["skipped"].items()))
        )
    if s.get("extracted_to"):
        lines.append(f"extracted   {s['extracted_to']} (sha256 {s['sha256'][:16]})")
    if s.get("ipc_problem"):
        lines.append(f"IPC         {s['ipc_problem']}")
    est = s.get("estimate")
    if est:
        parts = ", ".join(f"{k} {_minutes(v)}" for k, v in est["stages"].items() if v >= 0.5)
        lines.append(f"estimate    {_minutes(est['total_s'])} on this machine ({parts})")
        lines.append(f"            {est['basis']}")
    return lines

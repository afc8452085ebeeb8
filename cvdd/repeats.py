"""Repeats over seeds: runs that differ only in seed form a group, and a group compares like with
like. Torch-free, like cvdd.twins: the UI and the CLI import it.

A group's key is a hash of the config without `seed` and without the settings that change how a
run executes but not what it computes (device, threads, cache folder, recover's EXECUTION_KEYS,
the preset's display name). Runs of one group made under another device kind, thread count,
library version or engine version are flagged, not silently pooled: the same seed reproduces a
result bit for bit only under the same environment (docs/method.md §11).

`create_repeat` makes the run folders that repeat a finished run's settings with other seeds
(with its SRe2L++ twin when it has one); the app then queues them (cvdd.jobs.resume_job), and
`python -m cvdd run --seeds 0-7 [--twin]` runs the same in one process.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, stats, twins
from .config import EXECUTION_KEYS
from .rundir import RunDir
from .utils import CvddError, read_json

__all__ = [
    "METHOD_NAMES",
    "ENV_FIELDS",
    "parse_seeds",
    "group_key",
    "env_signature",
    "env_flags",
    "method_of",
    "seed_of",
    "seed_values",
    "summarise",
    "summary_lines",
    "config_docs",
    "experiment_runs",
    "Plan",
    "plan_repeat",
    "create_repeat",
]

# what a page or the CLI calls each arm; never a run id
METHOD_NAMES = {"cvdd": "CV-DD", "sre2l++": "SRe2L++", "real": "random real"}
# the paired differences worth a sentence: (a, b) means a - b on the same seed
PAIRS = (("cvdd", "sre2l++"), ("cvdd", "real"), ("sre2l++", "real"))
# top-level settings that do not change what a run computes (besides `seed`, the one that varies)
_RUN_ONLY = ("name", "seed", "device", "threads", "cache_dir")
# environment fields (config.json meta) that must agree for bit-equal repeats
ENV_FIELDS = ("device", "gpu", "threads", "torch", "torchvision", "numpy", "python", "processor")
MAX_SEEDS = 64


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7]; '0,3,5' and '1-3,8' work too; each seed once, in the given order."""
    out: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise CvddError(
                f"seeds {text!r} is not a seed list; write e.g. --seeds 0-7 or --seeds 0,3,5",
                field="seeds",
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out += [s for s in range(lo, hi + 1) if s not in out]
    if len(out) > MAX_SEEDS:
        raise CvddError(f"{len(out)} seeds is more than {MAX_SEEDS}; pass fewer", field="seeds")
    return out


def group_key(config: Mapping) -> str:
    """Short hash of a RunConfig dict without seed and execution-only settings: runs with the
    same key are repeats of one experiment."""
    d = copy.deepcopy(dict(config))
    for k in _RUN_ONLY:
        d.pop(k, None)
    rec = d.get("recover")
    if isinstance(rec, dict):
        for k in EXECUTION_KEYS:
            rec.pop(k, None)
        for k in ("groups_per_wave", "groups_per_step"):  # the wave size, newer and older name
            rec.pop(k, None)
    blob = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def env_signature(doc: object) -> dict:
    """The fields of config.json meta that decide bit-equality: environment (device kind, GPU,
    threads, versions, processor) and the engine version. {} when the run never recorded them."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    env = meta.get("environment") if isinstance(meta, dict) else None
    if not isinstance(env, dict):
        return {}
    sig = {k: env.get(k) for k in ENV_FIELDS if env.get(k) is not None}
    if isinstance(sig.get("device"), str):
        sig["device"] = sig["device"].split(":")[0]  # the kind: cuda:0 and cuda:1 are alike
    if meta.get("cvdd_version") is not None:
        sig["cvdd"] = meta["cvdd_version"]
    return sig


def env_flags(docs: Mapping[str, object]) -> list[str]:
    """One sentence per environment field on which the runs (id -> config.json doc) disagree,
    e.g. 'threads: 1 (3 runs), 2 (1 run)'; [] when they agree."""
    sigs = {rid: env_signature(doc) for rid, doc in docs.items()}
    flags = []
    missing = sorted(rid for rid, s in sigs.items() if not s)
    if missing and len(missing) < len(sigs):
        flags.append(f"environment not recorded for {len(missing)} run(s): {', '.join(missing)}")
    known = [s for s in sigs.values() if s]
    for k in [*ENV_FIELDS, "cvdd"]:
        counts: dict[str, int] = {}
        for s in known:
            v = str(s.get(k, "not recorded"))
            counts[v] = counts.get(v, 0) + 1
        if len(counts) > 1:
            parts = [f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in sorted(counts.items())]
            flags.append(f"{k}: {', '.join(parts)}")
    return flags


def method_of(doc: object) -> str | None:
    """'cvdd' or 'sre2l++' from a config.json document (None when unreadable)."""
    cfg = doc.get("config") if isinstance(doc, dict) else None
    members = (cfg.get("squeeze") or {}).get("members") if isinstance(cfg, dict) else None
    if not isinstance(members, (list, tuple)) or not members:
        return None
    return "sre2l++" if len(members) == 1 else "cvdd"


def seed_of(doc: object) -> int | None:
    cfg = doc.get("config") if isinstance(doc, dict) else None
    seed = cfg.get("seed") if isinstance(cfg, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _top1(result: object, *keys: str) -> float | None:
    v = result
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def seed_values(entries: Iterable[tuple[str | None, int | None, object]]) -> dict:
    """(method, seed, result.json doc) per run -> {arm: {seed: student top-1}} for the arms
    cvdd, sre2l++ and real (each CV-DD run's random-real baseline). A later entry of the same
    method and seed wins: pass runs oldest first."""
    out: dict[str, dict[int, float]] = {"cvdd": {}, "sre2l++": {}, "real": {}}
    for method, seed, res in entries:
        top1 = _top1(res, "student_top1")
        if method not in ("cvdd", "sre2l++") or seed is None or top1 is None:
            continue
        out[method][seed] = top1
        real = _top1(res, "baselines", "random_real", "student_top1")
        if real is not None and (method == "cvdd" or seed not in out["real"]):
            out["real"][seed] = real  # the CV-DD run's own baseline first
    return out


def summarise(values: Mapping[str, Mapping[int, float]]) -> tuple[dict, dict]:
    """Per arm: its mean with a 95 % t interval; per pair in PAIRS: the paired (same-seed)
    difference with its interval. Arms or pairs without values are left out."""
    arms = {a: stats.interval(list(v.values())) for a, v in values.items() if v}
    diffs = {}
    for a, b in PAIRS:
        if values.get(a) and values.get(b) and set(values[a]) & set(values[b]):
            diffs[(a, b)] = stats.paired(dict(values[a]), dict(values[b]))
    return arms, diffs


def summary_lines(values: Mapping[str, Mapping[int, float]]) -> list[str]:
    """Plain sentences: each arm's mean ± 95 % half-width, then each paired difference's
    verdict (stats.verdict)."""
    arms, diffs = summarise(values)
    lines = [f"{METHOD_NAMES[a]}: {iv.text(1)}" for a, iv in arms.items()]
    lines += [stats.verdict(d, METHOD_NAMES[a], METHOD_NAMES[b]) for (a, b), d in diffs.items()]
    return lines


def config_docs(runs_root: str | Path) -> dict[str, dict]:
    """run id -> config.json document of every readable run folder under runs_root."""
    out = {}
    try:
        folders = sorted(p for p in Path(runs_root).iterdir() if not p.name.startswith(("_", ".")))
    except OSError:
        return out
    for p in folders:
        doc = read_json(p / layout.CONFIG)
        if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
            out[p.name] = doc
    return out


def experiment_runs(run_id: str, docs: Mapping[str, object]) -> dict[str, list[str]]:
    """The runs (oldest first) that repeat `run_id`'s experiment, per method: its group, and the
    groups of its group's SRe2L++ twins (or, for a twin, of the CV-DD runs they twin)."""
    keys = {rid: group_key(d["config"]) for rid, d in docs.items() if _has_config(d)}
    if run_id not in keys:
        return {}
    base = twins.twin_of(docs[run_id]) if method_of(docs[run_id]) == "sre2l++" else None
    base = base if base in keys else run_id
    own = [rid for rid in sorted(keys) if keys[rid] == keys[base]]
    partners = {twins.find_twin(rid, docs) for rid in own} - {None}
    pkeys = {keys[p] for p in partners if p in keys}
    twinned = [rid for rid in sorted(keys) if keys[rid] in pkeys]
    out: dict[str, list[str]] = {}
    for rid in own + twinned:
        m = method_of(docs[rid])
        if m is not None:
            out.setdefault(m, []).append(rid)
    return out


def _has_config(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("config"), dict)


@dataclass
class Plan:
    """What `start_repeat` creates: (seed, config dict, meta) per new run, CV-DD runs first in
    each seed, then the twin; `twin_for` maps a plan index to the index of its CV-DD run (or to
    an existing run id) so the twin's meta can name it."""

    runs: list[tuple[int, dict, dict]] = field(default_factory=list)
    twin_for: dict[int, int | str] = field(default_factory=dict)


def plan_repeat(run_id: str, n_seeds: int, docs: Mapping[str, dict]) -> Plan:
    """The runs that bring `run_id`'s group (and its twin's, when it has one) to n_seeds seeds:
    the run's own seed, then the smallest seeds not yet in the group."""
    if not 2 <= n_seeds <= MAX_SEEDS:
        raise CvddError(f"repeat over 2..{MAX_SEEDS} seeds (got {n_seeds})", field="seeds")
    src = twins.twin_of(docs.get(run_id)) if method_of(docs.get(run_id)) == "sre2l++" else None
    src = src if src in docs else run_id  # a twin repeats with the CV-DD run it twins
    doc = docs[src]
    key = group_key(doc["config"])
    group = {seed_of(d): rid for rid, d in sorted(docs.items()) if group_key(d["config"]) == key}
    twin = twins.find_twin(src, docs)
    seeds = [seed_of(doc)] + [s for s in range(MAX_SEEDS * 2) if s != seed_of(doc)]
    plan = Plan()
    for s in seeds[:n_seeds]:
        own: int | str | None = group.get(s)
        if own is None:
            plan.runs.append((s, {**doc["config"], "seed": s}, {"repeat_of": src}))
            own = len(plan.runs) - 1
        has_twin = isinstance(own, str) and twins.find_twin(own, docs) is not None
        if twin is not None and not has_twin:
            plan.runs.append((s, {**docs[twin]["config"], "seed": s}, {"repeat_of": twin}))
            plan.twin_for[len(plan.runs) - 1] = own
    return plan


def create_repeat(
    run_dir: str | Path, n_seeds: int, runs_root: str | Path | None = None
) -> list[Path]:
    """Create (not start) the runs that bring the run's group to n_seeds seeds, plus the SRe2L++
    twin of each seed when the run has a twin (each CV-DD run carries its random-real baseline).
    Returns the new folders in plan order (each seed's CV-DD run, then its twin): queue them in
    that order (cvdd.jobs.resume_job) and each seed's pair finishes close together."""
    src = RunDir.open(run_dir)
    root = Path(runs_root or src.path.parent)
    plan = plan_repeat(src.run_id, n_seeds, config_docs(root))
    made: list[Path] = []
    for i, (_seed, cfg, meta) in enumerate(plan.runs):
        meta = {"launched_by": "repeat", **meta}
        if i in plan.twin_for:
            own = plan.twin_for[i]
            meta["twin_of"] = own if isinstance(own, str) else made[own].name
        made.append(RunDir.create(root, cfg, meta=meta).path)
    return made

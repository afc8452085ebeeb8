"""SRe2L++ twins: the paper compares CV-DD with SRe2L++ (Fig. 4, Table 4), which is the same
pipeline with a committee of one. A run's twin has its seed, IPC, data and budgets, one member,
and `twin_of` (the CV-DD run's id) in its config.json meta, so either run finds the other.

Torch-free, like cvdd.jobs: the UI imports it. It creates run folders only; starting one is
cvdd.jobs' part (`jobs.resume_job(path, wait=False)`), so the CLI can make twins without the
worker machinery.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from . import layout
from .config import RunConfig
from .rundir import RunDir
from .utils import CvddError, read_json

__all__ = ["twin_member", "twin_config", "create_twin", "twin_of", "find_twin"]


def twin_member(cfg: RunConfig, priors: Mapping[str, float] | None = None) -> str:
    """The one member of the twin: the relabel teacher, so both runs' images are labelled and
    analysed by the same model and only the recover committee differs; for a committee teacher,
    the member with the best prior (the first member when no priors are known)."""
    if cfg.relabel.teacher != "committee":
        return cfg.relabel.teacher
    members = list(cfg.squeeze.members)
    known = {m: v for m, v in (priors or {}).items() if m in members and _is_number(v)}
    return max(members, key=lambda m: known.get(m, float("-inf"))) if known else members[0]


def twin_config(cfg: RunConfig, priors: Mapping[str, float] | None = None) -> RunConfig:
    """The SRe2L++ twin of a CV-DD config: one member, N = 1, fixed schedule; everything else
    (seed, IPC, data, squeeze / recover / validate budgets, students) unchanged."""
    if cfg.method != "cvdd":
        raise CvddError("this run already has a committee of one (SRe2L++); it is its own twin")
    m = twin_member(cfg, priors)
    over = {
        "squeeze": {"members": [m], "weights": _only(cfg.squeeze.weights, m)},
        "recover": {"num_experts": 1, "schedule": "fixed", "fixed_members": []},
        "relabel": {"teacher": m},
        "init": {"observer": cfg.init.observer if cfg.init.observer == m else ""},
    }
    if priors and _is_number(priors.get(m)):
        # with one member the prior only names it (its weight is 1): reuse the run's value
        # instead of spending the prior stage's SRe2L++ run on it again
        over["prior"] = {"source": "user", "values": {m: float(priors[m])}}
    elif cfg.prior.source == "user":
        over["prior"] = {"values": _only(cfg.prior.values, m)}
    return cfg.replace(over)


def create_twin(
    run_dir: str | Path, runs_root: str | Path | None = None, launched_by: str = "twins"
) -> Path:
    """Create (not start) the twin of a finished or running CV-DD run; its config.json meta
    holds `twin_of` = the run's id. The run's priors, when it has them, name the one member."""
    src = RunDir.open(run_dir)
    cfg = RunConfig.from_dict(src.read_config()["config"])
    priors = (read_json(src.path / layout.PRIORS) or {}).get("values")
    twin = twin_config(cfg, priors if isinstance(priors, dict) else None)
    rd = RunDir.create(
        runs_root or src.path.parent,
        twin.to_dict(),
        meta={"launched_by": launched_by, "twin_of": src.run_id},
    )
    return rd.path


def twin_of(doc: object) -> str | None:
    """`meta.twin_of` of a config.json document, or None."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    rid = meta.get("twin_of") if isinstance(meta, dict) else None
    return rid if isinstance(rid, str) and rid else None


def find_twin(run_id: str, docs: Mapping[str, object]) -> str | None:
    """The twin of `run_id` among `docs` (run id -> config.json document): the run it names as
    `twin_of`, else the newest run that names it. None when it has none."""
    own = twin_of(docs.get(run_id))
    if own and own in docs:
        return own
    named = sorted(rid for rid, doc in docs.items() if twin_of(doc) == run_id and rid != run_id)
    return named[-1] if named else None  # run ids start with their creation time


def _only(d: Mapping, key: str) -> dict:
    return {key: d[key]} if key in d else {}


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)

"""What the HTML report reads from a run folder: every file through cvdd.layout, each one
tolerated when absent or damaged (a run still going, crashed, or from an older version), and
the checks that refuse a folder that is not a run or a run that has not finished."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import layout
from ..runs import run_status
from ..utils import CvddError, read_json

__all__ = ["RunData", "load_run", "FILES"]

# the files a section needs: name -> (path, the stage that writes it)
FILES = {
    "members": (layout.MEMBERS, "squeeze"),
    "priors": (layout.PRIORS, "prior"),
    "committee": (layout.COMMITTEE, "recover"),
    "bn_stats": (layout.BN_STATS, "relabel"),
    "bn_groups": (layout.BN_GROUPS, "relabel"),
    "diversity": (layout.DIVERSITY, "relabel"),
    "soft_stats": (layout.SOFT_LABEL_STATS, "relabel"),
    "students": (layout.STUDENTS, "validate"),
    "result": (layout.RESULT, "validate"),
}


@dataclass
class RunData:
    """One run folder's parsed files; a dict entry is None where its file is missing."""

    path: Path
    doc: dict
    status: dict
    events: list[dict]
    json: dict[str, Any] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, stage) not found

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def cfg(self) -> dict:
        return self.doc.get("config") or {}

    @property
    def meta(self) -> dict:
        m = self.doc.get("meta")
        return m if isinstance(m, dict) else {}

    def get(self, name: str) -> dict | None:
        v = self.json.get(name)
        return v if isinstance(v, dict) else None

    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else []

    def class_name(self, c: int) -> str:
        names = self.class_names()
        return names[c] if 0 <= c < len(names) else f"class {c}"

    def npz(self, rel: str) -> dict[str, np.ndarray] | None:
        """The arrays of an .npz in the run folder, or None (missing, torn or foreign)."""
        try:
            with np.load(self.path / rel, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None


def load_run(run_dir: str | Path, *, partial: bool = False) -> RunData:
    """Read a run folder for the report. A missing folder, a folder without a readable
    config.json, or (unless `partial`) a run that has not finished raise a CvddError that
    names the fix."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CvddError(
            f"no run folder at {path}: pass the folder `python -m cvdd run` printed last "
            "(runs/<run id>)",
            field="run_dir",
        )
    doc = read_json(path / layout.CONFIG)
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise CvddError(
            f"{path} is not a run folder (no readable {layout.CONFIG}): pass a folder that "
            "`python -m cvdd run` made (runs/<run id>)",
            field="run_dir",
        )
    events = layout.read_events(path)
    status = run_status(path, events=events)
    if status["status"] != "done" and not partial:
        raise CvddError(
            f"run {path.name} is {status['status']}, not finished: finish it with "
            f"`python -m cvdd resume {path}`, or add --partial to report what it has so far",
            field="run_dir",
        )
    data = RunData(path=path.resolve(), doc=doc, status=status, events=events)
    for name, (rel, stage) in FILES.items():
        data.json[name] = read_json(path / rel)
        if not isinstance(data.json[name], dict):
            data.missing.append((rel, stage))
    for rel, stage in (
        (layout.INIT_IMAGES, "init"),
        (layout.RECOVER_IMAGES, "recover"),
        (layout.SOFT_LABELS, "relabel"),
    ):
        if not (path / rel).is_file():
            data.missing.append((rel, stage))
    return data

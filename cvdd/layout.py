"""The run directory's layout: every path in it, the stage list, and the one events reader.

The engine writes a run directory and the app reads it; both take every name from here, so
the layout lives in one place (docs/rundir.md describes the content of each file). Paths are
relative to the run directory and use "/" so a zipped run opens anywhere. Torch-free and
streamlit-free: the app, the jobs module and the engine all import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = [
    "STAGES",
    "CONFIG",
    "EVENTS",
    "JOB",
    "LOCK",
    "WORKER_LOG",
    "RESULT",
    "REPORT",
    "MEMBERS",
    "PRIORS",
    "PRIOR_PARTIAL",
    "INIT_IMAGES",
    "RANDOM_REAL",
    "COMMITTEE",
    "TRACE",
    "MEMORY_PLAN",
    "RECOVER_IMAGES",
    "SOFT_LABELS",
    "BN_STATS",
    "BN_GROUPS",
    "DIVERSITY",
    "SOFT_LABEL_STATS",
    "STUDENTS",
    "EXPORT",
    "QUEUE",
    "QUEUE_LOCK",
    "snapshot_path",
    "checkpoint_path",
    "recover_group_path",
    "member_weights_path",
    "prior_cache_path",
    "export_path",
    "parse_jsonl",
    "read_jsonl",
    "read_events",
    "JsonlTail",
]

# The six stages, in the order the pipeline runs them. One vocabulary: the same strings name the
# stage modules, config sections, `event["stage"]`, output folders and checkpoints.
STAGES = ("squeeze", "prior", "init", "recover", "relabel", "validate")

# -- the run's own files ----------------------------------------------------------------------
CONFIG = "config.json"  # resolved RunConfig + meta, written before any work
EVENTS = "events.jsonl"  # append-only, one event per line
JOB = "job.json"  # pid / argv of the current worker attempt
LOCK = "worker.lock"  # flock held by the live worker (the kernel drops it on kill -9)
WORKER_LOG = "worker.log"  # stdout / stderr of a background worker
RESULT = "result.json"  # final metrics, written last
REPORT = "report.html"  # `python -m cvdd report`: the run as one page (written on request)

# -- stage outputs ----------------------------------------------------------------------------
MEMBERS = "squeeze/members.json"
PRIORS = "prior/priors.json"
PRIOR_PARTIAL = "prior/partial.json"  # priors of finished members, so a resume skips them
INIT_IMAGES = "init/images.npz"
RANDOM_REAL = "init/random_real.npz"
COMMITTEE = "recover/committee.json"
TRACE = "recover/trace.jsonl"
MEMORY_PLAN = (
    "recover/memory_plan.json"  # waves, bytes per image, budget, peak (cvdd/recover/plan.py)
)
RECOVER_IMAGES = "recover/images.npz"
SOFT_LABELS = "relabel/soft_labels.npz"
BN_STATS = "analysis/bn_stats.json"
BN_GROUPS = "analysis/bn_groups.json"  # per recover group: BN gaps on its voters and the others
DIVERSITY = "analysis/diversity.json"
SOFT_LABEL_STATS = "analysis/soft_labels.json"
STUDENTS = "validate/students.json"
EXPORT = "export"

# -- files of the runs root, beside the run folders (a leading "_" keeps them out of the list) --
QUEUE = "_queue.json"  # runs waiting for a worker slot, oldest first (cvdd/queue.py)
QUEUE_LOCK = "_queue.lock"  # flock held while the queue changes or its head is started
DATA_AREA = "_data"  # zipped data sets, extracted once per archive: _data/<sha256[:16]>/
UPLOADS = "_uploads"  # zips dropped on the New run page: _uploads/<sha256[:16]>/<name>.zip


def snapshot_path(stage: str, step: int) -> str:
    """PNG grid of a stage's images at a step."""
    return f"snapshots/{stage}/{step:06d}.png"


def checkpoint_path(stage: str) -> str:
    """One checkpoint per stage, replaced atomically."""
    return f"checkpoints/{stage}.pt"


def recover_group_path(group: int) -> str:
    """A finished recover group's final uint8 images, written once; recover.pt names them."""
    return f"checkpoints/recover_groups/{group:05d}.npy"


def committee_cache(cache_dir: str, runs_root: str | Path) -> Path:
    """The committee cache folder a run uses: `cache_dir` when set, else the runs folder's."""
    return Path(cache_dir or Path(runs_root) / "_cache")


def member_weights_path(dataset: str, member: str, key: str) -> str:
    """A trained committee member, relative to the committee cache folder (shared by runs)."""
    return f"squeeze/{dataset}-{member}-{key}.pt"


def prior_cache_path(dataset: str, member: str, key: str) -> str:
    """A member's computed prior (alpha), relative to the committee cache folder (shared by
    runs); `key` covers every setting that changes it (cvdd/stages/prior.py)."""
    return f"prior/{dataset}-{member}-{key}.json"


def export_path(rel: str = "") -> str:
    """A file of the export folder (an ImageFolder of the distilled set plus its labels)."""
    return f"{EXPORT}/{rel}" if rel else EXPORT


# -- readers: never raise on torn, foreign or unreadable files ---------------------------------


def parse_jsonl(data: bytes | str | None, require: str | None = None) -> list[dict]:
    """JSON lines -> dicts. The unterminated last piece (a write in progress) is dropped, and so
    is every line that is not a JSON object or lacks the `require`d key."""
    if not data:
        return []
    if isinstance(data, str):
        data = data.encode()
    out = []
    for line in data.split(b"\n")[:-1]:
        try:
            obj = json.loads(line)
        except ValueError:  # torn or foreign line (UnicodeDecodeError is a ValueError)
            continue
        if isinstance(obj, dict) and (require is None or isinstance(obj.get(require), str)):
            out.append(obj)
    return out


def read_jsonl(path: str | Path, require: str | None = None) -> list[dict]:
    """A whole JSON-lines file; [] when it is absent or unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    return parse_jsonl(data, require)


def read_events(run_dir: str | Path) -> list[dict]:
    """Every complete event of a run (records without a string `kind` are skipped)."""
    return read_jsonl(Path(run_dir) / EVENTS, require="kind")


class JsonlTail:
    """Reads a growing JSON-lines file incrementally: each `read()` parses only the bytes
    appended since the last call. A file that shrank or was replaced is read again from the
    start, so a reader never holds records the file no longer has."""

    def __init__(self, path: str | Path, require: str | None = None):
        self.path, self.require = Path(path), require
        self.records: list[dict] = []
        self._offset = 0
        self._ident: tuple[int, int] | None = None  # (device, inode) of the file read so far

    def read(self) -> list[dict]:
        """All complete records so far (the same list object, extended in place)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                ident = (st.st_dev, st.st_ino)
                if ident != self._ident or st.st_size < self._offset:
                    self.records, self._offset, self._ident = [], 0, ident
                if st.st_size == self._offset:
                    return self.records
                f.seek(self._offset)
                data = f.read(st.st_size - self._offset)
        except OSError:
            self.records, self._offset, self._ident = [], 0, None
            return self.records
        end = data.rfind(b"\n") + 1  # only whole lines; the rest is read next time
        self.records.extend(parse_jsonl(data[:end], self.require))
        self._offset += end
        return self.records

"""Every page renders a run directory damaged the way a crash or another tool leaves one.

Each variant starts from a real finished run and breaks it one way: torn and foreign lines in
the JSON-lines files, records of unknown kinds, truncated files, files of the wrong JSON type,
and folders where files should be (unreadable). A page may say it cannot show something; it
may never raise.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import streamlit as st
from procs import HANG_S
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cvdd import layout  # noqa: E402

APP = str(ROOT / "app" / "main.py")
PAGES = ["new_run", "runs", "live", "bn", "soft_labels", "diversity", "compare"]
FOREIGN_LINES = (
    b"garbage\n"
    b"[1, 2, 3]\n"
    b'{"seq": 5}\n'  # no kind
    b'{"kind": 7, "stage": "recover"}\n'  # kind of the wrong type
    b'{"kind": "from_the_future", "stage": "recover", "step": "x"}\n'  # unknown kind
    b'{"kind": "progress", "stage": "nope", "step": null, "total": "ten"}\n'
    b'{"kind": "stage_end", "stage": 3, "seconds": "long"}\n'
    b'{"kind": "snapshot", "stage": "recover", "step": 9, "path": "../../etc/passwd"}\n'
    b"\xff\xfe\x00binary\n"
)
JSON_FILES = (
    layout.CONFIG,
    layout.RESULT,
    layout.MEMBERS,
    layout.PRIORS,
    layout.COMMITTEE,
    layout.BN_STATS,
    layout.DIVERSITY,
    layout.SOFT_LABEL_STATS,
    layout.STUDENTS,
)
BINARY_FILES = (layout.INIT_IMAGES, layout.RANDOM_REAL, layout.RECOVER_IMAGES, layout.SOFT_LABELS)


def _snapshots(d: Path) -> list[Path]:
    return sorted((d / "snapshots").rglob("*.png"))


def _foreign(d: Path) -> None:
    """Foreign, unknown and torn records in every JSON-lines file."""
    for rel in (layout.EVENTS, layout.TRACE):
        data = (d / rel).read_bytes()
        half = len(data) // 2
        (d / rel).write_bytes(data[:half] + b"\n" + FOREIGN_LINES + data[half:] + b'{"kind": "pro')


def _truncated(d: Path) -> None:
    """Every file cut in half, as a copy or a full disk leaves it."""
    for rel in (*JSON_FILES, *BINARY_FILES, layout.EVENTS, layout.TRACE):
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: len(data) // 2])
    for p in _snapshots(d):
        p.write_bytes(p.read_bytes()[:100])


def _wrong_types(d: Path) -> None:
    """Well-formed JSON of the wrong shape everywhere (another tool, another version)."""
    for i, rel in enumerate(JSON_FILES):
        value = [[1, 2], "text", 3.5, None, {"config": [1]}, {"layers": "x", "sources": 4}][i % 6]
        (d / rel).write_text(json.dumps(value))
    committee = {"groups": "x", "priors": [1], "temperature": "hot"}
    (d / layout.COMMITTEE).write_text(json.dumps(committee))
    (d / layout.DIVERSITY).write_text(
        json.dumps({"sources": {"synthetic": {"per_class": "x", "matrices": [[["a"]]]}}})
    )
    (d / layout.BN_STATS).write_text(json.dumps({"layers": [{"sources": {"init": 3}}, 5]}))
    (d / layout.STUDENTS).write_text(json.dumps({"students": {"a": 1, "b": {"curve": "x"}}}))


def _unreadable(d: Path) -> None:
    """A folder where each file should be (reading it raises IsADirectoryError)."""
    for rel in (*JSON_FILES, *BINARY_FILES, layout.EVENTS, layout.TRACE, layout.WORKER_LOG):
        p = d / rel
        if p.exists():
            p.unlink()
        p.mkdir(parents=True)
    for p in _snapshots(d):
        p.unlink()
        p.mkdir()


DAMAGE = {
    "foreign": _foreign,
    "truncated": _truncated,
    "wrongtypes": _wrong_types,
    "unreadable": _unreadable,
}


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory, tiny_run_dir) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    for k, (name, damage) in enumerate(DAMAGE.items()):
        d = root / f"20260101-00000{k}-builtin-ipc2-{name}"
        shutil.copytree(tiny_run_dir, d, ignore=shutil.ignore_patterns("checkpoints"))
        damage(d)
    return root


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_page_renders_a_damaged_run(damaged_root, monkeypatch, page, damage):
    monkeypatch.setenv("CVDD_RUNS_DIR", str(damaged_root))
    st.cache_data.clear()
    st.cache_resource.clear()
    rid = next(p.name for p in damaged_root.iterdir() if p.name.endswith(damage))
    at = AppTest.from_file(APP, default_timeout=HANG_S)
    at.query_params["run"] = rid
    if page != "new_run":
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page not in ("new_run", "runs", "compare"):
        assert at.title and at.title[0].value, "the page did not get past its header"

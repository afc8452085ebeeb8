"""Run directory: events round trip, torn lines, derived status, lock, safe run ids."""

import json

import pytest

from cvdd.runs import RunDir, is_alive, list_runs, read_events, resolve_run, run_status
from cvdd.utils import CvddError


def test_events_round_trip_and_torn_line(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1, "data": {"dataset": "builtin"}})
    assert (rd.path / "config.json").is_file()
    rd.append_event("run_start", attempt=1)
    rd.append_event("stage_start", "squeeze")
    rd.progress("squeeze", 1, 10, {"loss": 1.0}, force=True)
    with open(rd.path / "events.jsonl", "a") as f:
        f.write('{"seq": 99, "kind": "prog')  # a writer killed mid-line
    evs = read_events(rd.path)
    assert [e["kind"] for e in evs] == ["run_start", "stage_start", "progress"]
    assert [e["seq"] for e in evs] == [0, 1, 2]
    st = run_status(rd.path)
    assert st["status"] == "crashed" and st["stage"] == "squeeze" and st["step"] == 1


def test_status_follows_lock_and_run_end(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    assert run_status(rd.path)["status"] == "created"
    rd.acquire_lock()
    try:
        assert is_alive(rd.path) and run_status(rd.path)["status"] == "running"
        with pytest.raises(CvddError, match="already running"):
            RunDir(rd.path).acquire_lock()
        rd.append_event("run_end", status="stopped")
    finally:
        rd.release_lock()
    assert not is_alive(rd.path) and run_status(rd.path)["status"] == "stopped"


def test_runs_never_overwrite_each_other(tmp_path):
    paths = {RunDir.create(tmp_path, {"ipc": 1}).path for _ in range(5)}
    assert len(paths) == 5
    assert len(list_runs(tmp_path)) == 5


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", "", "x" * 200])
def test_run_ids_cannot_escape(tmp_path, bad):
    with pytest.raises(CvddError):
        resolve_run(tmp_path, bad)


def test_checkpoint_hash_and_corruption(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    rd.save_checkpoint("recover", {"step": 3}, "abc")
    assert rd.load_checkpoint("recover", "abc")["step"] == 3
    with pytest.raises(CvddError, match="different config"):
        rd.load_checkpoint("recover", "zzz")
    (rd.path / "checkpoints/recover.pt").write_bytes(b"garbage")
    with pytest.raises(CvddError, match="corrupt"):
        rd.load_checkpoint("recover", "abc")


def test_artifact_before_event(tmp_path):
    rd = RunDir.create(tmp_path, {"ipc": 1})
    rel = rd.save_snapshot("recover", 5, b"\x89PNG fake", rows=[0], cols=[0], cell=4, pad=1)
    ev = read_events(rd.path)[-1]
    assert ev["kind"] == "snapshot" and ev["path"] == rel and (rd.path / rel).is_file()
    assert not list(rd.path.rglob("*.tmp"))
    json.loads((rd.path / "config.json").read_text())

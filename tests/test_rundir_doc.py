"""docs/rundir.md against what the engine writes: its "Keys of" lines, read both ways.

Every "Keys of <target>: `k1`, `k2` (note), ..." line lists the keys of one part of a run-dir
file (or of one event kind); a key or target with a note in parentheses is written only in some
runs. A run of the `tiny` preset must write every key listed without a note, and no key that no
line lists.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from cvdd import jobs, layout

DOC = Path(__file__).resolve().parent.parent / "docs" / "rundir.md"
KEYS_LINE = re.compile(r"^Keys of (?P<target>.+?): (?P<keys>`.*)$")
KEY = re.compile(r"`([^`]+)`(\s*\([^)]*\))?")
# what the brief of this doc promises a reader at the least
MUST = {
    "result.json",
    "config.json",
    "config.json meta",
    "config.json meta.dataset",
    "job.json",
    "job.json as spawned",
    "squeeze/members.json members[]",
    "validate/students.json",
    "validate/students.json students.*",
    "validate/students.json eval_batch.*",
    "export/config.json",
    "event progress",
    "event run_start",
    "event stage_end",
}


def _doc_keys() -> dict[str, tuple[set[str], set[str], bool]]:
    """target -> (every key listed, the keys always written, whether the target is optional)."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = KEYS_LINE.match(line)
        if not m:
            continue
        tgt = m["target"]
        name = " ".join(re.sub(r"\([^)]*\)", "", tgt).replace("`", "").split())
        pairs = KEY.findall(m["keys"])
        assert pairs, line
        assert name not in out, f"two 'Keys of' lines for {name}"
        out[name] = ({k for k, _ in pairs}, {k for k, note in pairs if not note}, "(" in tgt)
    return out


def _resolve(doc, path: str) -> list[dict]:
    """The objects at `path` ("a.b", "xs[]" = each item of list xs, "*" = each value)."""
    objs = doc if isinstance(doc, list) else [doc]
    for seg in filter(None, path.split(".")):
        nxt = []
        for o in objs:
            if not isinstance(o, dict):
                continue
            if seg == "*":
                nxt += list(o.values())
            elif seg.endswith("[]"):
                nxt += o.get(seg[:-2]) or []
            elif seg in o:
                nxt.append(o[seg])
        objs = nxt
    return [o for o in objs if isinstance(o, dict)]


def _check(name: str, objs: list[dict], doc_keys: dict) -> list[str]:
    listed, required, optional = doc_keys[name]
    if not objs:
        return [] if optional else [f"{name}: documented, but the run wrote none"]
    problems = []
    written = set().union(*objs)
    if written - listed:
        problems.append(f"{name}: written, not documented: {sorted(written - listed)}")
    missing = {k for o in objs for k in required - set(o)}
    if missing:
        problems.append(f"{name}: documented as always written, missing: {sorted(missing)}")
    return problems


def _file_doc(run_dir: Path, rel: str):
    text = (run_dir / rel).read_text()
    return layout.parse_jsonl(text) if rel.endswith(".jsonl") else json.loads(text)


def test_every_documented_key_is_written_and_every_written_key_documented(tiny_run_dir):
    doc_keys = _doc_keys()
    assert not MUST - set(doc_keys), (
        f"docs/rundir.md lacks 'Keys of' lines for {MUST - set(doc_keys)}"
    )
    events = layout.read_events(tiny_run_dir)
    common = doc_keys["every event"][0]
    problems = []
    for name in doc_keys:
        head, _, rest = name.partition(" ")
        if name in ("every event", "job.json as spawned"):
            continue
        if head == "event":
            listed, required, opt = doc_keys[name]
            doc_keys[name] = (listed | common, required | common, opt)
            objs = [e for e in events if e["kind"] == rest]
        elif (tiny_run_dir / head).is_file():
            objs = _resolve(_file_doc(tiny_run_dir, head), rest)
        else:
            objs = []
        problems += _check(name, objs, doc_keys)
    assert not problems, "\n".join(problems)


def test_every_file_and_event_kind_the_run_writes_has_its_keys_documented(tiny_run_dir):
    targets = {name.split(" ")[0] for name in _doc_keys()}
    files = {
        p.relative_to(tiny_run_dir).as_posix()
        for p in tiny_run_dir.rglob("*.json*")
        if p.name != layout.EVENTS
    }
    assert files - targets == set(), f"JSON files without 'Keys of' lines: {files - targets}"
    kinds = {e["kind"] for e in layout.read_events(tiny_run_dir)}
    undocumented = {k for k in kinds if f"event {k}" not in _doc_keys()}
    assert not undocumented, f"event kinds without 'Keys of' lines: {undocumented}"


def test_job_json_as_spawned_by_the_jobs_module(tmp_path, monkeypatch):
    """The form `cvdd.jobs` writes before its worker starts (no real process is started)."""

    class _Proc:
        def __init__(self, args, **kwargs):
            self.args, self.pid = args, 4242

    monkeypatch.setattr(jobs.subprocess, "Popen", _Proc)
    jobs._spawn(tmp_path)
    job = json.loads((tmp_path / layout.JOB).read_text())
    assert job["pid"] == 4242
    problems = _check("job.json as spawned", [job], _doc_keys())
    assert not problems, "\n".join(problems)


def _png(shade: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_zipped_data_set_records_the_documented_archive_keys(tmp_path):
    """`meta.dataset.archive`, which the tiny run (a built-in set) does not have."""
    from cvdd.data import load_dataset

    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for c, cls in enumerate(("cat", "dog")):
            for i in range(4):
                zf.writestr(f"shapes/{cls}/{i}.png", _png(40 * c + 10 * i))
    ds = load_dataset(str(archive), None, None, tmp_path / "data")
    meta = {"meta": {"dataset": {"archive": ds.archive}}}
    name = "config.json meta.dataset.archive"
    problems = _check(name, _resolve(meta, "meta.dataset.archive"), _doc_keys())
    assert ds.archive and not problems, "\n".join(problems)


def test_no_table_cell_runs_past_300_characters():
    long = [
        cell.strip()[:60]
        for line in DOC.read_text().splitlines()
        if line.startswith("|")
        for cell in line.strip("|").split("|")
        if len(cell.strip()) > 300
    ]
    assert not long, f"table cells over 300 characters (move them under the table): {long}"

"""cvdd.layout: the one home of run-directory paths, and its tolerant readers."""

import ast
import os
import re
from pathlib import Path

from cvdd import layout

ROOT = Path(__file__).resolve().parent.parent


def test_parse_jsonl_skips_torn_foreign_and_keyless_lines():
    data = b'{"a": 1}\nnot json\n[1, 2]\n\xff\xfe\n{"kind": 3}\n{"kind": "x"}\n{"c": 3'
    assert layout.parse_jsonl(data) == [{"a": 1}, {"kind": 3}, {"kind": "x"}]
    assert layout.parse_jsonl(data, require="kind") == [{"kind": "x"}]
    assert layout.parse_jsonl(None) == [] and layout.parse_jsonl("") == []


def test_read_events_of_missing_or_unreadable_file(tmp_path):
    assert layout.read_events(tmp_path) == []
    (tmp_path / layout.EVENTS).mkdir()  # a folder where the file should be
    assert layout.read_events(tmp_path) == []


def test_tail_reads_only_appended_lines_and_restarts_on_replace(tmp_path):
    p = tmp_path / "e.jsonl"
    tail = layout.JsonlTail(p, require="kind")
    assert tail.read() == []
    p.write_bytes(b'{"kind": "a"}\n{"kind": "b"')  # the second line is still being written
    assert [e["kind"] for e in tail.read()] == ["a"]
    with open(p, "ab") as f:
        f.write(b'}\n{"no_kind": 1}\n')
    assert [e["kind"] for e in tail.read()] == ["a", "b"]
    offset = tail._offset
    assert tail.read() and tail._offset == offset  # nothing new: nothing parsed
    tmp = tmp_path / "e.tmp"  # another tool replaces the file with a shorter one
    tmp.write_bytes(b'{"kind": "z"}\n')
    os.replace(tmp, p)
    assert [e["kind"] for e in tail.read()] == ["z"]
    p.unlink()
    assert tail.read() == []


def _path_literals(tree: ast.AST) -> list[str]:
    known = {
        v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and k != "STAGES"
    }
    known.discard(layout.EXPORT)  # "export" is also an ordinary word
    inside_export = {  # the export folder has its own config.json: layout.export_path names it
        id(a)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "export_path"
        for a in n.args
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and n.value in known
        and id(n) not in inside_export
    ]


def test_no_module_spells_a_run_dir_path_but_layout():
    """Every run-dir path comes from cvdd.layout (docs and messages may still name them)."""
    offenders = {}
    for folder in ("cvdd", "app"):
        for f in (ROOT / folder).rglob("*.py"):
            if f.name == "layout.py":
                continue
            hits = _path_literals(ast.parse(f.read_text()))
            if hits:
                offenders[str(f.relative_to(ROOT))] = hits
    assert not offenders, f"use cvdd.layout names instead of: {offenders}"


def test_stages_defined_once():
    for f in list((ROOT / "cvdd").rglob("*.py")) + list((ROOT / "app").rglob("*.py")):
        if f.name != "layout.py":
            assert not re.search(r"^STAGES = \(", f.read_text(), re.M), f

"""The New run page's drop zone (app/upload.py): the archive is saved once, checked by
the engine in its own process, and its summary or its one-line refusal is shown."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import upload


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_save_and_check_a_dropped_zip(tmp_path):
    data = _zip_bytes({f"{c}/{i}.png": _png(i) for c in ("a", "b") for i in range(6)})
    path = upload.save_upload(data, tmp_path, "my photos (1).zip")
    assert path.parent.parent.name == "_uploads" and path.read_bytes() == data
    assert path.name == "my_photos_1.zip"  # the file's own name (made safe) names its runs
    mtime = path.stat().st_mtime_ns
    again = upload.save_upload(data, tmp_path, "my photos (1).zip")
    assert again == path and path.stat().st_mtime_ns == mtime
    assert upload.save_upload(data, tmp_path, "../../x.zip").parent == path.parent
    summary, error = upload.run_check(path, tmp_path, preset="tiny", ipc=2, estimate=False)
    assert error is None and summary["classes"] == ["a", "b"] and summary["held_out"]
    assert summary["extracted_to"].startswith(str(tmp_path.resolve() / "_data"))
    bad = upload.save_upload(_zip_bytes({"a/1.png": _png(1), "../b/2.png": _png(2)}), tmp_path)
    summary, error = upload.run_check(bad, tmp_path, preset="tiny", ipc=2, estimate=False)
    assert summary is None and "climbs out" in error and "\n" not in error


def _page(summary):
    from app.upload import show_summary

    show_summary(summary)


def test_the_summary_renders():
    summary = {
        "classes": ["cat", "dog"],
        "train_per_class": [8, 3],
        "test_per_class": [2, 1],
        "image_size": 32,
        "channels": 3,
        "size_rule": "the shorter side of the commonest size (32x32); others resized",
        "sizes_found": {"32x32": 10, "40x30": 4},
        "test_split": {"source": "held_out", "fraction": 0.2, "seed": 0},
        "held_out": True,
        "skipped": {"not an image (.txt)": 2},
        "estimate": {"total_s": 600.0, "stages": {"squeeze": 300.0}, "basis": "timed"},
        "ipc_problem": "class 'dog' has 3 training image(s), fewer than IPC 5",
    }
    at = AppTest.from_function(_page, args=(summary,), default_timeout=60).run()
    assert not at.exception
    line = at.markdown[0].value
    assert "**2** classes" in line and "**11** training images" in line
    assert "**3** test images" in line and "about **10.0 min** here" in line
    text = " ".join(c.value for c in at.caption)
    assert "held out 20%" in text and "not an image (.txt)" in text and "`40x30` (4)" in text
    assert "fewer than IPC 5" in at.error[0].value

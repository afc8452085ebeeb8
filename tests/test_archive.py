"""A zipped ImageFolder as a data set, and hostile archives: one-line errors, nothing written
outside the extraction folder, nothing half-written left (archives are made here)."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvdd.config import from_preset
from cvdd.data import DataError, load_dataset
from cvdd.data.archive import MANIFEST, Limits, prepare_archive
from cvdd.datacheck import check_data, format_summary


def _png(seed: int, size=(32, 32), mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def _zip(path: Path, files: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def _classes(n_per_class=6, classes=("cat", "dog", "fox"), prefix="", seed=0) -> dict[str, bytes]:
    return {
        f"{prefix}{c}/{i:03d}.png": _png(1000 * seed + 100 * k + i)
        for k, c in enumerate(classes)
        for i in range(n_per_class)
    }


def _refused(tmp_path: Path, files: dict, match: str, links=(), limits=None) -> None:
    """The archive is refused with a one-line error, and the data area holds nothing."""
    archive = _zip(tmp_path / "bad.zip", files, links)
    data_dir = tmp_path / "runs" / "_data"
    with pytest.raises(DataError, match=match) as e:
        prepare_archive(archive, data_dir, limits)
    assert "\n" not in str(e.value) and "Fix:" in str(e.value)
    left = list(data_dir.rglob("*")) if data_dir.exists() else []
    assert left == [], left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"] + (
        ["runs"] if (tmp_path / "runs").exists() else []
    )


def test_flat_zip_in_a_top_folder_gets_a_seeded_held_out_split_and_is_reused(tmp_path):
    files = _classes(10, prefix="photos/")
    files |= {"photos/notes.txt": b"hi", "__MACOSX/photos/._a.png": b"x", "photos/x.png": b""}
    archive = _zip(tmp_path / "photos.zip", files)
    folder, doc = prepare_archive(archive, tmp_path / "_data")
    assert doc["classes"] == ["cat", "dog", "fox"] and not doc["reused"]
    assert doc["train_per_class"] == [8, 8, 8] and doc["test_per_class"] == [2, 2, 2]
    assert doc["test_split"] == {"source": "held_out", "fraction": 0.2, "seed": 0}
    assert doc["skipped"] == {
        "not an image (.txt)": 1,
        "hidden or system file": 1,
        "not in a class folder": 1,
    }
    assert sorted(p.name for p in (folder / "test" / "cat").iterdir()) != []
    again_folder, again = prepare_archive(archive, tmp_path / "_data")
    assert again_folder == folder and again["reused"]
    assert again["created_t"] == doc["created_t"]  # not extracted twice
    ds = load_dataset(archive, data_dir=tmp_path / "_data")
    assert ds.layout == "imagefolder_zip" and ds.class_names == ["cat", "dog", "fox"]
    assert (len(ds.train), len(ds.test), ds.image_size, ds.in_channels) == (24, 6, 32, 3)


def test_train_and_test_folders_are_the_split(tmp_path):
    files = _classes(4, prefix="train/") | _classes(2, prefix="val/")
    files |= _classes(3, prefix="test/")
    folder, doc = prepare_archive(_zip(tmp_path / "a.zip", files), tmp_path / "_data")
    assert doc["train_per_class"] == [4, 4, 4] and doc["test_per_class"] == [3, 3, 3]
    assert doc["test_split"] == {"source": "archive (test/)"}
    assert doc["skipped"] == {"val/ not used (test/ is the test split)": 6}
    assert (folder / "train" / "dog" / "003.png").is_file()


def test_mixed_sizes_and_modes_get_one_size_and_channel_count(tmp_path):
    files = {f"a/{i}.png": _png(i, (32, 32)) for i in range(5)}
    files |= {f"b/{i}.png": _png(i, (28, 28), "L") for i in range(4)}
    files |= {"b/wide.png": _png(9, (48, 40))}
    archive = _zip(tmp_path / "mixed.zip", files)
    cfg = from_preset("tiny", [f"data.dataset={archive}", "ipc=2"])
    s = check_data(cfg, tmp_path / "runs", estimate=False)
    assert (s["image_size"], s["channels"]) == (32, 3)
    assert s["sizes_found"] == {"32x32": 5, "28x28": 4, "48x40": 1}
    assert s["modes_found"] == {"RGB": 6, "L": 4}
    assert "commonest size" in s["size_rule"]
    text = "\n".join(format_summary(s))
    assert "32 x 32 px, 3 channel(s)" in text and "held out" in text
    gray_files = {f"{c}/{i}.png": _png(i, (28, 28), "L") for c in "ab" for i in range(3)}
    gray = _zip(tmp_path / "gray.zip", gray_files)
    g = load_dataset(gray, data_dir=tmp_path / "runs" / "_data")
    assert (g.image_size, g.in_channels) == (28, 1)


def test_a_class_smaller_than_the_ipc_is_named(tmp_path):
    files = _classes(12) | {f"owl/{i}.png": _png(900 + i) for i in range(5)}
    cfg = from_preset("tiny", [f"data.dataset={_zip(tmp_path / 'a.zip', files)}", "ipc=8"])
    s = check_data(cfg, tmp_path / "runs", estimate=False)
    assert "'owl' has 4 training image(s)" in s["ipc_problem"]
    assert "fewer than IPC 8" in s["ipc_problem"] and "--set ipc=4" in s["ipc_problem"]


@pytest.mark.parametrize(
    "name, match",
    [
        ("../evil.png", "climbs out"),
        ("cat/../../evil.png", "climbs out"),
        ("/abs/evil.png", "absolute"),
        ("C:/evil.png", "absolute"),
        ("cat\\..\\evil.png", "absolute or non-portable"),
    ],
)
def test_entries_that_climb_out_are_refused(tmp_path, name, match):
    _refused(tmp_path, _classes(3) | {name: _png(1)}, match)


def test_a_link_entry_is_refused(tmp_path):
    _refused(tmp_path, _classes(3), "symbolic link", links=("cat/link.png",))


def test_a_bomb_is_refused_from_the_central_directory(tmp_path):
    _refused(tmp_path, _classes(3) | {"cat/zeros.bmp": bytes(8 * 2**20)}, "zip bomb")


def test_an_entry_larger_than_it_declares_is_refused_while_streaming(tmp_path):
    archive = _zip(tmp_path / "bad.zip", _classes(3) | {"cat/big.png": _png(7, (64, 64))})
    raw = bytearray(archive.read_bytes())
    at = raw.rfind(b"cat/big.png") - 46  # its central directory record
    assert raw[at : at + 4] == b"PK\x01\x02"
    raw[at + 24 : at + 28] = struct.pack("<I", 100)  # declares 100 bytes uncompressed
    archive.write_bytes(bytes(raw))
    data_dir = tmp_path / "runs" / "_data"
    with pytest.raises(DataError, match="big.png") as e:
        prepare_archive(archive, data_dir)
    assert "\n" not in str(e.value)
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []  # nothing half-written


@pytest.mark.parametrize(
    "limits, match",
    [(Limits(files=10), "more than the cap of 10"), (Limits(bytes=5000), "more than the cap")],
)
def test_more_files_or_bytes_than_the_cap_are_refused(tmp_path, limits, match):
    _refused(tmp_path, _classes(6), match, limits=limits)


def test_corrupt_and_truncated_images_are_named(tmp_path):
    files = _classes(3) | {"dog/cut.png": _png(5)[:200], "fox/junk.jpg": b"not a jpeg at all"}
    _refused(tmp_path, files, r"2 corrupt or truncated image\(s\): dog/cut.png .*fox/junk.jpg")


def test_fewer_than_two_classes_are_refused(tmp_path):
    _refused(tmp_path, _classes(4, classes=("cat",)) | {"readme.md": b"x"}, "1 class folder")


def test_a_damaged_zip_is_refused(tmp_path):
    archive = _zip(tmp_path / "bad.zip", _classes(3))
    data = archive.read_bytes()
    archive.write_bytes(data[:30] + bytes(200) + data[230:])  # the first entry's data
    with pytest.raises(DataError, match="damaged|corrupt") as e:
        prepare_archive(archive, tmp_path / "_data")
    assert (
        "\n" not in str(e.value)
        and not (tmp_path / "_data").exists()
        or not any((tmp_path / "_data").iterdir())
    )


def test_manifest_is_written_last_and_an_unfinished_folder_is_redone(tmp_path):
    archive = _zip(tmp_path / "a.zip", _classes(3))
    folder, _ = prepare_archive(archive, tmp_path / "_data")
    (folder / MANIFEST).unlink()  # as if a crash had hit before the rename
    again, doc = prepare_archive(archive, tmp_path / "_data")
    assert again == folder and not doc["reused"] and (folder / MANIFEST).is_file()
    assert json.loads((folder / MANIFEST).read_text())["sha256"] == doc["sha256"]


def test_cli_check_data_prints_the_summary_and_refuses_with_one_line(tmp_path, cli):
    archive = _zip(tmp_path / "photos.zip", _classes(6, prefix="photos/"))
    out = cli("check-data", str(archive), "--runs-dir", str(tmp_path / "runs"), "--no-estimate")
    assert out.returncode == 0, out.stderr
    assert "3 classes" in out.stdout and "held out: 20% of each class, seed 0" in out.stdout
    assert (tmp_path / "runs" / "_data").is_dir()
    bad = _zip(tmp_path / "bad.zip", _classes(3) | {"../x.png": _png(1)})
    out = cli("check-data", str(bad), "--runs-dir", str(tmp_path / "runs2"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "climbs out" in out.stderr
    assert not (tmp_path / "runs2").exists()
    js = cli("check-data", str(archive), "--runs-dir", str(tmp_path / "runs"), "--json")
    summary = json.loads(js.stdout.strip().splitlines()[-1])
    assert summary["estimate"]["total_s"] > 0 and set(summary["estimate"]["stages"]) >= {
        "squeeze",
        "recover",
        "validate",
    }


@pytest.mark.slow
def test_cli_runs_a_zip_end_to_end(tmp_path, cli):
    archive = _zip(tmp_path / "photos.zip", _classes(8, prefix="photos/"))
    out = cli("run", "--preset", "tiny", "--data", str(archive), "--runs-dir", str(tmp_path))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "held out: 20%" in out.stdout
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    meta = json.loads((run_dir / "config.json").read_text())["meta"]["dataset"]
    assert meta["layout"] == "imagefolder_zip" and meta["num_classes"] == 3
    assert meta["archive"]["test_split"]["source"] == "held_out"
    assert (run_dir / "export" / "teacher.pt2").is_file()
    # the same bytes under another name (an upload) find the committee and its priors cached;
    # other images at the run's zip's own path (same classes and counts) do not
    (tmp_path / "copy.zip").write_bytes(archive.read_bytes())
    _zip(archive, _classes(8, prefix="photos/", seed=7))
    for path, cached in ((tmp_path / "copy.zip", ["squeeze", "prior"]), (archive, [])):
        js = cli("check-data", str(path), "--preset", "tiny", "--runs-dir", str(tmp_path), "--json")
        estimate = json.loads(js.stdout.strip().splitlines()[-1])["estimate"]
        assert estimate["cached"] == cached, (path, estimate)
        assert all(estimate["stages"][s] == 0 for s in cached)

"""A zipped ImageFolder as a data set: read from the central directory, checked, extracted.

`prepare_archive(zip, data_dir)` returns an ImageFolder tree (`train/<class>/`, `test/<class>/`)
under `data_dir/<sha256[:16]>/`, keyed by the archive's content, so a second use of the same zip
reuses it. Accepted: class folders at the top, or under `train/` plus `test/` (or `val/`), either
optionally inside one top folder. Without a test split, a seeded held-out one is made (the same
for every run on this archive; `manifest.json` records it, and each run copies it into its meta).

Hostile archives are refused with a one-line error before anything is written where that is
possible (names that climb out, links, sizes from the central directory), and otherwise while
streaming (bytes beyond the declared size or the cap, corrupt or truncated images); either way
the partly written folder is removed, so nothing half-written is left and nothing outside the
extraction folder is ever written. Images are opened by PIL with a fixed list of raster formats
only, so no plug-in that runs an external program (EPS) is ever reached; no entry is executed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
import warnings
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .base import DataError
from .images import _GRAY_MODES, IMAGE_EXTENSIONS

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
HELD_OUT = 0.2  # fraction of each class held out as the test split when the zip has none
SPLIT_SEED = 0  # the held-out split's seed: fixed, so every run on one archive shares it
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")  # PIL decoders we allow
_SYSTEM = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What an archive may hold; past any of these it is refused (stated in the error)."""

    files: int = 200_000  # entries in the central directory
    bytes: int = 4 * 2**30  # total uncompressed size
    file_bytes: int = 64 * 2**20  # one entry's uncompressed size
    ratio: float = 100.0  # uncompressed / compressed, for entries over ratio_min_bytes
    ratio_min_bytes: int = 2**20
    pixels: int = 40_000_000  # one image's width x height


def _refuse(archive: Path | str, problem: str, fix: str) -> DataError:
    return DataError(f"{Path(archive).name}: {problem}. Fix: {fix}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _safe_parts(archive: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path parts; refuses names that are absolute, climb out, or are links."""
    name = info.filename
    fix = "rebuild the zip from the image folder (e.g. `zip -r photos.zip photos/`)"
    if "\\" in name or "\0" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, f"entry {name!r} has an absolute or non-portable path", fix)
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, f"entry {name!r} climbs out of the folder ('..')", fix)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _refuse(archive, f"entry {name!r} is a symbolic link", fix + " without links")
    if info.flag_bits & 0x1:
        raise _refuse(archive, f"entry {name!r} is encrypted", "zip the images without a password")
    return parts


def _check_sizes(archive: Path, infos: list[zipfile.ZipInfo], lim: Limits) -> None:
    """A bomb or an oversized archive, from the central directory alone (nothing written)."""
    if len(infos) > lim.files:
        raise _refuse(
            archive,
            f"holds {len(infos)} entries, more than the cap of {lim.files}",
            "distil a subset (fewer images per class)",
        )
    total = sum(i.file_size for i in infos)
    if total > lim.bytes:
        raise _refuse(
            archive,
            f"expands to {_mib(total)}, more than the cap of {_mib(lim.bytes)}",
            "distil a subset, or smaller images",
        )
    for i in infos:
        ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size > lim.file_bytes or (
            i.file_size > lim.ratio_min_bytes and ratio > lim.ratio
        ):
            raise _refuse(
                archive,
                f"entry {i.filename!r} expands to {_mib(i.file_size)} from "
                f"{_mib(i.compress_size)} (a zip bomb; caps: {_mib(lim.file_bytes)} a file, "
                f"ratio {lim.ratio:g})",
                "zip the image files themselves",
            )


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p.lower() in _SYSTEM for p in parts)


def _strip_top(files: list[tuple[str, ...]]) -> tuple[list[tuple[str, ...]], str]:
    """Drop one folder that holds everything (`photos/cat/1.png` -> `cat/1.png`)."""
    tops = {p[0] for p in files}
    if len(tops) == 1 and all(len(p) >= 2 for p in files) and any(len(p) >= 3 for p in files):
        top = next(iter(tops))
        if top.lower() not in ("train", "test", "val"):
            return [p[1:] for p in files], top
    return files, ""


def _assign(parts: tuple[str, ...], has_train: bool, test_dir: str) -> tuple[str, str] | str:
    """(split, class) of an image entry, or the reason it is skipped."""
    if not has_train:
        return ("train", parts[0]) if len(parts) >= 2 else "not in a class folder"
    top = parts[0].lower()
    if top == "train" or top == test_dir:
        if len(parts) < 3:
            return f"directly in {parts[0]}/, not in a class folder"
        return ("train" if top == "train" else "test", parts[1])
    if top in ("test", "val"):
        return f"{parts[0]}/ not used ({test_dir}/ is the test split)"
    return "outside train/ and test/"


def plan_entries(archive: Path, infos: list[zipfile.ZipInfo]) -> dict:
    """Where each image entry goes: {"entries": [(info, split, class, rel)], "skipped": ...}."""
    files, skipped = [], {}
    by_parts: dict[tuple[str, ...], zipfile.ZipInfo] = {}
    for info in infos:
        parts = _safe_parts(archive, info)
        if info.is_dir() or not parts:
            continue
        if parts in by_parts:
            raise _refuse(archive, f"lists {info.filename!r} twice", "rebuild the zip")
        by_parts[parts] = info
        if _ignored(parts):
            skipped.setdefault("hidden or system file", []).append(info.filename)
        elif os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            ext = os.path.splitext(parts[-1])[1].lower() or "no extension"
            skipped.setdefault(f"not an image ({ext})", []).append(info.filename)
        else:
            files.append(parts)
    files, top = _strip_top(files)
    tops = {p[0].lower() for p in files if len(p) >= 3}
    has_train = "train" in tops
    test_dir = "test" if "test" in tops else "val" if "val" in tops else ""
    entries = []
    for parts in files:
        where = _assign(parts, has_train, test_dir)
        original = by_parts[(top, *parts) if top else parts]
        if isinstance(where, str):
            skipped.setdefault(where, []).append(original.filename)
            continue
        rest = parts[2:] if has_train else parts[1:]
        entries.append((original, where[0], where[1], "/".join(rest)))
    return {"entries": entries, "skipped": skipped, "top": top, "test_dir": test_dir}


def _held_out(entries: list, classes: list[str]) -> list:
    """Move a seeded HELD_OUT fraction of each class (at least one of 2+) to the test split."""
    out = []
    for ci, cls in enumerate(classes):
        mine = sorted((e for e in entries if e[2] == cls), key=lambda e: e[3])
        n_test = max(1, round(HELD_OUT * len(mine))) if len(mine) >= 2 else 0
        test = set(np.random.default_rng([SPLIT_SEED, ci]).permutation(len(mine))[:n_test].tolist())
        out += [(e[0], "test" if j in test else "train", e[2], e[3]) for j, e in enumerate(mine)]
    return out


def _copy(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: list):
    """Stream one entry to `dest`, never past its declared size nor the archive's byte cap."""
    written = 0
    with zf.open(info) as src, open(dest, "xb") as dst:  # "x": never through an existing link
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > info.file_size or budget[0] < 0:
                raise _refuse(
                    archive,
                    f"entry {info.filename!r} expands beyond its declared size or the cap "
                    "(a zip bomb)",
                    "zip the image files themselves",
                )
            dst.write(chunk)


def _inspect(path: Path, lim: Limits) -> tuple[tuple[int, int], str]:
    """(size, mode) of a fully decoded image; raises on a corrupt, truncated or huge one."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=FORMATS) as im:
            if im.size[0] * im.size[1] > lim.pixels:
                raise ValueError(f"{im.size[0]}x{im.size[1]} px, more than {lim.pixels} pixels")
            size, mode = im.size, im.mode
            im.draft(None, (64, 64))  # JPEG: decode at a fraction of the size, still reads all
            im.load()
    return size, mode


def _extract(archive: Path, zf: zipfile.ZipFile, entries: list, tmp: Path, lim: Limits) -> dict:
    """Write every entry under `tmp` and decode it; sizes and modes found, or DataError."""
    root, budget = tmp.resolve(), [lim.bytes]
    sizes, modes, bad = {}, {}, []
    for info, split, cls, rel in entries:
        dest = tmp / split / cls / rel
        if not dest.resolve().is_relative_to(root):
            raise _refuse(archive, f"entry {info.filename!r} leaves the folder", "rebuild the zip")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            _copy(archive, zf, info, dest, budget)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise _refuse(
                archive, f"entry {info.filename!r} is damaged ({e})", "re-create the zip"
            ) from None
        try:
            (w, h), mode = _inspect(dest, lim)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Warning) as e:
            bad.append(f"{info.filename} ({str(e)[:80]})")
            continue
        sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        modes[mode] = modes.get(mode, 0) + 1
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _refuse(
            archive,
            f"{len(bad)} corrupt or truncated image(s): {'; '.join(bad[:3])}{more}",
            "replace or delete them in the zip",
        )
    return {"sizes": sizes, "modes": modes}


def _manifest(archive: Path, sha: str, plan: dict, entries: list, found: dict, lim: Limits):
    classes = sorted({e[2] for e in entries})
    count = {
        split: [sum(e[1] == split and e[2] == c for e in entries) for c in classes]
        for split in ("train", "test")
    }
    return {
        "version": MANIFEST_VERSION,
        "sha256": sha,
        "archive": archive.name,
        "created_t": time.time(),
        "top_folder": plan["top"],
        "classes": classes,
        "train_per_class": count["train"],
        "test_per_class": count["test"],
        "test_split": (
            {"source": f"archive ({plan['test_dir']}/)"}
            if plan["test_dir"]
            else {"source": "held_out", "fraction": HELD_OUT, "seed": SPLIT_SEED}
        ),
        "skipped": {k: len(v) for k, v in plan["skipped"].items()},
        "skipped_examples": {k: v[:3] for k, v in plan["skipped"].items()},
        **found,
        "limits": asdict(lim),
    }


def read_manifest(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("version") == MANIFEST_VERSION else None


def _build(archive: Path, sha: str, tmp: Path, lim: Limits) -> None:
    """The whole extraction into `tmp` (removed by the caller on any error)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise _refuse(archive, f"is not a readable zip ({e})", "re-create the zip") from None
    with zf:
        infos = zf.infolist()
        _check_sizes(archive, infos, lim)
        plan = plan_entries(archive, infos)
        entries = plan["entries"]
        classes = sorted({e[2] for e in entries})
        if len(classes) < 2:
            raise _refuse(
                archive,
                f"holds {len(classes)} class folder(s) with images, a data set needs 2 or more",
                "put each class's images in its own folder (cat/*.png, dog/*.png, ...)",
            )
        if plan["test_dir"]:
            in_split = {s: {e[2] for e in entries if e[1] == s} for s in ("train", "test")}
            extra = sorted(in_split["test"] - in_split["train"])
            if extra:
                raise _refuse(
                    archive,
                    f"{plan['test_dir']}/{extra[0]} has no counterpart in train/",
                    "use the same class folder names in both splits",
                )
        else:
            entries = _held_out(entries, classes)
        tmp.mkdir(parents=True)
        found = _extract(archive, zf, entries, tmp, lim)
    doc = _manifest(archive, sha, plan, entries, found, lim)
    (tmp / MANIFEST).write_text(json.dumps(doc, indent=1))


def prepare_archive(archive: str | Path, data_dir: str | Path, limits: Limits | None = None):
    """(ImageFolder folder, manifest) for a zipped image folder, extracting it on first use."""
    archive, data_dir, lim = Path(archive), Path(data_dir), limits or Limits()
    sha = sha256_file(archive)
    final = data_dir / sha[:16]
    doc = read_manifest(final)
    if doc is not None and doc.get("sha256") == sha:
        return final, {**doc, "reused": True}
    tmp = data_dir / f".{sha[:16]}.{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _build(archive, sha, tmp, lim)  # creates data_dir only once the archive passed
        if final.exists():  # an unreadable leftover (the manifest is written last)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except OSError as e:
        doc = read_manifest(final)
        if doc is not None and doc.get("sha256") == sha:  # another process finished first
            return final, {**doc, "reused": True}
        raise _refuse(archive, f"could not be extracted ({e})", f"check {data_dir}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, {**read_manifest(final), "reused": False}


def choose_format(doc: dict, image_size: int | None) -> tuple[int, int, str]:
    """(size, channels, why): one resolution and channel count for every image of the set."""
    modes, sizes = doc.get("modes", {}), doc.get("sizes", {})
    channels = 1 if modes and set(modes) <= _GRAY_MODES else 3
    if image_size:
        return int(image_size), channels, "as set (data.image_size)"
    common = max(sizes, key=lambda s: sizes[s]) if sizes else "32x32"
    w, h = (int(v) for v in common.split("x"))
    side = min(w, h)
    if len(sizes) == 1 and w == h and side <= 64:
        return side, channels, "every image's size"
    if side <= 64:
        return side, channels, f"the shorter side of the commonest size ({common}); others resized"
    return 224, channels, "224 px for images over 64 px (--set data.image_size=N to change)"

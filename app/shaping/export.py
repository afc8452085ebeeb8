"""The export download: a run's export folder zipped in memory (no streamlit, no torch)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path


def zip_folder(folder: str | Path, arc_root: str = "") -> bytes:
    """Zip a folder (recursively) into memory; paths inside start with `arc_root/`."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(folder).as_posix()
                z.write(p, f"{arc_root}/{rel}" if arc_root else rel)
    return buf.getvalue()

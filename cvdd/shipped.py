"""The shipped committee: assets/committee/ holds five Fashion-MNIST members (fp16 weights) and
manifest.json (their widths, top-1, sha256 sums, priors, and the command that made them, which is
assets/make_committee.py). Read here, checked before use: a file whose sha256 differs from the
manifest's, a manifest that is missing, or a run whose data set or widths differ from the ones the
members were trained for stops with a message naming the fix. The squeeze stage copies the
members into the committee cache (cvdd/stages/squeeze.py)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from .utils import CvddError

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "committee"
MANIFEST = "manifest.json"
_FIX = (
    "re-clone the repository (or `git checkout assets/committee`), rebuild the files with "
    "`python assets/make_committee.py`, or train the committee in the run instead with "
    "--set squeeze.source=train"
)


def load_manifest(folder: Path | None = None) -> dict:
    """The shipped committee's manifest.json; CvddError naming the fix when it is unusable."""
    path = (folder or SHIPPED_DIR) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc.get("members"), dict) or not isinstance(doc.get("data"), dict):
            raise ValueError("no 'members' or 'data' section")
    except (OSError, ValueError, AttributeError) as e:  # AttributeError: not a JSON object
        raise CvddError(
            f"the shipped committee's {path} is missing or unreadable ({e}); {_FIX}"
        ) from e
    return doc


def load_member(name: str, manifest: dict, folder: Path | None = None):
    """A shipped member as the registry's model (fp32, CPU), after checking its sha256.

    Returns (model, sha256). The bytes that were hashed are the bytes loaded, and they are
    loaded with weights_only=True, so a swapped file can neither run code nor go unnoticed.
    """
    from .models import create_model

    entry = manifest["members"].get(name)
    if entry is None:
        raise CvddError(
            f"{name!r} is not in the shipped committee {sorted(manifest['members'])}; choose "
            "squeeze.members among them, or train it with --set squeeze.source=train",
            field="squeeze.members",
        )
    path = (folder or SHIPPED_DIR) / entry["file"]
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CvddError(f"shipped weights {path} are missing ({e.strerror}); {_FIX}") from e
    sha = hashlib.sha256(blob).hexdigest()
    if sha != entry["sha256"]:
        raise CvddError(
            f"shipped weights {path} are corrupt (sha256 {sha[:16]}..., manifest.json says "
            f"{entry['sha256'][:16]}...); {_FIX}"
        )
    d = manifest["data"]
    model = create_model(name, d["num_classes"], d["in_channels"], width=entry["width"])
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        # stored as fp16 to keep the repository small; every stage computes in fp32
        model.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        )
    except Exception as e:  # the hash matched, so the model code changed since the file was made
        raise CvddError(
            f"shipped weights {path} no longer fit the registry's {name} ({str(e)[:200]}); "
            "rebuild them with `python assets/make_committee.py`, or --set squeeze.source=train"
        ) from e
    return model, sha


def check_fits(manifest: dict, data, s) -> None:
    """The run's data set (`data`) and squeeze settings (`s`) must be those the shipped members
    were trained for."""
    d = manifest["data"]
    ours = [list(data.class_names), data.image_size, data.in_channels]
    if ours != [d["class_names"], d["image_size"], d["in_channels"]]:
        raise CvddError(
            f"the shipped committee was trained on {d['name']} ({d['num_classes']} classes, "
            f"{d['image_size']} px, {d['in_channels']} channel); data set {data.name} "
            f"({data.num_classes} classes, {data.image_size} px, {data.in_channels} channels) "
            "differs: train the committee with --set squeeze.source=train",
            field="squeeze.source",
        )
    for name in s.members:
        entry = manifest["members"].get(name)
        if entry is not None and s.width_of(name) != entry["width"]:
            raise CvddError(
                f"the shipped {name} has width {entry['width']}, squeeze.width(s) asks for "
                f"{s.width_of(name)}: drop that override, or --set squeeze.source=train",
                field="squeeze.widths",
            )

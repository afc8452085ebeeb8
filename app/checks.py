"""New-run form checks, without widgets: every form value goes through cvdd.config, and IPC is
checked against the chosen data's images per class, so Start is only enabled for a run that
can get past its first seconds. Data sets are looked at cheaply (no torch, no image decoding):
the built-in set's labels, the known CIFAR splits, file counts of an ImageFolder tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from app import shaping
from cvdd.config import PRESETS, RunConfig, from_preset
from cvdd.data_layouts import LAYOUTS, layout_problem
from cvdd.utils import CvddError

BUILTIN_NPZ = Path(__file__).resolve().parent.parent / "assets" / "fashion_mnist_subset.npz"
# train images per class of the official "python version" releases (equal for every class)
CIFAR_PER_CLASS = {"data_batch_1": ("CIFAR-10", 5000), "train": ("CIFAR-100", 500)}
SCAN_LIMIT = 300_000  # files counted at most in a folder tree; a larger one is checked at init
SEED_MAX = 2**32 - 1  # numpy's seeds stop here

# config key a CvddError names (`e.field`) -> the form field whose slot shows the message;
# other keys (e.g. set under "Extra overrides") show above the Start button
ERROR_FIELDS = {
    "ipc": "ipc",
    "seed": "seed",
    "device": "device",
    "data.dataset": "dataset",
    "squeeze.members": "members",
    "recover.num_experts": "num_experts",
    "recover.temperature": "temperature",
    "recover.voter": "voter",
    "recover.schedule": "schedule",
    "recover.fixed_members": "schedule",
    "recover.iterations": "iterations",
    "relabel.teacher": "teacher",
}
NUMBERS = ("ipc", "iterations", "seed", "num_experts", "temperature")
# form field -> (label, smallest, largest or None): typed as text, so `1e3` or `10.5` arrive as
# typed and are refused, never cut to 1 or 10 (a number box would parse them that way)
WHOLE = {
    "ipc": ("IPC", 1, None),
    "iterations": ("Recover iterations", 1, None),
    "seed": ("The seed", 0, 2**32 - 1),
    "num_experts": ("Experts per image N", 1, None),
}
_WHOLE = re.compile(r"[+-]?[0-9]+")
# config keys as the form labels them, for messages shown on a page instead of the CLI
LABELS = {
    "ipc": "IPC",
    "seed": "Seed",
    "device": "Device",
    "data.dataset": "Data set",
    "squeeze.members": "Committee members",
    "recover.num_experts": "Experts per image N",
    "recover.temperature": "Temperature T",
    "recover.iterations": "Recover iterations",
    "recover.voter": "Voter",
    "recover.schedule": "Committee schedule",
    "relabel.teacher": "Relabel teacher",
}
_SET = re.compile(r"\(?--set '?([\w.]+)=([^\s',;)]+)'?\)?")


def page_terms(msg: str) -> str:
    """An engine message in the page's words: `--set recover.iterations=300` (CLI advice)
    becomes `Recover iterations = 300`, and the config keys the form shows become its labels."""

    def advice(m: re.Match) -> str:
        if m.string[: m.start()].rstrip().endswith(m[1]):  # "lower ipc (--set ipc=500)"
            return f"to {m[2]}"
        return f"{LABELS.get(m[1], m[1])} = {m[2]}"

    msg = _SET.sub(advice, msg)
    for key in sorted(LABELS, key=len, reverse=True):
        msg = re.sub(rf"(?<![\w.]){re.escape(key)}(?![\w.])", LABELS[key], msg)
    return msg


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def check_config(
    build: Callable[[list[str]], RunConfig], overrides: list[str]
) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {form field: message}). Every error is found, not only the first: an override
    that cvdd.config rejects is dropped (its key falls back to the preset's value) and the
    rest is checked again, so three bad fields show three messages. The config returned is
    then the fallback one: callers must not start it while there are errors."""
    errors: dict[str, str] = {}
    todo = list(overrides)
    for _ in range(len(overrides) + 1):
        try:
            return build(todo), errors
        except CvddError as e:
            errors.setdefault(ERROR_FIELDS.get(e.field or "", "general"), page_terms(str(e)))
            left = [o for o in todo if not e.field or _key(o) != e.field]
            if len(left) == len(todo):
                return None, errors  # not caused by an override we can drop
            todo = left
    return None, errors


def whole_number(field: str, text) -> tuple[int | None, str | None]:
    """(value, None) for a whole number in the field's range, else (None, what is wrong)."""
    label, lo, hi = WHOLE[field]
    typed = str("" if text is None else text).strip()
    if not typed:
        return None, f"Enter {label} as a whole number."
    if not _WHOLE.fullmatch(typed):
        return None, (
            f"{label} must be a whole number such as 10; `{code(typed[:40])}` is not "
            "(no decimals, exponents, spaces or text)."
        )
    n = int(typed)
    if n < lo or (hi is not None and n > hi):
        span = f"between {lo:,} and {hi:,}" if hi is not None else f"at least {lo:,}"
        return None, f"{label} must be {span} (got {n:,})."
    return n, None


def check_numbers(vals: dict) -> dict[str, str]:
    """Reads the typed numbers in place (whole-number fields arrive as text) and returns
    {field: message} for the ones that are not numbers in range; a bad one becomes None."""
    errors = {}
    for k in NUMBERS:
        if k in WHOLE:
            vals[k], bad = whole_number(k, vals.get(k))
            if bad:
                errors[k] = bad
        elif vals.get(k) is None:
            errors[k] = "Enter a number."
    return errors


def md_escape(text: str) -> str:
    """`text` shown literally by st.markdown / st.error: no italics from `*` or `_`, no tags."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~-])", r"\\\1", str(text))


def code(text: str) -> str:
    """`text` for a Markdown code span (which shows backslashes literally): no backticks."""
    return str(text).replace("`", "'")


def dataset_problem(path: str) -> str | None:
    """Markdown: why `path` is no data set cvdd can read (with the accepted layouts, their
    path patterns in code spans, never italics), or None when it holds one. The worker would
    fail on it only after waiting in the queue and importing PyTorch."""
    msg = layout_problem(path)
    if msg is None:
        return None
    lines = msg.splitlines()
    head = lines[0].replace(f"{Path(path).expanduser()}:", "").strip()
    menu = "\n".join(f"- **{k}**: `{code(v)}`" for k, v in LAYOUTS.items())
    fix = lines[-1].removeprefix("Fix:").strip() if lines[-1].startswith("Fix:") else ""
    return (
        f"`{code(path)}`: {md_escape(head)} It must be one of these layouts:\n\n"
        f"{menu}\n\n{md_escape(fix[:1].upper() + fix[1:])}"
    )


def ipc_need(cfg: RunConfig) -> int:
    """Real training images per class that init needs (RDED stitches factor² patches)."""
    return cfg.ipc * (cfg.init.factor**2 if cfg.init.method == "rded" else 1)


def check_ipc(cfg: RunConfig, dataset: str) -> tuple[str | None, str]:
    """(error or None, a caption for the IPC field) for this config on this data set."""
    if str(dataset).lower().endswith(".zip"):  # the drop zone's check counts every class
        return None, "IPC is checked against each class of the zip in its summary above."
    n, what = images_per_class(dataset)
    if n is None:
        return None, f"IPC is checked against {what}'s classes seconds after Start."
    f2 = ipc_need(cfg) // max(cfg.ipc, 1)
    top = n // f2
    if ipc_need(cfg) > n:
        mosaic = f" ({f2} patches per image)" if f2 > 1 else ""
        return (
            f"IPC {cfg.ipc}{mosaic} is larger than the {n:,} images per class of {what}: "
            f"choose IPC ≤ {top:,}.",
            "",
        )
    return None, f"{what}: {n:,} images per class, so IPC ≤ {top:,}."


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def images_per_class(dataset: str) -> tuple[int | None, str]:
    """(training images in the smallest class or None when unknown here, a name for the data).
    Cached briefly: a folder on the server may change, the form reruns on every edit."""
    if dataset in ("builtin", "fashion_mnist_subset"):
        try:
            with np.load(BUILTIN_NPZ, allow_pickle=False) as z:
                return int(np.bincount(z["train_labels"]).min()), "the built-in set"
        except (OSError, KeyError, ValueError):
            return None, "the built-in set"
    p = _descend(Path(dataset).expanduser())
    what = f"`{p.name}`"
    if p.is_file():
        low = p.name.lower()
        if low.startswith("cifar-100"):
            return 500, "CIFAR-100"
        return (5000, "CIFAR-10") if low.startswith("cifar-10") else (None, what)
    for marker, (name, n) in CIFAR_PER_CLASS.items():
        if (p / marker).is_file():
            return n, name
    train = p / "train"
    if not train.is_dir():
        return None, what  # IDX and anything unusual: the worker's loader knows
    tiny = (p / "wnids.txt").is_file()  # Tiny-ImageNet keeps a class's files in <wnid>/images/
    counts, seen = [], 0
    for c in sorted(os.scandir(train), key=lambda d: d.name):
        if c.name.startswith(".") or not c.is_dir():
            continue
        n = _count_files(Path(c.path) / "images" if tiny else Path(c.path))
        counts.append(n)
        seen += n
        if seen > SCAN_LIMIT:
            return None, what
    return (min(counts), what) if counts else (None, what)


def _count_files(folder: Path) -> int:
    try:
        return sum(1 for f in os.scandir(folder) if f.is_file() and not f.name.startswith("."))
    except OSError:
        return 0


def _descend(p: Path) -> Path:
    # The official archives extract to one folder; the loader accepts its parent too
    try:
        kids = [c for c in p.iterdir() if not c.name.startswith(".")] if p.is_dir() else []
    except OSError:
        return p
    if len(kids) == 1 and kids[0].is_dir() and not (p / "train").exists():
        return kids[0]
    return p


# the form's fields that become overrides (session keys nr_<name>), besides the data set
FORM_FIELDS = (
    "ipc",
    "seed",
    "device",
    "num_experts",
    "temperature",
    "voter",
    "schedule",
    "iterations",
    "teacher",
    "members",
    "bssl",
)


@dataclass
class FormCheck:
    """What the New run form adds up to: the config (None when it cannot be built), every
    message by form field (the form's own first where it and cvdd.config both speak), the
    overrides on top of the preset or clone (the CLI command the page shows), and a note for
    under the IPC field when IPC is fine."""

    cfg: RunConfig | None
    errors: dict[str, str]
    overrides: list[str]
    ipc_note: str


def _form_dataset(form: Mapping) -> tuple[str, str | None]:
    """(the data set the form names, the message when it is not usable)."""
    kind, path = form["nr_kind"], str(form.get("nr_path") or "").strip()
    if kind == "builtin":
        return "builtin", None
    if kind == "zip":
        dataset = form.get("nr_zip_path") or ""
        return (
            dataset,
            None if dataset else "Drop a zipped image folder above; its check must pass first.",
        )
    if not path:
        return "", "Enter the path of the data set folder on the server."
    if not Path(path).expanduser().exists():
        return path, f"`{code(path)}` does not exist on the server's file system."
    return path, dataset_problem(path)  # before it queues, not when it reaches the front


def check_form(form: Mapping) -> FormCheck:
    """Check the New run form's values (`form`: the session state, keys nr_*), as
    app/views/new_run.py shows them: on top of the preset `nr_preset`, or of the cloned config
    `nr_base` when there is one."""
    errors: dict[str, str] = {}
    dataset, bad = _form_dataset(form)
    if bad:
        errors["dataset"] = bad
    vals = {k: form.get(f"nr_{k}") for k in FORM_FIELDS}
    vals["dataset"] = dataset or None
    errors.update(check_numbers(vals))
    vals.update(dict.fromkeys(set(errors) & set(NUMBERS)))  # a bad number is not applied
    extra = [ln.strip() for ln in str(form.get("nr_extra") or "").splitlines() if ln.strip()]
    overrides = shaping.form_overrides(vals) + extra
    preset = form["nr_preset"]
    if form["nr_kind"] == "zip" and PRESETS[preset].get("squeeze", {}).get("source") == "shipped":
        overrides.insert(0, "squeeze.source=train")  # the shipped committee fits the built-in data

    def build(ovs: list[str]) -> RunConfig:
        if form.get("nr_base"):
            return RunConfig.from_dict(form["nr_base"]).replace(ovs)
        return from_preset(preset, ovs)

    cfg, cfg_errors = check_config(build, overrides)
    errors = {**cfg_errors, **errors}  # the form's own message first where both speak
    if cfg is not None and not cfg.data.dataset and "dataset" not in errors:
        errors["dataset"] = "This preset needs a data set path."
    ipc_note = ""
    if cfg is not None and cfg.data.dataset and not {"ipc", "dataset"} & set(errors):
        bad, ipc_note = check_ipc(cfg, cfg.data.dataset)
        if bad:
            errors["ipc"] = bad
    return FormCheck(cfg, errors, overrides, ipc_note)

"""The export folder: the distilled set in a form any evaluator reads without cvdd (end of
validate; docs/rundir.md `export/`, docs/evaluate.md shows its use in plain PyTorch).

- `images/<cls:03d>_<name>/<ipc:03d>.png`: a lossless PNG ImageFolder. The zero-padded class
  index leads each folder name, so ImageFolder's sorted order is the run's class order and its
  sample order is the run's image order (class-major).
- `order.txt`: those files, one a line, in that order: row i of every label file is line i.
- `logits.pt`: the run's soft labels (relabel.mode) as a float32 (N, num_classes) tensor;
  `logits_<other mode>.pt` the other labelling. They are log-probabilities, i.e. logits up to
  a per-image constant, so softmax(logits / T) is the teacher's distribution at any T.
- `teacher.pt2`: the relabel teacher (one member, or the prior-weighted committee) as a
  torch.export program: normalised images (N, C, H, W) -> logits, BN as the run labels (BSSL:
  the batch's own statistics, so give it batches of 2 or more; eval: running statistics).
- `soft_labels.npz`, `labels.csv`, `config.json` (normalisation, channels, the files above),
  `README.txt`.
"""

from __future__ import annotations

import copy
import csv
import io
import re

import numpy as np
import torch
import torch.nn as nn

from . import layout
from .context import Context
from .teacher import Teacher, make_teacher

FILES = {"order": "order.txt", "logits": "logits.pt", "teacher": "teacher.pt2"}
_BN = nn.modules.batchnorm._BatchNorm


class _Relabeller(nn.Module):
    """Weighted sum of member logits (one member: weight 1), as `cvdd.teacher.Teacher`."""

    def __init__(self, models: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x).float() * self.weights[0]
        for i in range(1, len(self.members)):
            out = out + self.members[i](x).float() * self.weights[i]
        return out


def _batch_stats_copy(model: nn.Module) -> nn.Module:
    """A CPU copy whose BN layers normalise with the batch's statistics and store none, so
    that the exported program never changes a buffer (BSSL, as `bn_batch_stats_frozen`)."""
    out = copy.deepcopy(model).cpu().float().eval()
    for m in out.modules():
        if isinstance(m, _BN):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return out


def export_teacher(teacher: Teacher, example: torch.Tensor) -> bytes:
    """The teacher as a saved torch.export program (dynamic batch size)."""
    bssl = teacher.mode == "bssl"
    models = [
        _batch_stats_copy(m) if bssl else copy.deepcopy(m).cpu().float().eval()
        for m in teacher.models
    ]
    module = _Relabeller(models, [float(w) for w in teacher.weights]).eval()
    batch = torch.export.Dim("batch", min=2 if bssl else 1)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}})
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _logits(probs: np.ndarray) -> torch.Tensor:
    # log p: softmax gives p back; a probability that underflowed to 0 becomes log(1e-45)
    return torch.from_numpy(probs).double().clamp_min(1e-45).log().float()


def _write_images(ctx: Context, images: torch.Tensor, targets: torch.Tensor) -> list[tuple]:
    from PIL import Image

    rows = []
    for i, (img, c) in enumerate(zip(images.numpy(), targets.tolist())):
        folder = f"{c:03d}_{re.sub(r'[^A-Za-z0-9_-]+', '_', ctx.data.class_names[c])}"
        rel = f"images/{folder}/{i % ctx.cfg.ipc:03d}.png"
        arr = img.transpose(1, 2, 0)
        pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        ctx.rd.save(layout.export_path(rel), pil)
        rows.append((rel, c, ctx.data.class_names[c]))
    return rows


def _write_labels(ctx: Context, rows: list[tuple], z) -> dict:
    """soft_labels.npz, labels.csv, order.txt and the logits files; their config.json entry."""
    rd, names, mode = ctx.rd, ctx.data.class_names, ctx.cfg.relabel.mode
    arrays = {**{k: z[k] for k in z.files}, "files": np.array([r[0] for r in rows])}
    rd.save(layout.export_path("soft_labels.npz"), arrays)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["file", "class_idx", "class_name", "top1_bssl", "p_top1_bssl", "top1_eval"])
    for (rel, c, name), pb, pe in zip(rows, z["probs_bssl"], z["probs_eval"]):
        top_b, top_e = names[int(pb.argmax())], names[int(pe.argmax())]
        w.writerow([rel, c, name, top_b, f"{pb.max():.4f}", top_e])
    rd.write_bytes(layout.export_path("labels.csv"), out.getvalue().encode())
    order = "".join(f"{r[0]}\n" for r in rows)
    rd.write_bytes(layout.export_path(FILES["order"]), order.encode())
    other = "eval" if mode == "bssl" else "bssl"
    for file, m in ((FILES["logits"], mode), (f"logits_{other}.pt", other)):
        rd.save(layout.export_path(file), _logits(z[f"probs_{m}"]))
    return {
        "file": FILES["logits"],
        "mode": mode,
        "other": {other: f"logits_{other}.pt"},
        "shape": [len(rows), len(names)],
        "kind": "log-probabilities: logits up to a per-image constant; softmax(logits / T) "
        "is the teacher's distribution at temperature T",
        "order": FILES["order"],
    }


def _teacher_entry(ctx: Context, images: torch.Tensor) -> dict:
    """Write teacher.pt2; its config.json entry (a failure is logged, never fatal)."""
    from .data import normalize, to_float

    teacher = make_teacher(ctx, ctx.cfg.relabel.mode)
    example = normalize(to_float(images[:4].cpu()), ctx.data.mean, ctx.data.std)
    entry = {
        "file": FILES["teacher"],
        "format": "torch.export",
        "load": "torch.export.load(path).module()",
        "input": "normalised float32 images (N, C, H, W), see dataset.normalization",
        "output": "logits (N, num_classes)",
        "bn": "batch statistics (BSSL): each call's batch sets the BN statistics; N >= 2"
        if teacher.mode == "bssl"
        else "running statistics (eval mode)",
        "teacher": ctx.cfg.relabel.teacher,
        "weights": [float(w) for w in teacher.weights],
    }
    try:
        ctx.rd.write_bytes(layout.export_path(FILES["teacher"]), export_teacher(teacher, example))
    except Exception as e:  # an architecture torch.export cannot take: the rest still exports
        ctx.rd.log(
            f"teacher not exported ({type(e).__name__}: {e})", level="warn", stage="validate"
        )
        return {**entry, "file": None, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    return entry


def write_export(ctx: Context, images: torch.Tensor, targets: torch.Tensor) -> None:
    """Every file of export/ (see the module docstring); config.json last."""
    rows = _write_images(ctx, images, targets)
    with np.load(ctx.rd.path / layout.SOFT_LABELS) as z:
        labels = _write_labels(ctx, rows, z)
    teacher = _teacher_entry(ctx, images)
    meta = export_meta(ctx, len(rows))
    ctx.rd.write_json(
        layout.export_path("config.json"),
        {
            "dataset": meta,
            "config": ctx.cfg.to_dict(),
            "class_names": ctx.data.class_names,
            "soft_labels": labels,
            "teacher": teacher,
        },
    )
    ctx.rd.write_bytes(layout.export_path("README.txt"), readme(meta).encode())


def readme(meta: dict) -> str:
    """README.txt: the same metadata as config.json's `dataset`, for a person."""
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(meta["class_names"]))
    return (
        f"{'SRe2L++' if meta['method'] == 'sre2l++' else 'CV-DD'} distilled set: "
        f"{meta['num_images']} images, IPC {meta['ipc']}, {meta['num_classes']} classes.\n"
        "images/ is an ImageFolder (folder order = class index); order.txt lists its files in\n"
        "ImageFolder's sample order, the row order of every label file. logits.pt: the soft\n"
        "labels as a float32 (N, classes) tensor of logits (log-probabilities); logits_*.pt the\n"
        "other labelling. teacher.pt2: the relabel teacher, torch.export.load(path).module()\n"
        "maps normalised images to logits. soft_labels.npz holds the probabilities (probs_bssl,\n"
        "probs_eval) with `files`; labels.csv summarises them. config.json: `dataset` (below),\n"
        "`soft_labels`, `teacher`, `config` (the full configuration), `class_names`.\n"
        "docs/evaluate.md of cvdd shows an evaluation in plain PyTorch.\n\n"
        f"dataset      {meta['name']}\n"
        f"image size   {meta['image_size']} x {meta['image_size']} px, "
        f"{meta['channels']} channel(s), uint8 PNG\n"
        f"normalise    (x / 255 - mean) / std per channel, mean {meta['mean']}, "
        f"std {meta['std']}\n"
        f"classes      {names}\n"
    )


def export_meta(ctx: Context, num_images: int) -> dict:
    """What another tool needs to read the export without the run directory."""
    d = ctx.data
    mean, std = [float(m) for m in d.mean], [float(s) for s in d.std]
    return {
        "name": d.name,
        "num_classes": d.num_classes,
        "class_names": list(d.class_names),
        "channels": d.in_channels,
        "image_size": d.image_size,
        "mean": mean,
        "std": std,
        "normalization": {
            "channels": d.in_channels,
            "mean": mean,
            "std": std,
            "input": "(pixel / 255 - mean) / std per channel; float32 (N, C, H, W)",
        },
        "ipc": ctx.cfg.ipc,
        "num_images": num_images,
        "method": ctx.cfg.method,
        "soft_label_teacher": ctx.cfg.relabel.teacher,
    }

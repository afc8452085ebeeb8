"""Build assets/committee/: the quick preset's five committee members, trained on all of
Fashion-MNIST, so that a quick run starts distilling at once with members near their ceiling.

Each member is trained by the engine's own squeeze stage (cvdd/stages/squeeze.py, the quick
preset's architectures and widths, `squeeze.source=train`) on the 60,000 training images of
Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist), evaluated on its
10,000 test images, and stored as an fp16 state_dict (`torch.load(..., weights_only=True)`).
The priors are then computed by the engine's prior stage, exactly as a quick run would on the
embedded subset, and stored in manifest.json with the sha256, accuracy, size and schedule of
every member. Run from the repository root, on one thread by default (a CPU hour in all):

    python assets/make_committee.py [--src DIR] [--work DIR] [--threads 1]

Pilots: `--members resnet18 --epochs 1 --dry-run` trains and evaluates, and writes nothing here.
`--priors-only` keeps the weights and recomputes the priors: needed when a config field that
the prior key covers (prior, init, recover, validate settings) changes, which
tests/test_committee.py detects.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python assets/make_committee.py` without installing cvdd

import torch  # noqa: E402

from cvdd import layout  # noqa: E402
from cvdd.config import COMMITTEE, RunConfig, config_hash, from_preset  # noqa: E402
from cvdd.context import Context  # noqa: E402
from cvdd.data import load_dataset  # noqa: E402
from cvdd.models import create_model  # noqa: E402
from cvdd.rundir import RunDir  # noqa: E402
from cvdd.shipped import MANIFEST, SHIPPED_DIR, load_manifest  # noqa: E402
from cvdd.stages.prior import run_prior  # noqa: E402
from cvdd.stages.squeeze import run_squeeze  # noqa: E402
from cvdd.train import evaluate  # noqa: E402
from cvdd.utils import atomic_write_bytes, atomic_write_json, read_json, set_threads  # noqa: E402

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# Epochs per member, chosen by pilot runs so that the five fit one CPU hour on one thread:
# cheap members get more passes over the 60,000 images, the slow ones (ResNet-50, DenseNet-121)
# fewer. The optimizer settings are shared; Adam at 5e-3 rather than the paper's 1e-3 because
# the schedules are short (pilots, 1-2 epochs: +3 points for ShuffleNetV2 and MobileNetV2 over
# 2e-3, the same for ResNet-18).
EPOCHS = dict(resnet18=8, resnet50=5, shufflenetv2=8, mobilenetv2=5, densenet121=4)
RECIPE = dict(optimizer="adam", lr=0.005, batch_size=128, weight_decay=1e-4)
MAX_BYTES = 3_000_000  # all of assets/committee/ ships inside the repository
NOTICE = "NOTICE.txt"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=DEBIAN_DIR, help=f"Fashion-MNIST IDX folder ({DEBIAN_DIR})")
    p.add_argument(
        "--work",
        default=str(Path("~/.cache/cvdd/make_committee").expanduser()),
        help="scratch folder: run dirs and the member cache (a rerun skips trained members)",
    )
    p.add_argument("--members", default=",".join(COMMITTEE), help="comma-separated subset")
    p.add_argument("--epochs", type=int, default=0, help="one count for every member (pilots)")
    p.add_argument("--max-train-images", type=int, default=0, help="0 = all (pilots: fewer)")
    for key, value in RECIPE.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--seed", type=int, default=0, help="squeeze.seed of every member")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--dry-run", action="store_true", help="train + evaluate, write no assets")
    p.add_argument(
        "--priors-only",
        action="store_true",
        help="keep the shipped weights, recompute the priors (after a config change, ~20 s)",
    )
    return p


def run_stages(cfg: RunConfig, work: Path, stages, dataset) -> tuple[RunDir, Context]:
    """Run some of the engine's stage functions on a fresh run dir under `work`/runs."""
    rd = RunDir.create(work / "runs", cfg.to_dict(), meta={"launched_by": "make_committee"})
    rd.echo = True  # progress rows on stdout, as the CLI prints them
    ctx = Context(cfg, rd, torch.device("cpu"), dataset, Path(cfg.cache_dir))
    h = config_hash(cfg)
    for fn in stages:
        rd.stage_start(fn.__name__.removeprefix("run_"))
        t0 = time.time()
        metrics = fn(ctx, h)
        rd.stage_end(fn.__name__.removeprefix("run_"), time.time() - t0, metrics)
    return rd, ctx


def train_member(name: str, args, work: Path, full) -> dict:
    """Train one member with the squeeze stage (or take it from the cache); its record."""
    epochs = args.epochs or EPOCHS[name]
    sets = [
        f"data.dataset={args.src}",
        f"cache_dir={work / 'cache'}",
        "device=cpu",
        "squeeze.source=train",
        f"squeeze.members={name}",
        "recover.num_experts=1",
        f"relabel.teacher={name}",  # a config check: the teacher must be a member
        f"squeeze.epochs={epochs}",
        f"squeeze.max_train_images={args.max_train_images}",
        f"squeeze.seed={args.seed}",
        *(f"squeeze.{key}={getattr(args, key)}" for key in RECIPE),
    ]
    t0, cpu0 = time.time(), time.process_time()
    rd, ctx = run_stages(from_preset("quick", sets), work, [run_squeeze], full)
    (rec,) = read_json(rd.path / layout.MEMBERS)["members"]
    times = read_json(work / "train_seconds.json") or {}
    if not rec["cached"]:  # times of a member trained now, kept for a rerun's manifest
        # CPU seconds as well: on a shared machine the wall time also counts others' work
        wall, cpu = time.time() - t0, time.process_time() - cpu0
        times[rec["file"]] = {"wall": round(wall, 1), "cpu": round(cpu, 1)}
        atomic_write_json(work / "train_seconds.json", times)
    return {**rec, "train_seconds": times.get(rec["file"]), "cache_dir": ctx.cache_dir}


def export_member(rec: dict, out: Path, full, dry_run: bool) -> dict:
    """fp16 copy of a trained member + its top-1 on the full test set as shipped (fp16)."""
    name = rec["name"]
    ck = torch.load(rec["cache_dir"] / rec["file"], map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    buf = io.BytesIO()
    torch.save(half, buf)
    blob = buf.getvalue()
    model = create_model(name, full.num_classes, full.in_channels, width=ck["width"])
    model.load_state_dict({k: v.float() for k, v in half.items()})  # what a quick run will use
    top1, _ = evaluate(model, full.test, full.mean, full.std, "cpu")
    if not dry_run:
        atomic_write_bytes(out / f"{name}.pt", blob)
    return {
        "file": f"{name}.pt",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "test_top1": round(top1, 2),  # the fp16 file, on all test images
        "test_top1_fp32": round(rec["test_top1"], 2),
        "train_top1": round(rec["train_top1"], 2),  # running accuracy of the last epoch
        "params": rec["params"],
        "width": ck["width"],
        "epochs": rec["epochs"],
        "train_seconds": rec["train_seconds"],
    }


def compute_priors(work: Path) -> dict:
    """The quick preset's own prior stage, on the embedded subset with the shipped members."""
    cfg = from_preset("quick", [f"cache_dir={work / 'cache'}", "device=cpu"])
    t0 = time.time()
    rd, _ = run_stages(cfg, work, [run_squeeze, run_prior], load_dataset(cfg.data.dataset))
    doc = read_json(rd.path / layout.PRIORS)
    return {
        "values": {m: round(v, 2) for m, v in doc["values"].items()},
        "keys": {m: r["key"] for m, r in doc["runs"].items()},
        "note": doc["note"],
        "data": (
            "the embedded subset (assets/fashion_mnist_subset.npz), "
            "scored on all 10,000 test images"
        ),
        "settings": dataclasses.asdict(cfg.prior),
        "seconds": round(time.time() - t0, 1),
    }


def build_manifest(args, threads: int, full, members: dict) -> dict:
    """manifest.json without the priors: provenance, data, recipe and every member's record."""
    return {
        "what": "cvdd's shipped committee: the quick preset's members, trained on Fashion-MNIST",
        "command": shlex.join(["python", "assets/make_committee.py", *sys.argv[1:]]),
        "seed": args.seed,
        "torch_version": torch.__version__,
        "threads": threads,
        "created": time.strftime("%Y-%m-%d"),
        "recipe": {
            **{k: getattr(args, k) for k in RECIPE},
            "schedule": "cosine per step",
            "augmentation": "3 px padded random crop + flip (cvdd/stages/squeeze.py)",
        },
        "data": {
            "name": full.name,
            "class_names": list(full.class_names),
            "num_classes": full.num_classes,
            "image_size": full.image_size,
            "in_channels": full.in_channels,
        },
        "train_images": len(full.train),
        "test_images": len(full.test),
        "members": members,
        "licence": f"{NOTICE} (weights derived from Fashion-MNIST, MIT)",
    }


def write_priors(manifest: dict, work: Path, out: Path) -> None:
    """Compute the priors with the members as shipped and store them in manifest.json."""
    manifest.pop("priors", None)
    # first without priors: the prior stage loads the members through this manifest
    atomic_write_json(out / MANIFEST, manifest)
    priors = compute_priors(work)
    priors["command"] = shlex.join(["python", "assets/make_committee.py", *sys.argv[1:]])
    priors["torch_version"] = torch.__version__
    manifest["priors"] = priors
    atomic_write_json(out / MANIFEST, manifest)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"priors {priors['values']}\nwrote {out} ({size:,} bytes)", flush=True)
    if size > MAX_BYTES:
        raise SystemExit(f"{out} holds {size:,} bytes > {MAX_BYTES:,}; narrow the members")


def main() -> None:
    args = _parser().parse_args()
    threads = set_threads(args.threads)
    work, out = Path(args.work).expanduser(), SHIPPED_DIR
    if args.priors_only:  # the weights stay; only settings that change alpha have changed
        write_priors(load_manifest(out), work, out)
        return
    names = [m.strip() for m in args.members.split(",") if m.strip()]
    t0 = time.time()
    full = load_dataset(args.src)  # (60000 + 10000, 1, 28, 28) uint8
    records = [train_member(name, args, work, full) for name in names]
    members = {r["name"]: export_member(r, out, full, args.dry_run) for r in records}
    for name, m in members.items():
        print(
            f"{name:14s} top-1 {m['test_top1']:.2f}% (fp32 {m['test_top1_fp32']:.2f}%), "
            f"{m['params']:,} params, {m['bytes']:,} bytes, {m['epochs']} epochs, "
            f"seconds {m['train_seconds']}",
            flush=True,
        )
    if not args.dry_run:
        manifest = build_manifest(args, threads, full, members)
        manifest["train_and_export_seconds"] = round(time.time() - t0, 1)
        write_priors(manifest, work, out)


if __name__ == "__main__":
    main()

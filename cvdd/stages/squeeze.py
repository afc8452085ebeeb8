"""Stage 0, squeeze: train each committee member on the real data (method.md §2).

Schedules are short on purpose (the CV-DD authors report over-trained teachers distil worse).
Trained members are cached under <cache_dir>/squeeze/ keyed by data set, architecture, width,
schedule and seed, so later runs (and the app) reuse them. A member given as a local weights
file (`squeeze.weights`, or with `squeeze.source=torchvision` torchvision's published ImageNet
file found in `squeeze.weights_dir`) is evaluated, not trained. With `squeeze.source=shipped`
(the quick preset) the members come from assets/committee/, trained once on all of Fashion-MNIST
by assets/make_committee.py and checked against the sha256 sums of its manifest.json
(cvdd/shipped.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time

import torch
import torch.nn.functional as F

from .. import dist, layout, shipped
from ..augment import resolve_train_augment, train_crop_flip
from ..context import Context
from ..member_split import member_records
from ..train import evaluate
from ..utils import CvddError, StopRequested, atomic_save

STAGE = "squeeze"
# Bump when the training loop changes what a schedule means, so stale cache entries retrain
_LOOP_VERSION = "cos-per-step"


def data_fingerprint(ctx: Context) -> str:
    """What the cached members were trained on: a zip by its content's hash (the same archive
    from the page and the CLI shares a committee; another zip at the same path does not)."""
    d = ctx.data
    classes = ",".join(d.class_names)
    where = f"zip:{d.archive['sha256']}" if d.archive and d.archive.get("sha256") else d.source
    return f"{d.name}|{where}|{len(d.train)}|{d.image_size}|{d.in_channels}|{classes}"


def member_key(ctx: Context, name: str) -> str:
    s = ctx.cfg.squeeze
    aug = resolve_train_augment(s.augment, ctx.data.image_size)
    blob = json.dumps(
        [
            data_fingerprint(ctx),
            name,
            s.width_of(name),
            s.epochs,
            s.batch_size,
            s.optimizer,
            s.lr,
            s.momentum,
            s.weight_decay,
            s.max_train_images,
            s.seed,
            _LOOP_VERSION,
        ]
        + ([aug] if aug != "pad_crop" else [])  # pad_crop keys stay those of earlier caches
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_indices(ctx: Context) -> torch.Tensor:
    cap = ctx.cfg.squeeze.max_train_images
    if not cap:
        return torch.arange(len(ctx.data.train))
    per = max(1, cap // ctx.data.num_classes)  # class-balanced cap
    g = ctx.gen(STAGE, "subset", seed=ctx.cfg.squeeze.seed)
    return torch.cat(
        [
            ix[torch.randperm(len(ix), generator=g)[:per]]
            for ix in (ctx.data.train.class_indices(c) for c in range(ctx.data.num_classes))
        ]
    )


def _new_member(ctx: Context, name: str):
    """A freshly initialised member (seeded per member, apart from the run) and its optimizer."""
    from ..models import create_model

    s = ctx.cfg.squeeze
    torch.manual_seed(ctx.seed_for(STAGE, name, "init", seed=s.seed))
    model = create_model(
        name, ctx.data.num_classes, ctx.data.in_channels, width=s.width_of(name)
    ).to(ctx.device)
    if s.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )
    return model, opt


def _train_step(model, opt, x: torch.Tensor, targets: torch.Tensor, name: str, lr: float):
    """One cross-entropy step; returns the loss and the number of correct predictions."""
    logits = model(x)
    loss = F.cross_entropy(logits, targets)
    if not torch.isfinite(loss):
        raise CvddError(
            f"squeeze loss of {name} became {loss.item()}; lower squeeze.lr (now {lr}) and resume"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), int((logits.argmax(1) == targets).sum())


def _train_member(
    ctx: Context,
    name: str,
    idx: torch.Tensor,
    cfg_hash: str,
    state: dict | None,
    offset: int,
    stage_total: int,
    *,
    pace: int = 1,
):
    s, dev = ctx.cfg.squeeze, ctx.device
    model, opt = _new_member(ctx, name)
    gen = ctx.gen(STAGE, name, seed=ctx.cfg.squeeze.seed)
    epoch0 = 0
    if state is not None and state.get("member") == name:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        epoch0 = state["epoch"]
    steps = math.ceil(len(idx) / s.batch_size)
    aug = resolve_train_augment(s.augment, ctx.data.image_size)  # method.md §2
    labels = ctx.data.train.targets
    correct = seen = 0

    def save(epoch: int) -> None:  # member weights + optimizer + RNG at an epoch boundary
        weights = dict(member=name, model=model.state_dict(), opt=opt.state_dict())
        state = dict(weights, gen=gen.get_state(), epoch=epoch, step=epoch * steps)
        ctx.rd.save_checkpoint(STAGE, state, cfg_hash)

    for epoch in range(epoch0, s.epochs):
        if ctx.should_stop():
            save(epoch)
            raise StopRequested
        model.train()
        correct = seen = 0
        perm = idx[torch.randperm(len(idx), generator=gen)]
        for i, b in enumerate(perm.split(s.batch_size)):
            if len(b) < 2:
                continue
            # cosine to 0 over every step: a per-epoch cosine would run the last of 3 epochs at
            # 25 % of the lr, too high for a short schedule to settle
            lr = 0.5 * (1 + math.cos(math.pi * (epoch * steps + i) / (s.epochs * steps))) * s.lr
            for pg in opt.param_groups:
                pg["lr"] = lr
            x = train_crop_flip(ctx.normalize(ctx.data.train.load(b).to(dev)), gen, aug)
            loss, right = _train_step(model, opt, x, labels[b].to(dev), name, s.lr)
            correct, seen = correct + right, seen + len(b)
            ctx.rd.progress(  # stage-wide step count, so the ETA covers every member
                STAGE,
                offset + pace * (epoch * steps + i + 1),
                stage_total,
                {"loss": loss, "train_acc": 100 * correct / seen, "lr": lr},
                label=name,
            )
        save(epoch + 1)
    return model, 100 * correct / max(seen, 1)


def _shipped_committee(ctx: Context) -> list[dict]:
    """members.json records of the shipped members. Each is checked, then copied as fp32 into
    the committee cache, where `ctx.load_member` finds every member whatever its source."""
    manifest = shipped.load_manifest()
    shipped.check_fits(manifest, ctx.data, ctx.cfg.squeeze)
    names, priors, out = ctx.cfg.squeeze.members, manifest.get("priors") or {}, []
    for k, name in enumerate(names):
        t0 = time.time()
        model, sha = shipped.load_member(name, manifest)
        entry = manifest["members"][name]
        rel = layout.member_weights_path(ctx.data.name, name, f"shipped-{sha[:12]}")
        rec = {
            "name": name,
            "test_top1": entry["test_top1"],  # on the full test set, see test_images
            "train_top1": entry.get("train_top1"),
            "params": sum(p.numel() for p in model.parameters()),
            "epochs": entry["epochs"],
        }
        member = {**rec, "width": entry["width"], "state_dict": model.state_dict()}
        atomic_save(member, ctx.cache_dir / rel)
        rec.update(file=rel, cached=True, source="shipped", sha256=sha)
        rec.update(shipped_file=f"assets/committee/{entry['file']}")
        rec.update(test_images=manifest["test_images"], train_images=manifest["train_images"])
        if name in priors.get("values", {}):  # the prior stage uses it if its settings match
            rec["prior"] = {"student_top1": priors["values"][name], "key": priors["keys"][name]}
        out.append({**rec, "seconds": round(time.time() - t0, 2)})
        ctx.rd.progress(STAGE, k + 1, len(names), label=name, force=True)
    accs = ", ".join(f"{m['name']} {m['test_top1']:.2f}%" for m in out)
    ctx.rd.log(
        "loaded the shipped committee from assets/committee (no training; made by "
        f"assets/make_committee.py on {manifest['train_images']:,} training images), top-1 on "
        f"{manifest['test_images']:,} test images: {accs}",
        stage=STAGE,
    )
    return out


def member_weight_files(s, num_classes: int) -> dict[str, str]:
    """member -> local weights file: `squeeze.weights`, plus for source=torchvision the
    published ImageNet files found in `squeeze.weights_dir` (method.md §2); never downloads."""
    if s.source != "torchvision":
        return dict(s.weights)
    from ..models.pretrained import imagenet_weight_files

    todo = [m for m in s.members if m not in s.weights]
    try:
        found = imagenet_weight_files(todo, s.weights_dir, num_classes)
    except ValueError as e:
        fix = "or train the committee in the run: --set squeeze.source=train"
        raise CvddError(f"{e}; {fix}", field="squeeze.weights_dir") from e
    return {**{m: str(path) for m, path in found.items()}, **s.weights}


def _user_member(ctx: Context, name: str, path: str):
    """A member from a local weights file (evaluated, not trained); its cache path."""
    from ..models import create_model

    s = ctx.cfg.squeeze
    try:
        model = create_model(
            name,
            ctx.data.num_classes,
            ctx.data.in_channels,
            width=s.width_of(name),
            weights=path,
        ).to(ctx.device)
    except ValueError as e:  # missing / corrupt / mismatched file: the message names it
        key = f"weights.{name}" if name in s.weights else "weights_dir"
        raise CvddError(f"{e}; fix squeeze.{key}") from e
    user_key = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return model, layout.member_weights_path(ctx.data.name, name, f"user-{user_key}")


def _cached_member(ctx: Context, name: str, t0: float, *, weights: dict) -> dict | None:
    """The record of a member trained earlier with the same key, or None (then it trains). A
    member in `weights` (given as a weights file) is evaluated instead, never taken cached."""
    rel = layout.member_weights_path(ctx.data.name, name, member_key(ctx, name))
    path = ctx.cache_dir / rel
    if name in weights or not path.exists():
        return None
    try:
        info = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt cache entry is rebuilt, not fatal
        ctx.rd.log(f"{name}: cached weights {rel} are corrupt; retraining", "warning", STAGE)
        path.unlink(missing_ok=True)
        return None
    ctx.rd.log(f"{name}: using cached weights {rel}", stage=STAGE)
    rec = {k: info[k] for k in ("name", "test_top1", "train_top1", "params", "epochs")}
    secs = round(time.time() - t0, 2)
    return {**rec, "file": rel, "cached": True, "source": "train", "seconds": secs}


def _trained_committee(ctx: Context, cfg_hash: str) -> list[dict]:
    """Train (or take from the cache, or evaluate user weights) every member, in order."""
    s = ctx.cfg.squeeze
    weights = member_weight_files(s, ctx.data.num_classes)  # these are evaluated, not trained
    state = ctx.rd.load_checkpoint(STAGE, cfg_hash)
    idx = _train_indices(ctx)
    cached = functools.partial(_cached_member, ctx, weights=weights)
    per_member = s.epochs * math.ceil(len(idx) / s.batch_size)
    stage_total = per_member * len(s.members)

    def make(name: str, t0: float, *, at: int, pace: int = 1) -> dict:
        """A member not in the cache (progress: `at` and `pace` as in cvdd/member_split.py)."""
        if name in weights:  # local weights (user's or torchvision's): evaluate only
            (model, rel), train_top1 = _user_member(ctx, name, weights[name]), None
        else:
            rel = layout.member_weights_path(ctx.data.name, name, member_key(ctx, name))
            model, train_top1 = _train_member(
                ctx, name, idx, cfg_hash, state, at * per_member, stage_total, pace=pace
            )
        top1, _ = evaluate(model, ctx.data.test, ctx.mean, ctx.std, ctx.device)
        params = sum(p.numel() for p in model.parameters())
        rec = dict(name=name, test_top1=top1, train_top1=train_top1, params=params, epochs=s.epochs)
        member = {**rec, "width": s.width_of(name), "state_dict": model.state_dict()}
        atomic_save(member, ctx.cache_dir / rel)
        src = "user" if name in s.weights else ("torchvision" if name in weights else "train")
        secs = round(time.time() - t0, 2)
        ctx.rd.log(f"{name}: test top-1 {top1:.2f}% ({params / 1e6:.2f}M params)", stage=STAGE)
        return {**rec, "file": rel, "cached": False, "source": src, "seconds": secs}

    # in turn, or under torchrun the members not cached split over the ranks
    return member_records(ctx, s.members, cached=cached, make=make, per_member=per_member)


def run_squeeze(ctx: Context, cfg_hash: str) -> dict:
    if ctx.cfg.squeeze.source == "shipped":
        out = dist.run_on_main(lambda: _shipped_committee(ctx))  # a copy, nothing to split
    else:
        out = _trained_committee(ctx, cfg_hash)
    ctx.rd.write_json(layout.MEMBERS, {"members": out})
    return {f"{m['name']}_top1": m["test_top1"] for m in out}

"""Stage 0, squeeze: train each committee member on the real data (method.md §2).

Schedules are short on purpose (the CV-DD authors report over-trained teachers distil worse).
Trained members are cached under <cache_dir>/squeeze/ keyed by data set, architecture, width,
schedule and seed, so later runs (and the app) reuse them. A member given as a local weights
file (`squeeze.weights`) is evaluated, not trained.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time

import torch
import torch.nn.functional as F

from .. import layout
from ..augment import pad_crop_flip
from ..context import Context
from ..train import evaluate
from ..utils import CvddError, StopRequested, atomic_write_bytes

STAGE = "squeeze"


def data_fingerprint(ctx: Context) -> str:
    d = ctx.data
    classes = ",".join(d.class_names)
    return f"{d.name}|{d.source}|{len(d.train)}|{d.image_size}|{d.in_channels}|{classes}"


def member_key(ctx: Context, name: str) -> str:
    s = ctx.cfg.squeeze
    blob = json.dumps(
        [
            data_fingerprint(ctx),
            name,
            member_width(s, name),
            s.epochs,
            s.batch_size,
            s.optimizer,
            s.lr,
            s.momentum,
            s.weight_decay,
            s.max_train_images,
            s.seed,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def member_width(s, name: str) -> float:
    return float(s.widths.get(name, s.width))


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


def _train_member(
    ctx: Context,
    name: str,
    idx: torch.Tensor,
    cfg_hash: str,
    state: dict | None,
    offset: int,
    stage_total: int,
):
    from ..models import create_model

    s, dev = ctx.cfg.squeeze, ctx.device
    torch.manual_seed(ctx.seed_for(STAGE, name, "init", seed=ctx.cfg.squeeze.seed))
    model = create_model(
        name, ctx.data.num_classes, ctx.data.in_channels, width=member_width(s, name)
    ).to(dev)
    if s.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
        )
    gen = ctx.gen(STAGE, name, seed=ctx.cfg.squeeze.seed)
    epoch0 = 0
    if state is not None and state.get("member") == name:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        epoch0 = state["epoch"]
    steps = math.ceil(len(idx) / s.batch_size)
    pad = max(1, ctx.data.image_size // 8)  # 4 px at 32 px (method.md §2)
    labels = ctx.data.train.targets
    correct = seen = 0

    def save(epoch: int) -> None:  # member weights + optimizer + RNG at an epoch boundary
        state = dict(member=name, model=model.state_dict(), opt=opt.state_dict(),
                     gen=gen.get_state(), epoch=epoch, step=epoch * steps)
        ctx.rd.save_checkpoint(STAGE, state, cfg_hash)

    for epoch in range(epoch0, s.epochs):
        if ctx.should_stop():
            save(epoch)
            raise StopRequested
        lr = 0.5 * (1 + math.cos(math.pi * epoch / s.epochs)) * s.lr  # cosine, T_max = epochs
        for pg in opt.param_groups:
            pg["lr"] = lr
        model.train()
        correct = seen = 0
        perm = idx[torch.randperm(len(idx), generator=gen)]
        for i, b in enumerate(perm.split(s.batch_size)):
            if len(b) < 2:
                continue
            x = pad_crop_flip(ctx.normalize(ctx.data.train.load(b).to(dev)), gen, pad)
            y = labels[b].to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise CvddError(
                    f"squeeze loss of {name} became {loss.item()}; lower squeeze.lr "
                    f"(now {s.lr}) and resume"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(b)
            ctx.rd.progress(  # stage-wide step count, so the ETA covers every member
                STAGE,
                offset + epoch * steps + i + 1,
                stage_total,
                {"loss": loss.item(), "train_acc": 100 * correct / seen, "lr": lr},
                label=name,
            )
        save(epoch + 1)
    return model, 100 * correct / max(seen, 1)


def run_squeeze(ctx: Context, cfg_hash: str) -> dict:
    from ..models import create_model

    s = ctx.cfg.squeeze
    state = ctx.rd.load_checkpoint(STAGE, cfg_hash)
    idx = _train_indices(ctx)
    out = []
    per_member = s.epochs * math.ceil(len(idx) / s.batch_size)
    stage_total = per_member * len(s.members)
    for k, name in enumerate(s.members):
        t0 = time.time()
        rel = layout.member_weights_path(ctx.data.name, name, member_key(ctx, name))
        path = ctx.cache_dir / rel
        info = None
        if name in s.weights:  # user-supplied local weights: evaluate only
            try:
                model = create_model(
                    name,
                    ctx.data.num_classes,
                    ctx.data.in_channels,
                    width=member_width(s, name),
                    weights=s.weights[name],
                ).to(ctx.device)
            except ValueError as e:  # missing / corrupt / mismatched file: the message names it
                raise CvddError(f"{e}; fix squeeze.weights.{name}") from e
            user_key = hashlib.sha256(str(s.weights[name]).encode()).hexdigest()[:12]
            rel = layout.member_weights_path(ctx.data.name, name, f"user-{user_key}")
            path, train_top1, cached = ctx.cache_dir / rel, None, False
        elif path.exists():
            try:
                info = torch.load(path, map_location="cpu", weights_only=True)
                ctx.rd.log(f"{name}: using cached weights {rel}", stage=STAGE)
            except Exception:  # a corrupt cache entry is rebuilt, not fatal
                ctx.rd.log(
                    f"{name}: cached weights {rel} are corrupt; retraining", "warning", STAGE
                )
                path.unlink(missing_ok=True)
        if info is not None:
            out.append(
                {
                    **{k: info[k] for k in ("name", "test_top1", "train_top1", "params", "epochs")},
                    "file": rel,
                    "cached": True,
                    "seconds": round(time.time() - t0, 2),
                }
            )
            ctx.rd.progress(STAGE, (k + 1) * per_member, stage_total, label=name, force=True)
            continue
        if name not in s.weights:
            model, train_top1 = _train_member(
                ctx, name, idx, cfg_hash, state, k * per_member, stage_total
            )
            cached = False
        state = None
        top1, _ = evaluate(model, ctx.data.test, ctx.mean, ctx.std, ctx.device)
        params = sum(p.numel() for p in model.parameters())
        rec = {
            "name": name,
            "test_top1": top1,
            "train_top1": train_top1,
            "params": params,
            "epochs": s.epochs,
        }
        buf = io.BytesIO()
        torch.save({**rec, "width": member_width(s, name), "state_dict": model.state_dict()}, buf)
        atomic_write_bytes(path, buf.getvalue())
        out.append({**rec, "file": rel, "cached": cached, "seconds": round(time.time() - t0, 2)})
        ctx.rd.log(f"{name}: test top-1 {top1:.2f}% ({params / 1e6:.2f}M params)", stage=STAGE)
    ctx.rd.write_json(layout.MEMBERS, {"members": out})
    return {f"{m['name']}_top1": m["test_top1"] for m in out}

"""Run every stage in order on one run dir; resume skips finished stages and reloads checkpoints.

SIGTERM / SIGINT set a flag; the running stage saves a checkpoint at its next step and the run
ends with `run_end stopped`. Errors end with `run_end failed` and a message naming the fix.
"""

from __future__ import annotations

import errno
import signal
import time
import traceback
from pathlib import Path

from . import dist, layout, queue
from .config import RunConfig, config_hash
from .eta import stage_work, student_units
from .layout import STAGES, read_events
from .rundir import RunDir
from .utils import (
    CvddError,
    StopRequested,
    environment,
    resolve_device,
    set_threads,
    use_cuda_device,
)

__all__ = ["run_pipeline", "STAGES"]

# stages that split their work across torchrun's ranks; the others run on rank 0 alone while the
# other ranks wait for it (cvdd/dist.py)
SPLIT_STAGES = ("squeeze", "prior", "recover", "validate")


def _stage_fn(stage: str):
    from .stages import init, prior, recover, relabel, squeeze, validate

    return {
        "squeeze": squeeze.run_squeeze,
        "prior": prior.run_prior,
        "init": init.run_init,
        "recover": recover.run_recover,
        "relabel": relabel.run_relabel,
        "validate": validate.run_validate,
    }[stage]


def _check_names(cfg: RunConfig) -> None:
    from .models import is_known_model, list_models

    named = [("squeeze.members", m) for m in cfg.squeeze.members]
    students = [("validate.students", m) for m in cfg.validate.students]
    for key, name in [*named, ("validate.student", cfg.validate.student), *students]:
        if not is_known_model(name):
            raise CvddError(
                f"unknown model {name!r} in {key}; choose from {', '.join(list_models())}",
                field=key,
            )


def _write_result(rd: RunDir, cfg: RunConfig, device: str) -> dict:
    from .utils import read_json

    doc = read_json(rd.path / layout.STUDENTS) or {}
    students = doc.get("students", {})
    evs = read_events(rd.path)
    secs = {}
    for e in evs:
        if e["kind"] == "stage_end" and e.get("stage") in STAGES:
            secs[e["stage"]] = secs.get(e["stage"], 0) + (e.get("seconds") or 0)
    mode = cfg.relabel.mode
    head = students.get(f"distilled_{mode}", {})
    meta = rd.read_config().get("meta", {})
    res = {
        "student_top1": head.get("top1"),
        "student_top5": head.get("top5"),
        "method": cfg.method,
        "ipc": cfg.ipc,
        "dataset": cfg.data.dataset,
        "preset": cfg.name,
        "members": list(cfg.squeeze.members),
        "voter": cfg.recover.voter,
        "relabel_mode": mode,
        "labels": {
            s["labels"]: s["top1"]
            for k, s in students.items()
            if s["data"] == "distilled" and k in (f"distilled_{m}" for m in ("bssl", "eval"))
        },
        # every architecture trained on the distilled set with the run's labels (Table 4)
        "students": {
            s.get("student", cfg.validate.student): s["top1"]
            for s in students.values()
            if s["data"] == "distilled" and s["labels"] == mode
        },
        "baselines": {"random_real": {"student_top1": students[f"random_real_{mode}"]["top1"]}}
        if f"random_real_{mode}" in students
        else {},
        # one-hot labels alone, no teacher (validate.hard_labels): distilled vs random real
        "hard_labels": {
            s["data"]: s["top1"]
            for k, s in students.items()
            if k in ("distilled_hard", "random_real_hard")
        },
        # every student: key (<data>_<labels>[-<model>]) -> top-1
        "all_students": {k: s["top1"] for k, s in students.items()},
        # the relabel teacher's own top-1 on the run's test split (eval-mode BN)
        "teacher": doc.get("teacher"),
        "stage_seconds": secs,
        "total_seconds": round(sum(secs.values()), 2),
        "device": device,
        # every top-1 above is on this many test images (the whole test split)
        "test_images": meta.get("dataset", {}).get("test_size"),
        # device, threads and versions: the same seed reproduces a result only under these
        "environment": meta.get("environment"),
    }
    rd.write_json(layout.RESULT, res)
    return res


def _open_context(cfg: RunConfig, rd: RunDir, device: str):
    """Load the data set, record what the run uses in config.json's meta, build the Context."""
    import torch

    from .context import Context
    from .data import DataError, load_dataset

    _check_names(cfg)
    try:
        # a zipped image folder is extracted into the runs folder's data area
        data_dir = rd.path.parent / layout.DATA_AREA
        dataset = load_dataset(cfg.data.dataset or "", cfg.data.image_size or None, None, data_dir)
    except DataError as e:
        raise CvddError(str(e), field="data.dataset") from e
    counts = torch.bincount(dataset.train.targets, minlength=dataset.num_classes)
    rd.update_meta(
        cvdd_version=__import__("cvdd").__version__,
        torch_version=torch.__version__,
        device=device,
        environment=environment(device),
        class_names=dataset.class_names,
        dataset=dict(
            name=dataset.name,
            layout=dataset.layout,
            source=dataset.source,
            num_classes=dataset.num_classes,
            image_size=dataset.image_size,
            in_channels=dataset.in_channels,
            mean=list(dataset.mean),
            std=list(dataset.std),
            train_size=len(dataset.train),
            test_size=len(dataset.test),
            images_per_class=int(counts.min()) if len(counts) else 0,  # the smallest class
            # a zip: its hash, test split (the zip's or held out), skipped files, sizes, modes
            **({"archive": dataset.archive} if dataset.archive else {}),
        ),
    )
    if "init" not in rd.finished_stages():  # before squeeze and prior spend minutes
        from .patches import check_ipc

        check_ipc(cfg, dataset.train, dataset.class_names)
    cache_dir = layout.committee_cache(cfg.cache_dir, rd.path.parent)
    return Context(cfg, rd, torch.device(device), dataset, cache_dir)


def _forecast(ctx, done: set[str]) -> dict[str, float]:
    """Forecast seconds of the stages still to run (cvdd/eta.py): the run's ETA adds them up.
    Under torchrun a split stage's steps are this rank's share, so is its forecast."""
    from .stages.validate import student_plan

    d = ctx.data
    work = stage_work(
        ctx.cfg,
        classes=d.num_classes,
        train_size=len(d.train),
        test_size=len(d.test),
        pixels=d.image_size**2,
        students=student_units([p[3] for p in student_plan(ctx)]),
    )
    share = {s: 1 / dist.world() if s in SPLIT_STAGES else 1.0 for s in STAGES}
    return {s: w * share[s] for s, w in work.items() if s not in done}


def _run_stages(ctx, rd: RunDir, cfg: RunConfig) -> None:
    """The stages not finished yet, in order: split ones on every rank, the others on rank 0."""
    h, done = config_hash(cfg), dist.broadcast_object(rd.finished_stages())
    rd.clocks.plan(_forecast(ctx, done))
    for stage in STAGES:  # resume: finished stages are skipped, the others reload checkpoints
        if stage in done:
            continue
        if dist.broadcast_object(ctx.should_stop()):  # every rank stops at the same stage
            raise StopRequested
        rd.stage_start(stage)
        t0 = time.time()
        if stage in SPLIT_STAGES:
            metrics = _stage_fn(stage)(ctx, h)
        else:
            metrics = dist.run_on_main(lambda s=stage: _stage_fn(s)(ctx, h))
        rd.stage_end(stage, time.time() - t0, metrics)


def run_pipeline(run_dir: str | Path, echo: bool = False) -> dict:
    """Run (or continue) the run in `run_dir` to the end. Returns result.json's content."""
    dist.init()  # torchrun: join the process group; one process: nothing
    rd = (RunDir if dist.is_main() else dist.FollowerRunDir).open(run_dir)
    rd.echo = echo and dist.is_main()
    cfg = RunConfig.from_dict(rd.read_config()["config"])
    ctx, prev, pending = None, {}, []

    def _on_signal(signum, frame):  # finish the step, checkpoint, end cleanly
        if ctx is not None:
            ctx.stop = True
        pending.append(signum)

    # handlers first: a stop that arrives right after the lock is taken still ends cleanly
    for s in (signal.SIGTERM, signal.SIGINT):
        prev[s] = signal.signal(s, _on_signal)
    try:
        rd.acquire_lock()
    except BaseException:
        for s, h_ in prev.items():
            signal.signal(s, h_)
        raise
    attempt = 1 + sum(e["kind"] == "run_start" for e in read_events(rd.path))
    try:
        device = resolve_device(cfg.device)
        if dist.is_distributed() and device.startswith("cuda"):
            device = f"cuda:{dist.local_rank()}"  # one GPU per rank on this node
        if device.startswith("cuda"):  # the current device: streams, graphs and pools go there
            use_cuda_device(device)
        threads = set_threads(queue.worker_threads(cfg.device, cfg.threads))
        world = {"world": dist.world()} if dist.is_distributed() else {}  # torchrun processes
        rd.append_event("run_start", attempt=attempt, device=device, threads=threads, **world)
        ctx = _open_context(cfg, rd, device)
        ctx.stop = bool(pending)
        _run_stages(ctx, rd, cfg)
        res = dist.run_on_main(lambda: _write_result(rd, cfg, device))
        rd.append_event("run_end", status="done")
        return res
    except StopRequested:
        rd.append_event("run_end", status="stopped")
        raise
    except CvddError as e:
        # `field`: the config key at fault (None if none); the UI offers no Resume for those
        rd.append_event("run_end", status="failed", error=str(e), field=e.field)
        raise
    except BaseException as e:
        msg = _explain(e)
        rd.append_event("run_end", status="failed", error=msg, traceback=traceback.format_exc())
        if msg != repr(e):
            raise CvddError(msg) from e
        raise
    finally:
        for s, h_ in prev.items():
            signal.signal(s, h_)
        rd.release_lock()


def _explain(e: BaseException) -> str:
    """A fix-naming message for the failures users hit most; repr(e) otherwise."""
    from .memory import is_out_of_memory, out_of_memory_message

    if is_out_of_memory(e):
        return out_of_memory_message("this run")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (
            "the disk is full; free space (e.g. delete old runs or the runs/_cache folder), "
            "then resume this run: finished stages and checkpoints are kept"
        )
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return repr(e)

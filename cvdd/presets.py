"""Presets: plain nested dicts applied on top of the RunConfig defaults, one per use.

`quick` runs every stage on the embedded data set on 2 CPU cores in minutes; `tiny` is for tests;
`<dataset>_ipc<k>` carry the paper's defaults (the official CV-DD scripts' settings).
This module is data only and imports nothing from cvdd; `cvdd.config.from_preset` builds a
RunConfig from these dicts.
"""

from __future__ import annotations

import json

__all__ = ["PRESETS", "PRESET_NOTES", "PRIOR_TABLE", "STUDENT_LR_ETA"]

# Prior performance alpha (student top-1 %, the paper's table), used when prior.source == "table".
PRIOR_TABLE = {
    "cifar10": dict(
        resnet18=63.0, resnet50=65.3, shufflenetv2=68.5, mobilenetv2=67.6, densenet121=67.4
    ),
    "cifar100": dict(
        resnet18=64.0, resnet50=60.6, shufflenetv2=51.6, mobilenetv2=59.4, densenet121=56.4
    ),
    "tiny_imagenet": dict(
        resnet18=46.5, resnet50=28.3, shufflenetv2=43.6, mobilenetv2=44.8, densenet121=41.5
    ),
    "imagenette": dict(
        resnet18=62.4, resnet50=52.0, shufflenetv2=57.2, mobilenetv2=54.0, densenet121=60.8
    ),
    # Jan-2025 row: the one that follows the paper's definition of the prior
    "imagenet1k": dict(
        resnet18=43.1, resnet50=41.37, shufflenetv2=43.73, mobilenetv2=39.15, densenet121=38.9
    ),
}

# Student base lr and eta (smoothed cosine) per data set, student and IPC 1 / 10 / 50: the table
# of docs/method.md §7.2, which follows the authors' scripts (300 student epochs)
STUDENT_LR_ETA = {
    "cifar10": dict(
        resnet18={1: (0.001, 1), 10: (0.001, 1), 50: (0.001, 1)},
        resnet50={1: (0.001, 1), 10: (0.001, 1), 50: (0.001, 1)},
        resnet101={1: (0.0005, 1), 10: (0.0005, 1), 50: (0.0005, 1)},
    ),
    "cifar100": dict(
        resnet18={1: (0.001, 1), 10: (0.001, 2), 50: (0.001, 1)},
        resnet50={1: (0.001, 1), 10: (0.001, 2), 50: (0.001, 1)},
        resnet101={1: (0.0005, 1), 10: (0.0005, 1), 50: (0.0005, 1)},
    ),
    "tiny_imagenet": dict(
        resnet18={1: (0.001, 2), 10: (0.001, 1), 50: (0.001, 2)},
        resnet50={1: (0.001, 1), 10: (0.001, 1), 50: (0.001, 1)},
        resnet101={1: (0.0005, 2), 10: (0.0005, 2), 50: (0.0005, 2)},
    ),
    "imagenette": dict(
        resnet18={1: (0.0005, 2), 10: (0.0005, 1), 50: (0.0005, 2)},
        resnet50={1: (0.0005, 2), 10: (0.001, 1), 50: (0.0005, 1)},
        resnet101={1: (0.0005, 2), 10: (0.0005, 2), 50: (0.001, 2)},
    ),
    "imagenet1k": dict(
        resnet18={1: (0.001, 2), 10: (0.001, 2), 50: (0.001, 1)},
        resnet50={1: (0.001, 2), 10: (0.001, 2), 50: (0.001, 1)},
        resnet101={1: (0.001, 2), 10: (0.001, 2), 50: (0.0005, 2)},
    ),
}


def _paper(ds: str, ipc: int, size: int) -> dict:
    big = size >= 224
    small_set = ds in ("cifar10", "cifar100", "tiny_imagenet")
    classes = {
        "cifar10": 10,
        "cifar100": 100,
        "tiny_imagenet": 100,
        "imagenette": 10,
        "imagenet1k": 100,
    }[ds]  # classes per optimisation batch, as in the paper's scripts
    squeeze = {
        "cifar10": dict(epochs=200, batch_size=512, optimizer="adam", lr=0.001),
        "cifar100": dict(epochs=200, batch_size=512, optimizer="adam", lr=0.001),
        "tiny_imagenet": dict(epochs=50, batch_size=128, optimizer="sgd", lr=0.01),
        "imagenette": dict(epochs=300, batch_size=64, optimizer="sgd", lr=0.01),
        "imagenet1k": dict(epochs=90, batch_size=256, optimizer="sgd", lr=0.1),
    }[ds]
    schedule = "fixed" if ipc == 1 else ("enumerate" if ipc <= 10 else "random")
    fixed = (
        {
            "cifar10": ("mobilenetv2", "densenet121"),
            "imagenette": ("mobilenetv2", "densenet121"),
            "cifar100": ("shufflenetv2", "mobilenetv2"),
        }.get(ds, ())
        if ipc == 1
        else ()
    )
    return dict(
        name=f"{ds}_ipc{ipc}",
        ipc=ipc,
        data=dict(dataset="", image_size=size),
        # 224 px: RandomResizedCrop + flip, as torchvision's reference recipes (method.md §2)
        squeeze=dict(squeeze, augment="rrc" if big else "pad_crop"),
        prior=dict(
            source="table" if ds in PRIOR_TABLE else "compute",
            ipc=50 if ds in ("cifar10", "cifar100") else 10,
        ),
        init=dict(factor=2 if big else 1),
        recover=dict(
            jitter=32 if big else 4,
            classes_per_group=classes,
            schedule=schedule,
            fixed_members=fixed,
        ),
        relabel=dict(batch_size=10 if ds == "imagenette" else 16),
        validate=dict(
            batch_size=10 if (ipc == 1 and ds in ("cifar10", "imagenette")) else 16,
            # the presets' student is ResNet-18 (method.md §7.2)
            lr=STUDENT_LR_ETA[ds]["resnet18"][ipc][0],
            eta=float(STUDENT_LR_ETA[ds]["resnet18"][ipc][1]),
            random_real=small_set,
        ),
    )


PRESETS: dict[str, dict] = {
    # Embedded Fashion-MNIST subset on 2 CPU cores in a few minutes: every stage runs, with
    # narrow models and short schedules (the numbers are labelled as a CPU demo, not the paper's).
    "quick": dict(
        name="quick",
        ipc=10,
        device="auto",
        data=dict(dataset="builtin"),
        # The committee ships in assets/committee/ (trained on all 60,000 Fashion-MNIST images by
        # assets/make_committee.py, with these widths), so squeeze only loads it; with
        # squeeze.source=train it trains here on the embedded subset with the schedule below.
        # ShuffleNetV2 at 1/8 width has too few channels to learn in 3 epochs: 1/2 for it
        squeeze=dict(
            source="shipped",
            width=0.125,
            widths={"shufflenetv2": 0.5, "mobilenetv2": 0.25},
            epochs=3,
            batch_size=64,
            lr=0.01,
            max_train_images=2000,
        ),
        prior=dict(source="compute", ipc=1, recover_iterations=30, validate_epochs=30),
        init=dict(candidates=40, num_crops=3),
        # 120 steps instead of 4000: lr 0.05 (not 0.25) so the few steps refine the real patches
        # instead of leaving them half-way in noise (measured: 0.25 gave noisy images, -12 points).
        # With the shipped committee (no squeeze/prior minutes) the budget pays for 120 steps
        # and 60 student epochs; docs/benchmarks.md has the measured time of a whole run
        recover=dict(
            iterations=120,
            lr=0.05,
            jitter=2,
            classes_per_group=10,
            snapshot_every=5,
            checkpoint_every=20,
        ),
        validate=dict(width=0.25, epochs=60, lr=0.002, eval_every=10, compare_eval_labels=True),
    ),
    # Seconds, for tests and smoke checks: two tiny test models.
    "tiny": dict(
        name="tiny",
        ipc=2,
        device="cpu",
        data=dict(dataset="builtin"),
        squeeze=dict(
            members=("test_tiny_cnn", "test_tiny_resnet"),
            width=1.0,
            epochs=1,
            batch_size=64,
            max_train_images=300,
        ),
        prior=dict(source="compute", ipc=1, recover_iterations=3, validate_epochs=1, max_classes=2),
        init=dict(candidates=4, num_crops=2, observer=""),
        recover=dict(
            iterations=6, jitter=2, classes_per_group=10, snapshot_every=2, checkpoint_every=3
        ),
        relabel=dict(teacher="test_tiny_cnn"),
        validate=dict(student="test_tiny_cnn", epochs=2, eval_every=1, compare_eval_labels=True),
    ),
}
# The lecture budget: quick with 3x the recover steps, where benchmarks/sweep.py's repeats put
# CV-DD above its SRe2L++ twin (docs/benchmarks.md §1); everything else as quick.
_lecture = {**json.loads(json.dumps(PRESETS["quick"])), "name": "lecture"}
_lecture["recover"]["iterations"] = 360
PRESETS = {"quick": PRESETS["quick"], "lecture": _lecture, **PRESETS}  # listed after quick
for _ds, _size in (
    ("cifar10", 32),
    ("cifar100", 32),
    ("tiny_imagenet", 64),
    ("imagenette", 224),
    ("imagenet1k", 224),
):
    for _ipc in (1, 10, 50):
        PRESETS[f"{_ds}_ipc{_ipc}"] = _paper(_ds, _ipc, _size)
for _k in [k for k in PRESETS if k.startswith(("imagenette", "imagenet1k"))]:
    # torchvision 224-px committee
    PRESETS[_k]["squeeze"]["members"] = tuple(
        "tv_" + m
        for m in ("resnet18", "resnet50", "shufflenet_v2_x1_0", "mobilenet_v2", "densenet121")
    )
    PRESETS[_k]["recover"]["fixed_members"] = tuple(
        {"mobilenetv2": "tv_mobilenet_v2", "densenet121": "tv_densenet121"}[m]
        for m in PRESETS[_k]["recover"]["fixed_members"]
    )
    PRESETS[_k]["relabel"]["teacher"] = "tv_resnet18"
    PRESETS[_k]["validate"]["student"] = "tv_resnet18"
    # prior.source stays "table": the prior stage maps tv_* names and the loaded data set's name
    # ("imagenet") onto the table's keys (method.md §3)
for _k in [k for k in PRESETS if k.startswith("imagenet1k")]:
    # torchvision's published ImageNet weights from a local torch hub folder, as the paper
    # (method.md §2): needs --set squeeze.weights_dir=DIR; squeeze.source=train trains instead
    PRESETS[_k]["squeeze"]["source"] = "torchvision"

PRESET_NOTES = {
    "quick": "embedded Fashion-MNIST subset, CPU, IPC 10, narrow 5-model committee, all stages",
    "tiny": "seconds: two tiny test models, IPC 2 (tests, smoke checks)",
    "lecture": "quick with 360 recover steps: where CV-DD beats its SRe2L++ twin over 8 seeds",
    **{k: "paper defaults, needs --data PATH" for k in PRESETS if "_ipc" in k},
    **{
        k: "paper defaults, needs --data PATH --set squeeze.weights_dir=DIR (torchvision weights)"
        for k in PRESETS
        if k.startswith("imagenet1k")
    },
}

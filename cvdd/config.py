"""Run configuration: frozen dataclasses, dict round trip, `section.key=value` overrides, presets.

Defaults follow the paper and the official CV-DD scripts; each field says its unit and source.
The preset dicts live in `presets.py` (plain data); this module imports them, never the reverse.
Loads without torch so the UI can validate a form without importing the engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from .overrides import apply_override, build_dataclass, merge
from .presets import PRESET_NOTES, PRESETS, PRIOR_TABLE
from .utils import CvddError

__all__ = [
    "DataConfig",
    "SqueezeConfig",
    "PriorConfig",
    "InitConfig",
    "RecoverConfig",
    "EXECUTION_KEYS",
    "result_settings",
    "RelabelConfig",
    "ValidateConfig",
    "RunConfig",
    "PRESETS",
    "PRESET_NOTES",
    "COMMITTEE",
    "STUDENT_ONLY",
    "PRIOR_TABLE",
    "from_preset",
    "config_hash",
]

COMMITTEE = ("resnet18", "resnet50", "shufflenetv2", "mobilenetv2", "densenet121")  # paper §3.5
# Registered models without BatchNorm: recover's BN matching and BSSL have nothing to read in
# them, so they can be students but never committee members (cvdd/models/convnet.py)
STUDENT_ONLY = ("convnet3",)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "builtin"  # "builtin" (embedded Fashion-MNIST subset) or a local path
    image_size: int = 0  # pixels; 0 = the data set's native size


@dataclass(frozen=True)
class SqueezeConfig:
    """Stage 0: train the committee on real data (short schedules on purpose, as in the paper)."""

    members: tuple[str, ...] = COMMITTEE  # paper §3.5; one member = SRe2L++
    width: float = 1.0  # channel multiplier for the small-resolution models
    widths: dict = field(default_factory=dict)  # member -> width, overriding `width` for it
    epochs: int = 200  # paper's CIFAR schedule: 200 epochs
    batch_size: int = 512  # images per step
    optimizer: str = "adam"  # adam | sgd
    lr: float = 0.001  # Adam 1e-3, cosine to 0 over the epochs
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    max_train_images: int = 0  # 0 = all; a class-balanced cap for CPU presets
    weights: dict = field(default_factory=dict)  # member -> local weights file (skips training)
    seed: int = 0  # committee seed, apart from the run seed, so runs share the cached committee
    # train (here, as set above) | shipped (assets/committee, Fashion-MNIST) | torchvision
    # (torchvision's published ImageNet-1K files from `weights_dir`, never downloaded)
    source: str = "train"
    weights_dir: str = ""  # torch hub folder: <dir>/checkpoints/<file>.pth or <dir>/<file>.pth
    # training crops: auto (RandomResizedCrop above 64 px, else pad_crop) | pad_crop | rrc
    augment: str = "auto"

    def width_of(self, name: str) -> float:
        """A member's channel multiplier: its `widths` entry, else `width`."""
        return float(self.widths.get(name, self.width))


@dataclass(frozen=True)
class PriorConfig:
    """Stage 1: prior performance alpha per member (paper §3.6, App. C)."""

    source: str = "compute"  # compute (SRe2L++ alone per member) | table (paper's values) | user
    values: dict = field(default_factory=dict)  # member -> alpha in %, for source=user
    ipc: int = 50  # paper: IPC 50 for CIFAR, 10 elsewhere
    recover_iterations: int = 4000  # recover steps of each SRe2L++-alone run
    validate_epochs: int = 300  # student epochs of each run
    max_classes: int = 0  # 0 = all; a cheaper estimate on the first classes only (CPU presets)


@dataclass(frozen=True)
class InitConfig:
    """Stage 2: RDED-style real-patch initialisation (paper §3.4)."""

    method: str = "rded"  # rded | real (random real images) | noise (SRe2L's Gaussian)
    candidates: int = 300  # mipc: real images scored per class
    num_crops: int = 5  # RandomResizedCrops per candidate, best (lowest CE) kept
    factor: int = 1  # patches per side stitched into one image (1 for <= 64 px, 2 for 224 px)
    observer: str = ""  # committee member that scores patches; "" = first member


@dataclass(frozen=True)
class RecoverConfig:
    """Stage 3: pixel optimisation with committee voting (paper §3.6)."""

    iterations: int = 4000  # Adam steps per image group; 0 = the initial (RDED) images unchanged
    lr: float = 0.25  # Adam, cosine to 0, no warm-up
    beta1: float = 0.5
    beta2: float = 0.9
    bn_loss_weight: float = 0.01  # r_bn
    first_bn_multiplier: float = 10.0  # weight of the first BN layer's term
    augment: bool = True  # shared RandomResizedCrop + flip + roll per group (SRe2L++)
    jitter: int = 4  # max roll in pixels (4 for <= 64 px, 32 for 224 px)
    num_experts: int = 2  # N, members voting for one IPC index
    temperature: float = 5.0  # T in softmax(alpha / T)
    voter: str = "prior"  # prior | equal | random (Table 6 ablation)
    schedule: str = "auto"  # auto | fixed | enumerate | random | per_iteration
    fixed_members: tuple[str, ...] = ()  # for schedule=fixed; () = top-N by prior
    classes_per_group: int = 100  # bs: classes per optimisation batch (one image per class)
    groups_per_wave: int = 0  # groups per wave (one batch); 0 = as many as memory_gb allows
    memory_gb: float = 0.0  # GiB recover may use on its device; 0 = the free memory (GPU or RAM)
    trace_every: int = 0  # steps between trace rows (each reads the GPU); 0 = 1 on CPU, 20 on GPU
    snapshot_every: int = 100  # steps between saved image grids
    checkpoint_every: int = 200  # steps between checkpoints
    precision: str = "fp32"  # fp32 | bf16 (GPU fast path: bf16 autocast + channels_last)
    # CUDA only: each wave's step captured once as a CUDA graph and replayed (method.md §5.3);
    # the same images up to float rounding, as with another wave size (EXECUTION_KEYS)
    cuda_graph: bool = False


# keys renamed since runs were made, (section, old key) -> new key: an older config.json still
# loads for `resume`, and config_hash keeps the old spelling so its checkpoints still match
RENAMED = {("recover", "groups_per_step"): "groups_per_wave"}

# keys that change how recover runs but not the images it makes beyond float rounding (left out
# of cache keys)
EXECUTION_KEYS = (
    "groups_per_wave",
    "memory_gb",
    "cuda_graph",
    "trace_every",
    "snapshot_every",
    "checkpoint_every",
)


def result_settings(cfg: RecoverConfig) -> dict:
    """The recover settings that decide the images: every key but EXECUTION_KEYS."""
    return {k: v for k, v in vars(cfg).items() if k not in EXECUTION_KEYS}


@dataclass(frozen=True)
class RelabelConfig:
    """Stage 4: Batch-Specific Soft Labeling (paper §3.7)."""

    teacher: str = "resnet18"  # a member name, or "committee" (prior-weighted logits)
    mode: str = "bssl"  # bssl (teacher BN uses the batch's statistics) | eval (running stats)
    committee_temperature: float = 10.0  # softmax(alpha / 10) over teachers
    batch_size: int = 16  # images per labelling batch (= student batch)


@dataclass(frozen=True)
class ValidateConfig:
    """Stage 5: train a student from scratch on the distilled set."""

    student: str = "resnet18"  # the headline student (result.json's student_top1)
    # architectures trained on the distilled set with the run's labels (paper Table 4);
    # () = (student,). result.json's `students` gives each one's top-1
    students: tuple[str, ...] = ()
    width: float = 1.0  # student channel multiplier
    epochs: int = 300
    batch_size: int = 16
    lr: float = 0.001  # AdamW base lr
    eta: float = 1.0  # smoothed cosine: lr = base * 0.5 * (1 + cos(pi * epoch / (epochs * eta)))
    weight_decay: float = 0.01  # on conv/linear weights only
    temperature: float = 20.0  # KL temperature
    cutmix: bool = True  # CutMix with lambda ~ Beta(1, 1) per batch
    eval_every: int = 10  # epochs between test evaluations
    compare_eval_labels: bool = False  # also train a student on eval-mode (non-BSSL) labels
    random_real: bool = True  # baseline: same number of random real images, same labelling
    # also train every student on the distilled and the random-real images with one-hot
    # labels alone (cross-entropy, no teacher): the images' own value (method.md §7.3)
    hard_labels: bool = False


@dataclass(frozen=True)
class RunConfig:
    name: str = "custom"  # preset name, for humans
    ipc: int = 10  # images per class
    seed: int = 0  # drives every stage through explicit generators
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads in the worker; 0 = (cores - 1) // workers allowed, 1..8
    cache_dir: str = ""  # committee cache; "" = <runs dir>/_cache
    data: DataConfig = DataConfig()
    squeeze: SqueezeConfig = SqueezeConfig()
    prior: PriorConfig = PriorConfig()
    init: InitConfig = InitConfig()
    recover: RecoverConfig = RecoverConfig()
    relabel: RelabelConfig = RelabelConfig()
    validate: ValidateConfig = ValidateConfig()

    def __post_init__(self) -> None:
        _check(self)

    @property
    def method(self) -> str:
        return "sre2l++" if len(self.squeeze.members) == 1 else "cvdd"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """A config from its dict; an older config.json's renamed keys load (`RENAMED`)."""
        d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
        for (section, old), new in RENAMED.items():
            part = d.get(section)
            if isinstance(part, dict) and old in part and new not in part:
                part[new] = part.pop(old)
        return build_dataclass(cls, d, "")

    def replace(self, overrides: list[str] | dict) -> RunConfig:
        """New config with `section.key=value` strings (or a nested dict) applied."""
        d = self.to_dict()
        if isinstance(overrides, dict):
            merge(d, overrides)
        else:
            for item in overrides:
                apply_override(d, item)
        return RunConfig.from_dict(d)


# ---------------------------------------------------------------------------------------------
# checks


def _need(ok: bool, field: str | None, msg: str) -> None:
    if not ok:
        raise CvddError(msg, field=field)


def _check(c: RunConfig) -> None:
    _check_committee(c)
    _check_choices(c)
    _check_numbers(c)


def _check_committee(c: RunConfig) -> None:
    members, r = c.squeeze.members, c.recover
    _need(c.ipc >= 1, "ipc", f"ipc must be >= 1 (got {c.ipc}); use --set ipc=10")
    _need(len(members) >= 1, "squeeze.members", "squeeze.members is empty; name at least one model")
    no_bn = [m for m in members if m in STUDENT_ONLY]
    _need(
        not no_bn,
        "squeeze.members",
        f"{', '.join(no_bn)} has no BatchNorm layer, so it cannot be a committee member (BN "
        f"matching and BSSL need BN); use it as a student: validate.students=resnet18,"
        f"{','.join(no_bn)}",
    )
    dup = len(set(members)) != len(members)
    _need(not dup, "squeeze.members", f"squeeze.members has duplicates: {list(members)}")
    _need(
        1 <= r.num_experts <= len(members),
        "recover.num_experts",
        f"recover.num_experts={r.num_experts} but the committee has {len(members)} "
        f"member(s) {list(members)}; use --set recover.num_experts="
        f"{min(2, len(members))} or add members",
    )
    if r.schedule == "fixed" and r.fixed_members:
        _need(
            len(r.fixed_members) == r.num_experts and set(r.fixed_members) <= set(members),
            "recover.fixed_members",
            f"recover.fixed_members {list(r.fixed_members)} must be {r.num_experts} of "
            f"{list(members)}",
        )
    if c.relabel.teacher != "committee":
        _need(
            c.relabel.teacher in members,
            "relabel.teacher",
            f"relabel.teacher={c.relabel.teacher!r} is not a committee member "
            f"{list(members)}; choose one of them or 'committee'",
        )
    if c.prior.source == "user":
        missing = [m for m in members if m not in c.prior.values]
        _need(
            not missing,
            "prior.values",
            f"prior.source=user but prior.values lacks {missing}; "
            "e.g. --set prior.values='{\"resnet18\": 63.0}'",
        )


def _check_choices(c: RunConfig) -> None:
    r = c.recover
    _choice("recover.voter", r.voter, ("prior", "equal", "random"))
    _choice(
        "recover.schedule", r.schedule, ("auto", "fixed", "enumerate", "random", "per_iteration")
    )
    _choice("recover.precision", r.precision, ("fp32", "bf16"))
    _choice("prior.source", c.prior.source, ("compute", "table", "user"))
    _choice("init.method", c.init.method, ("rded", "real", "noise"))
    _choice("relabel.mode", c.relabel.mode, ("bssl", "eval"))
    _choice("squeeze.optimizer", c.squeeze.optimizer, ("adam", "sgd"))
    _choice("squeeze.source", c.squeeze.source, ("train", "shipped", "torchvision"))
    _choice("squeeze.augment", c.squeeze.augment, ("auto", "pad_crop", "rrc"))


# (key, lowest allowed value, why) for integer settings
_MINIMUMS = (
    ("recover.iterations", 0, ""),
    ("recover.classes_per_group", 1, ""),
    ("validate.epochs", 1, ""),
    ("squeeze.epochs", 0, ""),
    ("validate.batch_size", 2, " (BSSL needs batch statistics)"),
    ("relabel.batch_size", 2, " (BSSL needs batch statistics)"),
    ("init.factor", 1, ""),
    ("init.candidates", 1, ""),
    ("init.num_crops", 1, ""),
)


def _check_numbers(c: RunConfig) -> None:
    for sec in ("squeeze", "recover", "relabel", "validate"):
        for f in fields(getattr(c, sec)):
            v, key = getattr(getattr(c, sec), f.name), f"{sec}.{f.name}"
            if isinstance(v, float):
                ok = math.isfinite(v) and v >= 0
                _need(ok, key, f"{key} must be a finite number >= 0 (got {v})")
    _need(c.recover.lr > 0, "recover.lr", f"recover.lr must be > 0 (got {c.recover.lr})")
    t = c.recover.temperature
    _need(t > 0, "recover.temperature", f"recover.temperature must be > 0 (got {t})")
    for key, lo, why in _MINIMUMS:
        sec, name = key.split(".")
        v = getattr(getattr(c, sec), name)
        _need(v >= lo, key, f"{key} must be >= {lo}{why} (got {v})")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    _need(value in allowed, name, f"unknown {name} {value!r}; choose from {', '.join(allowed)}")


def config_hash(cfg: RunConfig, sections: tuple[str, ...] | None = None) -> str:
    """Stable short hash of the whole config (or some sections), for checkpoints and caches."""
    d = cfg.to_dict()
    for (section, old), new in RENAMED.items():  # the old spelling: old checkpoints still match
        d[section][old] = d[section].pop(new)
    if sections is not None:
        d = {k: d[k] for k in sections}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def from_preset(name: str, overrides: list[str] | None = None, **top: Any) -> RunConfig:
    """Build a config from a preset name, then `section.key=value` overrides."""
    if name not in PRESETS:
        raise CvddError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    d = RunConfig().to_dict()
    merge(d, json.loads(json.dumps(PRESETS[name])))  # deep copy, tuples -> lists
    for k, v in top.items():
        if v is not None:
            apply_override(d, f"{k}={v}") if "." in k else d.__setitem__(k, v)
    for item in overrides or []:
        apply_override(d, item)
    return RunConfig.from_dict(d)

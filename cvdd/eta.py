"""The time left: of a stage (`StageClock`), and of the whole run (`RunClock`, `stage_work`).
Torch-free; RunDir.progress writes both into every progress event (eta_s, run_eta_s).

The stage's ETA comes from its stage-wide step counter:

A stage counts every sub-task's steps in one total (squeeze and prior: every member; validate:
every student), so the rate is taken over the whole stage so far, not per sub-task: a new
member or student does not restart the estimate. Two things would still make it jump:
- work that was skipped (a cached member advances the counter by a whole member at once), which
  would make the stage look fast and the ETA climb back afterwards: such jumps move the
  counter but are not counted as work done;
- a counter that goes back (a writer that counts per sub-task, or a resumed stage): the
  estimate keeps its rate and follows the counter from there.
"""

from __future__ import annotations

__all__ = [
    "StageClock",
    "RunClock",
    "Clocks",
    "stage_work",
    "student_units",
    "student_weights",
    "recorded_work",
    "replay",
    "fmt_s",
    "COST_S",
]

# A jump of several steps counts as skipped work when it came this many times faster than the
# rate so far, or, before any rate, within SKIP_S: cached members advance a whole member's
# steps within milliseconds, while stages call progress once per step they work.
SKIP_FACTOR = 4.0
SKIP_S = 1.0


class StageClock:
    """Seconds per step of one stage, from the first progress call of this worker on."""

    def __init__(self, now: float, step: int) -> None:
        self.t0 = self.last_t = now
        self.last_step = step
        self.worked = 0  # steps that took their time (skipped and repeated ones excluded)
        self.total = 0  # the stage's step count at the last call

    def seconds_per_step(self) -> float | None:
        return (self.last_t - self.t0) / self.worked if self.worked else None

    def update(self, now: float, step: int, total: int) -> float | None:
        """Take a progress call; return the seconds left, or None before any step was timed."""
        ds, dt = step - self.last_step, now - self.last_t
        sps = self.seconds_per_step()
        skipped = ds > 1 and (dt < SKIP_S if sps is None else dt * SKIP_FACTOR < ds * sps)
        if ds > 0 and not skipped:
            self.worked += ds
        self.last_t, self.last_step, self.total = now, step, total
        sps = self.seconds_per_step()
        if sps is None or now <= self.t0:
            return None
        return max(0, total - step) * sps


# -- the whole run --------------------------------------------------------------------------
# Seconds per unit of work on one CPU thread of this project's 2-core machine, from the quick
# preset (docs/benchmarks.md). Only their ratios matter: RunClock rescales them by the speed
# measured in the run itself, so a faster device or a busy machine moves every stage alike.
# Units are image passes at 28x28 (scaled by height x width only: channels change a network's
# first layer, not its cost; measured: squeeze, recover and validate of a 32x32x3 zip ran at
# 1.1-1.5x their 28x28 forecast with this scaling, 0.3-0.5x with channels counted), and a
# committee member's epoch (squeeze) from that zip run: recover counts an image
# once per voting member per step, relabel once per committee member (the BN analysis runs
# every member over every image, before and after recover), train once per student epoch,
# eval once per test image per evaluation.
COST_S = {
    "squeeze": 3.0e-3,  # per image per epoch per member, training (mean of the narrow five)
    "init": 1.0e-3,  # per candidate crop scored by the observer
    "recover": 5.3e-3,  # per image per voting member per step (forward + input backward)
    "relabel": 9.0e-3,  # per image per committee member, labels and BN analysis
    "train": 7.3e-3,  # per image per student epoch (student step + teacher labels)
    "eval": 7.3e-4,  # per test image per evaluation
}
# A student's training and evaluation against the ResNet-18 one's, per architecture (others
# count as 1): measured from students.json `seconds` of eight sweep runs, ConvNet-3 took 0.3-0.45
# of ResNet-18's time on the same images.
STUDENT_COST = {"convnet3": 0.35}
STAGE_FIXED_S = 0.5  # loading models, writing files: per stage, whatever its size


def _evals(epochs: int, every: int) -> int:
    """Test evaluations of one student: every `every` epochs and after the last."""
    return len({e for e in range(every, epochs + 1, max(every, 1))} | {epochs}) if epochs else 0


def student_units(archs: list[str]) -> float:
    """validate's students counted in ResNet-18 students (`STUDENT_COST`)."""
    return sum(STUDENT_COST.get(a, 1.0) for a in archs)


def student_weights(archs: list[str]) -> list[int]:
    """Each student's steps in validate's one progress count: its cost in hundredths."""
    return [round(100 * STUDENT_COST.get(a, 1.0)) for a in archs]


def stage_work(
    cfg, *, classes: int, train_size: int, test_size: int, pixels: int, students: float
) -> dict[str, float]:
    """The forecast seconds of every stage at COST_S's speed, from its size in the config:
    `cfg` a RunConfig, `pixels` = height x width of one image, `students` the validate
    stage's students in ResNet-18 units (`student_units`). Cached work (a shipped or cached
    committee, shipped priors) is forecast as none: a cache miss shows up in the measured speed
    instead."""
    px = pixels / 784.0
    n_img, sq, pr, v = classes * cfg.ipc, cfg.squeeze, cfg.prior, cfg.validate
    members = len(sq.members)
    work = {"squeeze": 0.0, "prior": 0.0}
    if sq.source == "train":
        n_train = min(train_size, sq.max_train_images or train_size)
        work["squeeze"] = COST_S["squeeze"] * px * members * sq.epochs * n_train
    if pr.source == "compute" and sq.source == "train" and members > 1:
        k = min(classes, pr.max_classes or classes) * pr.ipc  # one SRe2L++ run per member
        per = (
            COST_S["recover"] * pr.recover_iterations * k + COST_S["train"] * pr.validate_epochs * k
        )
        per += COST_S["eval"] * test_size * _evals(pr.validate_epochs, v.eval_every)
        work["prior"] = px * members * per
    rded = cfg.init.method == "rded"
    crops = cfg.init.candidates * cfg.init.num_crops if rded else 0
    work["init"] = COST_S["init"] * px * classes * crops
    voters = min(cfg.recover.num_experts, members)
    work["recover"] = COST_S["recover"] * px * cfg.recover.iterations * n_img * voters
    work["relabel"] = COST_S["relabel"] * px * n_img * members
    # the last evaluation scores the whole split, the curve's points a strided subset
    curve_images = min(test_size, 1000)  # cvdd.train.CURVE_IMAGES (train.py imports torch)
    evals = test_size + curve_images * (_evals(v.epochs, v.eval_every) - 1)
    per_student = COST_S["train"] * v.epochs * n_img + COST_S["eval"] * evals
    work["validate"] = px * (students * per_student + COST_S["eval"] * test_size)
    return {s: w + STAGE_FIXED_S for s, w in work.items()}


def recorded_work(cfg, dataset: dict, students: float) -> dict[str, float]:
    """`stage_work` of a recorded run: `dataset` its config.json meta.dataset (for replays)."""
    return stage_work(
        cfg,
        classes=dataset["num_classes"],
        train_size=dataset["train_size"],
        test_size=dataset["test_size"],
        pixels=dataset["image_size"] ** 2,
        students=students,
    )


class RunClock:
    """The whole run's seconds left: the current stage's own ETA (its measured rate, once it
    has timed a few steps) plus the stages still to come, each its forecast (`stage_work`)
    times the run's speed: measured seconds over forecast seconds of the work done so far in
    this worker. Stages that were mostly skipped (cached, resumed) do not count towards it."""

    MIN_STEPS, MIN_S = 3, 2.0  # before this much of a stage, the forecast stands for its rate

    def __init__(self, work: dict[str, float]) -> None:
        self.work = dict(work)  # stage -> forecast seconds, for the stages not finished yet
        self.spent = self.forecast = 0.0  # measured and forecast seconds of finished stages

    def finish(self, stage: str, seconds: float, clock: StageClock | None) -> None:
        forecast = self.work.pop(stage, 0.0)
        done = clock.worked / clock.total if clock is not None and clock.total else 0.0
        if forecast > STAGE_FIXED_S and done >= 0.5:
            self.spent += seconds
            self.forecast += forecast * min(done, 1.0)

    def speed(self, stage: str, clock: StageClock) -> float | None:
        """Measured seconds per forecast second so far (None before anything was timed)."""
        spent, forecast = self.spent, self.forecast
        if clock.total and clock.worked and self.work.get(stage, 0.0) > STAGE_FIXED_S:
            spent += clock.last_t - clock.t0
            forecast += self.work.get(stage, 0.0) * clock.worked / clock.total
        return spent / forecast if forecast > 0 and spent > 0 else None

    def eta(self, stage: str, clock: StageClock, stage_eta: float | None) -> float | None:
        k = self.speed(stage, clock)
        if k is None:
            return None
        timed = clock.worked >= self.MIN_STEPS and clock.last_t - clock.t0 >= self.MIN_S
        if stage_eta is None or not timed:
            left = 1.0 - min(clock.last_step / clock.total, 1.0) if clock.total else 1.0
            stage_eta = k * self.work.get(stage, 0.0) * left
        return stage_eta + k * sum(w for s, w in self.work.items() if s != stage)


class Clocks:
    """Every ETA clock of one worker (RunDir holds one): a StageClock per stage and, once the
    pipeline has forecast the stages (`plan`), the RunClock."""

    def __init__(self) -> None:
        self.stages: dict[str, StageClock] = {}
        self.run: RunClock | None = None

    def plan(self, work: dict[str, float]) -> None:
        self.run = RunClock(work)

    def start(self, stage: str) -> None:
        self.stages.pop(stage, None)

    def end(self, stage: str, seconds: float) -> None:
        if self.run is not None:
            self.run.finish(stage, seconds, self.stages.get(stage))

    def update(self, stage: str, now: float, step: int, total: int) -> tuple:
        """(the stage's seconds left, the run's seconds left); None where not known yet."""
        clock = self.stages.get(stage)
        if clock is None:
            clock = self.stages[stage] = StageClock(now, step)
        eta = clock.update(now, step, total)  # every call: the clock must see each step
        return eta, (self.run.eta(stage, clock, eta) if self.run is not None else None)


def replay(events: list[dict], work: dict[str, float]) -> list[tuple[float, float | None]]:
    """(t, the run's seconds left) at each progress event of a recorded run (events.jsonl),
    as a worker with this forecast would have written them: for tests and benchmarks."""
    clocks, out = Clocks(), []
    clocks.plan(work)
    for e in events:
        kind, stage = e.get("kind"), e.get("stage")
        if kind == "stage_start":
            clocks.start(stage)
        elif kind == "stage_end":
            clocks.end(stage, float(e.get("seconds") or 0.0))
        elif kind == "progress":
            out.append((e["t"], clocks.update(stage, e["t"], e["step"], e["total"])[1]))
    return out


def fmt_s(s: float | None) -> str:
    """Seconds as the CLI row shows them: 2m05s, 1h03m; '?' for None."""
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

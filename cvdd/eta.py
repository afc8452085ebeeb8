"""The ETA of a stage, from its stage-wide step counter (torch-free; used by RunDir.progress).

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

__all__ = ["StageClock"]

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

    def seconds_per_step(self) -> float | None:
        return (self.last_t - self.t0) / self.worked if self.worked else None

    def update(self, now: float, step: int, total: int) -> float | None:
        """Take a progress call; return the seconds left, or None before any step was timed."""
        ds, dt = step - self.last_step, now - self.last_t
        sps = self.seconds_per_step()
        skipped = ds > 1 and (dt < SKIP_S if sps is None else dt * SKIP_FACTOR < ds * sps)
        if ds > 0 and not skipped:
            self.worked += ds
        self.last_t, self.last_step = now, step
        sps = self.seconds_per_step()
        if sps is None or now <= self.t0:
            return None
        return max(0, total - step) * sps

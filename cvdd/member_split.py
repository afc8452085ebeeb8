"""The order the squeeze stage makes its committee members in (cvdd/stages/squeeze.py): one after
another on one process; under torchrun, the members not cached round-robin over the ranks.

A member's training depends on the run's seed and its name alone (squeeze.py seeds its model and
its generator per member), never on the rank that trains it or on the members trained before it
there, so K processes make the committee of one process bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from . import dist
from .context import Context
from .utils import CvddError, StopRequested

STAGE = "squeeze"

# cached(name, t0): the record of a member cached by an earlier run, or None
Cached = Callable[[str, float], "dict | None"]
# make(name, t0, at=, pace=): train (or evaluate) a member, cache its weights, return its record;
# its progress counts `at` members' worth of steps done before it and `pace` for each of its own
Make = Callable[..., dict]


def member_records(
    ctx: Context, names: Sequence[str], *, cached: Cached, make: Make, per_member: int
) -> list[dict]:
    """Every member's members.json record, in `names` order (on every rank under torchrun)."""
    if dist.is_distributed():
        return _split(ctx, names, cached=cached, make=make, per_member=per_member)
    out, total = [], per_member * len(names)
    for k, name in enumerate(names):
        t0 = time.time()
        rec = cached(name, t0)
        if rec is None:
            rec = make(name, t0, at=k)
        else:
            ctx.rd.progress(STAGE, (k + 1) * per_member, total, label=name, force=True)
        out.append(rec)
    return out


def _split(
    ctx: Context, names: Sequence[str], *, cached: Cached, make: Make, per_member: int
) -> list[dict]:
    """torchrun: rank 0 looks every member up in the cache (it alone logs, and deletes a corrupt
    entry); the others are made round-robin over the ranks, each rank writing its own members'
    cache files, then gathered. A stop or an error on any rank is raised on every rank after the
    gather: the members finished by then are cached, so a resume makes only the rest."""
    found = dist.run_on_main(lambda: _lookup(names, cached))
    todo = [(k, name) for k, name in enumerate(names) if k not in found]
    world, share, outcome, err = dist.world(), {}, ("ok", "", None), None
    try:
        for j, (k, name) in enumerate(dist.shard(todo)):
            # rank 0's progress stands for all ranks: the earlier waves are done, and this wave's
            # members (one a rank) move at rank 0's pace
            at, pace = len(found) + j * world, min(world, len(todo) - j * world)
            share[k] = make(name, time.time(), at=at, pace=pace)
    except StopRequested:
        outcome = ("stop", "", None)
    except Exception as e:  # the other ranks wait in the gather: they must hear of it
        outcome, err = ("error", str(e) or repr(e), getattr(e, "field", None)), e
    parts = dist.all_gather_object((outcome, share))
    _raise_any(parts, err)
    if todo:
        # rank 0 alone logs: the others' members are named here with their scores
        made = "; ".join(
            f"rank {r} made "
            + (", ".join(f"{names[k]} {sh[k]['test_top1']:.2f}%" for k in sorted(sh)) or "none")
            for r, (_, sh) in enumerate(parts)
        )
        ctx.rd.log(f"members split over {world} ranks (test top-1): {made}", stage=STAGE)
    total = per_member * len(names)
    ctx.rd.progress(STAGE, total, total, label=names[-1], force=True)
    got = {**found, **{k: rec for _, sh in parts for k, rec in sh.items()}}
    return [got[k] for k in range(len(names))]


def _lookup(names: Sequence[str], cached: Cached) -> dict[int, dict]:
    """Position in `names` -> record, of the members an earlier run cached."""
    out = {}
    for k, name in enumerate(names):
        rec = cached(name, time.time())
        if rec is not None:
            out[k] = rec
    return out


def _raise_any(parts: list, err: BaseException | None) -> None:
    """This rank's own error first, then another rank's (as a CvddError), then a stop."""
    if err is not None:
        raise err
    for r, ((how, msg, field), _) in enumerate(parts):
        if how == "error":
            raise CvddError(f"the squeeze stage failed on rank {r}: {msg}", field=field)
    if any(how == "stop" for (how, _, _), _ in parts):
        raise StopRequested

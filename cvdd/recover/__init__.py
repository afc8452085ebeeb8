"""Recover (paper §3.6, method.md §5): optimise pixels so each group's BN statistics and
predictions match a prior-weighted committee. Where each part lives:

- step.py: ONE step of a wave, in order (`recover_step`: augment, committee forward with the
  BN-statistic hooks, loss, backward, Adam, clamp), with the committee loss `wave_loss`.
- loop.py: `recover_images`, the entry point: the waves in turn, each wave's step loop, the
  trace, snapshots, checkpoints and stop.
- committee.py: groups (one IPC index x a chunk of classes), who votes for each, their weights,
  and each group's own random stream.
- waves.py: a wave's live state (pixels, Adam, streams), opening one from scratch or from a
  checkpoint, the order waves run in, snapshots and checkpoint records.
- plan.py: the memory plan: how many groups share a wave (cvdd/memory.py holds the budget).
- graph.py: the CUDA-graph variant of the step (`recover.cuda_graph`).
- reference.py: the straightforward step, the yardstick tests and benchmarks compare against.

The stage around it (files, torchrun, resume) is cvdd/stages/recover.py. Import from the
modules themselves; this package re-exports nothing.
"""

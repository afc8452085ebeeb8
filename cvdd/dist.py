"""Several processes on torchrun: rank, world size, and the few collectives the pipeline uses.

`torchrun --nproc_per_node K -m cvdd run ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without them
every helper here is the one-process identity (rank 0 of 1, no process group, no collective).
All traffic is small pickled host objects at stage boundaries (uint8 images, results), so one
gloo group carries it on CPU and GPU alike: each rank computes on cuda:LOCAL_RANK, and a rank
that waits for rank 0 sleeps in a socket instead of spinning a GPU kernel.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from .rundir import RunDir
from .utils import CvddError, StopRequested

__all__ = [
    "init",
    "is_distributed",
    "rank",
    "world",
    "local_rank",
    "is_main",
    "barrier",
    "broadcast_object",
    "all_gather_object",
    "run_on_main",
    "finish",
    "leave",
    "shard",
    "FollowerRunDir",
]

T = TypeVar("T")
# a rank waits in a collective while rank 0 alone runs a stage, or for the slowest rank of a
# split one (one squeeze member may take hours); torchrun ends every rank when one fails, so a
# long timeout never hides a crash
TIMEOUT = timedelta(days=7)


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init() -> None:
    """Join torchrun's process group (gloo) once; nothing when started as one process."""
    if _env_world() <= 1:
        return
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group(backend="gloo", timeout=TIMEOUT)


def is_distributed() -> bool:
    if _env_world() <= 1:
        return False
    import torch.distributed as td

    return td.is_initialized()


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0) if is_distributed() else 0


def world() -> int:
    return _env_world() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if is_distributed() else 0


def is_main() -> bool:
    """Rank 0: the one process that creates, locks and writes the run directory."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        import torch.distributed as td

        td.barrier()


def finish() -> None:
    """Leave the process group cleanly: without it, a rank that exits first can make a peer's
    transport thread abort the peer (seen under load as 'terminate called ...', SIGABRT)."""
    if is_distributed():
        import torch.distributed as td

        td.barrier()
        td.destroy_process_group()


def leave(code: int, *, clean: bool) -> int:
    """End a torchrun rank with exit status `code`; one process: return `code`.

    `clean` (every rank reached the same point: done, stopped, or rank 0's error raised on all)
    leaves the process group first. Then the rank ends with os._exit after flushing its output:
    the interpreter's own shutdown would destroy the transport's C++ threads in an order that,
    under load, aborted a rank that had finished correctly ('terminate called without an active
    exception'). Every file of the run is closed by then; nothing else is left to tear down."""
    if not is_distributed():
        return code
    if clean:
        try:
            finish()
        except Exception:  # a peer already gone: torchrun reports it, keep this rank's status
            code = code or 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing to flush
            stream.flush()
    os._exit(code)


def broadcast_object(obj: T, src: int = 0) -> T:
    """`obj` of rank `src` on every rank (pickled)."""
    if not is_distributed():
        return obj
    import torch.distributed as td

    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    import torch.distributed as td

    out: list[Any] = [None] * world()
    td.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], T]) -> T:
    """fn() on rank 0 only; its value on every rank. A stop or an error on rank 0 is raised on
    every rank (on the others as a StopRequested or a CvddError with rank 0's message)."""
    if not is_distributed():
        return fn()
    outcome: tuple[str, Any] = ("ok", None)
    err: BaseException | None = None
    if is_main():
        try:
            outcome = ("ok", fn())
        except StopRequested as e:
            outcome, err = ("stop", None), e
        except BaseException as e:  # the others must leave the collective too
            outcome, err = ("error", str(e) or repr(e)), e
    outcome = broadcast_object(outcome)
    if err is not None:
        raise err
    if outcome[0] == "stop":
        raise StopRequested
    if outcome[0] == "error":
        raise CvddError(f"rank 0 failed: {outcome[1]}")
    return outcome[1]


def shard(items: list[T]) -> list[T]:
    """This rank's share of `items`: round-robin by position (all of them on one process)."""
    return items[rank() :: world()]


class FollowerRunDir(RunDir):
    """A rank other than 0: reads the run directory, writes nothing (no lock, events, files)."""

    def acquire_lock(self) -> None:
        pass

    def release_lock(self) -> None:
        pass

    def update_meta(self, **meta: Any) -> None:
        pass

    def append_event(self, kind: str, stage: str | None = None, **fields: Any) -> dict:
        return {}

    def write_json(self, rel: str, obj: Any):
        return self.path / rel

    def write_bytes(self, rel: str, data: bytes):
        return self.path / rel

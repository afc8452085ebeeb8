"""Command line: `python -m cvdd run|resume|presets|list-models` (the only place argparse is).

Progress goes to stdout as fixed-column rows; on success the last line is the run directory.
Errors print one message that names the fix and exit with code 2 (--debug shows tracebacks).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import dist
from .config import PRESET_NOTES, PRESETS, from_preset
from .data_layouts import BUILTIN_NAMES, layout_problem
from .rundir import RunDir
from .utils import CvddError, StopRequested

DEFAULT_RUNS_DIR = "runs"


def _parser() -> argparse.ArgumentParser:
    # --debug is declared once, on a parent that the main parser and every subcommand share, so
    # it works before or after the subcommand. SUPPRESS keeps a subparser's default from
    # overwriting a --debug given before the subcommand; main() reads it with getattr.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    p = argparse.ArgumentParser(
        prog="python -m cvdd", description=__doc__.splitlines()[0], parents=[common]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", parents=[common], help="start a new run from a preset")
    r.add_argument(
        "--preset", default="quick", help=f"one of: {', '.join(PRESETS)} (default: quick)"
    )
    r.add_argument(
        "--data",
        help="data set: 'builtin' or a local path (CIFAR, ImageFolder, Tiny-ImageNet, IDX)",
    )
    r.add_argument(
        "--runs-dir", default=DEFAULT_RUNS_DIR, help="where run folders go (default: runs)"
    )
    r.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    r.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set recover.iterations=200 (repeatable)",
    )
    s = sub.add_parser("resume", parents=[common], help="continue a stopped or crashed run")
    s.add_argument("run_dir")
    sub.add_parser("presets", parents=[common], help="list presets")
    sub.add_parser("list-models", parents=[common], help="list registered model names")
    return p


def _create_run(args: argparse.Namespace) -> Path:
    """`run`: the preset plus the flags and --set overrides -> a new run directory."""
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.insert(0, f"data.dataset={args.data}")
    if args.seed is not None:
        overrides.insert(0, f"seed={args.seed}")
    if args.device is not None:
        overrides.insert(0, f"device={args.device}")
    cfg = from_preset(args.preset, overrides)
    if not cfg.data.dataset:
        raise CvddError(
            f"preset {args.preset!r} needs a data set: pass --data PATH "
            "(a local CIFAR/ImageFolder/Tiny-ImageNet folder)",
            field="data.dataset",
        )
    if cfg.data.dataset not in BUILTIN_NAMES and (bad := layout_problem(cfg.data.dataset)):
        raise CvddError(
            f"{bad}\nOr pass --data builtin for the embedded set.", field="data.dataset"
        )
    return RunDir.create(args.runs_dir, cfg.to_dict(), meta={"launched_by": "cli"}).path


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    try:
        if args.cmd == "presets":
            for name in PRESETS:
                print(f"{name:22s} {PRESET_NOTES.get(name, '')}")
            return 0
        if args.cmd == "list-models":
            from .models import list_models

            print("\n".join(list_models()))
            return 0
        dist.init()  # under torchrun: rank 0 creates the run dir, every rank runs it
        main_rank = dist.is_main()
        if args.cmd == "run":
            run_dir = dist.run_on_main(lambda: _create_run(args))
        else:
            run_dir = RunDir.open(args.run_dir).path
        if not main_rank:  # rank 0 prints for all
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        print(f"run dir: {run_dir.resolve()}", flush=True)
        from .pipeline import run_pipeline

        res = run_pipeline(run_dir, echo=True)
        top1 = res.get("student_top1")
        base = res.get("baselines", {}).get("random_real", {}).get("student_top1")
        if top1 is not None:
            print(f"student top-1: {top1:.2f}%")
        if base is not None:
            print(f"random-real baseline top-1: {base:.2f}%")
        print(run_dir.resolve(), flush=True)
        return dist.leave(0, clean=True)
    except StopRequested:
        print(f"stopped; continue with: python -m cvdd resume {run_dir}", file=sys.stderr)
        return dist.leave(130, clean=True)  # every rank stops at the same stage
    except CvddError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return dist.leave(2, clean=False)
    except Exception as e:  # a bug: still one line, the traceback is in events.jsonl
        if args.debug:
            raise
        print(
            f"error: unexpected {type(e).__name__}: {e}. Rerun with --debug for the traceback "
            "(also stored in the run's events.jsonl), and please report it",
            file=sys.stderr,
        )
        return dist.leave(1, clean=False)

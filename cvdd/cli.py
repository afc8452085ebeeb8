"""Command line: `python -m cvdd run|resume|check-data|report|presets|list-models` (the only
place argparse is).

Progress goes to stdout as fixed-column rows; on success the last line is the run directory.
`run --seeds 0-7 [--twin]` repeats the settings over seeds (each run's folder is the last line of
its own block), then prints each method's mean with its 95 % interval and the paired differences.
Errors print one message that names the fix and exit with code 2 (--debug shows tracebacks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

from . import dist
from .config import PRESET_NOTES, PRESETS, RunConfig, from_preset
from .data_layouts import BUILTIN_NAMES, layout_problem
from .repeats import parse_seeds, seed_values, summary_lines
from .rundir import RunDir
from .twins import create_twin
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
        help="data set: 'builtin' or a local path (CIFAR, ImageFolder, Tiny-ImageNet, IDX, or a "
        "zipped ImageFolder: photos.zip)",
    )
    r.add_argument(
        "--runs-dir", default=DEFAULT_RUNS_DIR, help="where run folders go (default: runs)"
    )
    seeds = r.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    seeds.add_argument(
        "--seeds",
        metavar="LIST",
        help="repeat over seeds, e.g. 0-7 or 0,3,5: one run per seed, in turn, each its own run "
        "dir (printed as it finishes), then each method's mean with its 95 %% interval and the "
        "paired differences",
    )
    r.add_argument(
        "--twin",
        action="store_true",
        help="after each CV-DD run, its SRe2L++ twin (same seed and budgets, a committee of one)",
    )
    r.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set recover.iterations=200 (repeatable)",
    )
    c = sub.add_parser(
        "check-data",
        parents=[common],
        help="check a data set (a zipped image folder too) and estimate a run's time on it",
    )
    c.add_argument("path", help="'builtin', a data set folder, or a zipped image folder")
    c.add_argument("--preset", default="quick", help="the run's preset (default: quick)")
    c.add_argument("--ipc", type=int, help="images per class to check for (default: preset's)")
    c.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="its data area: <runs>/_data")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    c.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    c.add_argument("--no-estimate", action="store_true", help="skip the time estimate")
    s = sub.add_parser("resume", parents=[common], help="continue a stopped or crashed run")
    s.add_argument("run_dir")
    rp = sub.add_parser(
        "report",
        parents=[common],
        help="write a run as one self-contained HTML page (offline, prints on A4)",
    )
    rp.add_argument("run_dir", help="the run folder (runs/<run id>)")
    rp.add_argument("--out", help="the HTML file to write (default: <run_dir>/report.html)")
    rp.add_argument(
        "--partial",
        action="store_true",
        help="report an unfinished run too: what it has so far, the missing parts named",
    )
    sub.add_parser("presets", parents=[common], help="list presets")
    sub.add_parser("list-models", parents=[common], help="list registered model names")
    return p


def _config(args: argparse.Namespace, seed: int | None, echo: bool = True) -> RunConfig:
    """The preset plus the flags and --set overrides, checked before anything runs."""
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.insert(0, f"data.dataset={args.data}")
    if seed is not None:
        overrides.insert(0, f"seed={seed}")
    if args.device is not None:
        overrides.insert(0, f"device={args.device}")
    cfg = from_preset(args.preset, _committee_for(args.preset, args.data, overrides, echo))
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
    if args.twin and cfg.method != "cvdd":
        raise CvddError(
            "--twin needs a committee of two or more (this config is already SRe2L++); "
            "drop --twin or name more squeeze.members",
            field="squeeze.members",
        )
    return cfg


def _run_one(args: argparse.Namespace, run_dir: Path) -> dict:
    """Run (or resume) one run dir to the end, printing its progress, results and folder."""
    args.current = run_dir
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
    return res


def _run_seeds(args: argparse.Namespace) -> None:
    """`run`: one seed (--seed) or each of --seeds in turn, each with its twin under --twin;
    after two or more runs, each method's mean and the paired differences (cvdd.repeats)."""
    seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
    # every seed's settings checked before any runs; the committee note printed once
    cfgs = [_config(args, s, echo=i == 0) for i, s in enumerate(seeds)]
    if zipfile.is_zipfile(cfgs[0].data.dataset):  # checked and extracted before a run exists
        dist.run_on_main(lambda: _check_zip(cfgs[0], args.runs_dir))
    done: list[tuple[str, int, dict]] = []
    for cfg in cfgs:
        meta = {"launched_by": "cli"}
        run_dir = dist.run_on_main(
            lambda c=cfg, m=meta: RunDir.create(args.runs_dir, c.to_dict(), meta=m).path
        )
        done.append((cfg.method, cfg.seed, _run_one(args, run_dir)))
        if args.twin:
            twin_dir = dist.run_on_main(lambda d=run_dir: create_twin(d, args.runs_dir, "cli"))
            done.append(("sre2l++", cfg.seed, _run_one(args, twin_dir)))
    if len(done) > 1:
        print(f"over {len(seeds)} seeds, student top-1 % (mean ± 95 % t half-width):")
        for line in summary_lines(seed_values(done)):
            print(f"  {line}", flush=True)


def _check_zip(cfg: RunConfig, runs_dir: str) -> None:
    """A zipped image folder: the check's summary printed (it extracts the archive once)."""
    from .datacheck import check_data, format_summary

    summary = check_data(cfg, runs_dir)
    print("\n".join(format_summary(summary)), flush=True)
    if summary["ipc_problem"]:
        raise CvddError(summary["ipc_problem"], field="ipc")


def _committee_for(
    preset: str, data: str | None, overrides: list[str], echo: bool = True
) -> list[str]:
    """A preset that loads the shipped Fashion-MNIST committee trains one instead on other
    data (`squeeze.source=train`), unless the overrides choose the source themselves."""
    shipped = (
        PRESETS[preset].get("squeeze", {}).get("source") == "shipped"
        if preset in PRESETS
        else False
    )
    chosen = any(o.split("=", 1)[0].strip() == "squeeze.source" for o in overrides)
    if not shipped or chosen or data in (None, *BUILTIN_NAMES):
        return overrides
    if echo:
        print(
            "squeeze: the shipped committee fits only the built-in data; training one on this "
            "data (squeeze.source=train)",
            file=sys.stderr,
        )
    return ["squeeze.source=train", *overrides]


def _check_data(args: argparse.Namespace) -> int:
    """`check-data`: the summary of a data set as lines, or as JSON (the New run page's)."""
    from .datacheck import check_data, format_summary

    overrides = [f"data.dataset={args.path}", *args.overrides]
    if args.ipc is not None:
        overrides.append(f"ipc={args.ipc}")
    cfg = from_preset(args.preset, _committee_for(args.preset, args.path, overrides, False))
    summary = check_data(cfg, args.runs_dir, estimate=not args.no_estimate)
    print(json.dumps(summary) if args.json else "\n".join(format_summary(summary)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)
    args.current = None  # the run dir being run, for the resume hint after a stop
    try:
        if args.cmd == "presets":
            for name in PRESETS:
                print(f"{name:22s} {PRESET_NOTES.get(name, '')}")
            return 0
        if args.cmd == "list-models":
            from .models import list_models

            print("\n".join(list_models()))
            return 0
        if args.cmd == "check-data":
            return _check_data(args)
        if args.cmd == "report":
            from .report import write_report

            print(write_report(args.run_dir, args.out, partial=args.partial))
            return 0
        dist.init()  # under torchrun: rank 0 creates the run dirs, every rank runs them
        if not dist.is_main():  # rank 0 prints for all
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        if args.cmd == "run":
            _run_seeds(args)
        else:
            _run_one(args, RunDir.open(args.run_dir).path)
        return dist.leave(0, clean=True)
    except StopRequested:
        print(f"stopped; continue with: python -m cvdd resume {args.current}", file=sys.stderr)
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

"""recover.iterations=0: the run distils nothing and validates the initial (RDED-style) images,
the baseline that asks whether recover is worth its cost (benchmarks/sweep.py's `init` arm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_zero_recover_steps_validates_the_initial_images(cli, tmp_path):
    sets = ["seed=3", "recover.iterations=0", "validate.compare_eval_labels=false"]
    argv = ["run", "--preset", "tiny", "--runs-dir", str(tmp_path)]
    out = cli(*argv, *[a for s in sets for a in ("--set", s)])
    assert out.returncode == 0, out.stderr[-2000:]
    run = Path(out.stdout.strip().splitlines()[-1])
    with np.load(run / "init/images.npz") as init, np.load(run / "recover/images.npz") as rec:
        assert np.array_equal(init["images"], rec["images"])
        assert np.array_equal(init["targets"], rec["targets"])
    assert (run / "result.json").is_file()

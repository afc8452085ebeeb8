#!/usr/bin/env bash
# Every GPU check in one go (under 10 minutes on one H100 / H200; run it with 600 s), ending with one summary table,
# also written to benchmarks/out/gpu_check.md (and to $OUT/ when $OUT is set; a CPU smoke run
# writes gpu_check_cpu_smoke.md instead):
#   1. the gpu-marked tests (tests/test_gpu.py)
#   2. the recover speed benchmark on the CIFAR-100 shape (benchmarks/recover_speed.py), and
#      where a step's time goes at batch 1000 (benchmarks/recover_profile.py: torch.profiler,
#      time by kind of work and the top kernels, written to benchmarks/out/recover_profile.md)
#   3. the quick preset end to end on CUDA
#   4. a CIFAR-100-shaped recover at IPC 10 (--steps, 200) and at IPC 50 (a quarter of them:
#      its 3 waves of 1,800 images took about 0.4 s a step on an H200), on a CIFAR-100
#      "python version" folder given with --cifar100 DIR, else on a synthetic one made here
# Each step's time limit is its time measured on an H200 (one run, torch 2.11) with margin.
# Without CUDA it says so and runs a CPU smoke version of each step (seconds to minutes);
# --cpu-smoke does that on purpose.
#
#   bash benchmarks/gpu_check.sh [--cpu-smoke] [--cifar100 DIR] [--steps N]
set -u
cd "$(dirname "$0")/.."
# the interpreter: $PYTHON, else python, else python3 (a machine may have only python3)
PY=${PYTHON:-$(command -v python || command -v python3)}
[ -n "$PY" ] || { echo "no python or python3 on PATH; set PYTHON=/path/to/python"; exit 2; }
SMOKE=0
CIFAR=""
STEPS=200
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --cifar100) CIFAR="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    *) echo "unknown option $1 (use --cpu-smoke, --cifar100 DIR, --steps N)"; exit 2 ;;
  esac
  shift
done
echo "python: $PY ($($PY --version 2>&1))"
if ! $PY -c "import torch" 2>/dev/null; then
  echo "$PY cannot import torch: install requirements.txt for it, or set PYTHON"; exit 2
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if [ "$SMOKE" = 0 ]; then
    echo "no CUDA device visible to $PY ($($PY -c 'import torch; print(torch.__version__)')):" \
      "running the CPU smoke version of every check instead"
  fi
  SMOKE=1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export CVDD_THREADS=${CVDD_THREADS:-1}
ROWS=()
TORCH_V=$($PY -c 'import torch; print(torch.__version__)')
[ "$SMOKE" = 0 ] && GPU_NAME=$($PY -c 'import torch; print(torch.cuda.get_device_name())')

summary() {
  if [ "$SMOKE" = 1 ]; then
    echo "## summary (CPU smoke, no CUDA: 'quick' ran the tiny preset; ipc10/50: 2 narrow"
    echo "## members, 2 recover steps, IPC 50 under recover.memory_gb=1)"
  else
    echo "## summary ($GPU_NAME, ipc10" \
      "$STEPS steps, ipc50 $((STEPS / 4)))"
  fi
  echo "python: $PY, torch $TORCH_V, commit" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "data: $DATA_NOTE"
  echo '```'
  printf '%-12s %-16s %7s  %s\n' step status time figure
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo '```'
}
# the smoke run's summary goes beside, never over, a real GPU's; written after every step, so a
# run cut short still leaves the rows it finished (in benchmarks/out/ and $OUT/)
NAME=gpu_check$([ "$SMOKE" = 1 ] && echo _cpu_smoke).md
mkdir -p benchmarks/out
publish() {
  summary >"benchmarks/out/$NAME"
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    cp "benchmarks/out/$NAME" "$OUT/$NAME"
    [ "$SMOKE" = 0 ] && [ -f benchmarks/out/recover_profile.md ] && cp benchmarks/out/recover_profile.md "$OUT/"
  fi
  return 0
}

# run NAME TIMEOUT CMD...: time a step, keep its output in $TMP/NAME.log, add a summary row
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local t0=$SECONDS
  # -k: a stage that catches SIGTERM to checkpoint (cvdd run, the pipeline inside pytest) is
  # killed 15 s later if it has not stopped by then
  timeout -k 15 "$limit" "$@" >"$TMP/$name.log" 2>&1
  local rc=$? secs=$((SECONDS - t0))
  tail -n 25 "$TMP/$name.log"
  local status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT (${limit}s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && status="FAILED (rc $rc)"
  ROWS+=("$(printf '%-12s %-16s %6ss  %s' "$name" "$status" "$secs" "$(figure "$name")")")
  publish
}

# figure NAME: the one number of a step worth a line in the summary
figure() {
  local log="$TMP/$1.log"
  case "$1" in
    gpu-tests) grep -E "passed|failed|skipped|error" "$log" | tail -n 1 ;;
    profile) # graph (or eager) ms/img/it and the largest kind of work
      { grep -E "^- (CUDA graph|eager) step" "$log" | tail -n 1 | sed 's/^- //; s/ per image per iteration//'
        grep -E "^\| [a-zA-Z]" "$log" | sed -n 2p | awk -F'|' '{gsub(/^ +| +$/, "", $2); gsub(/^ +| +$/, "", $3); printf "; largest: %s, %s", $2, $3}'
      } | tr -d '\n' ;;
    speed) # the first CIFAR-100 row: batch, precision, the two steps' ms/img/it, their ratio
      grep -E "^cifar100 " "$log" | head -n 1 |
        awk '{printf "CIFAR-100 b%s %s: %s vs engine %s ms/img/it, %s", $3, $4, $5, $6, $7;
              if ($8 ~ /^[0-9.]+$/ && $9 ~ /^[0-9.]+x$/) printf "; graph %s, %.1fx", $8, $5 / $8}' ;;
    quick|ipc10|ipc50)
      local dir
      dir=$(tail -n 1 "$log")
      [ -f "$dir/result.json" ] && $PY - "$dir" <<'EOF'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
res = json.loads((d / "result.json").read_text())
plan = json.loads((d / "recover/memory_plan.json").read_text())
def size(n):
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
peak = plan.get("measured_peak_bytes")
print(f"top-1 {res['student_top1']:.1f}%, recover {res['stage_seconds'].get('recover', 0):.0f}s, "
      f"{plan['waves']} wave(s) of {plan['groups_per_wave']} group(s), peak est. "
      f"{size(plan['estimated_peak_bytes'])}, measured {size(peak) if peak else 'n/a (CPU)'}")
EOF
      ;;
  esac
}

# a CIFAR-100-shaped "python version" folder: 100 classes, 60 train + 10 test images each,
# class-dependent colours plus noise (enough for every stage to run; not for accuracy)
make_cifar() {
  $PY - "$1" <<'EOF'
import pickle, sys, pathlib
import numpy as np
root = pathlib.Path(sys.argv[1]); root.mkdir(parents=True)
rng = np.random.default_rng(0)
colour = rng.integers(0, 256, (100, 3, 1, 1))
def batch(per_class):
    labels = np.repeat(np.arange(100), per_class)
    x = colour[labels] * 0.6 + rng.integers(0, 256, (len(labels), 3, 32, 32)) * 0.4
    return {b"data": x.astype(np.uint8).reshape(len(labels), -1), b"fine_labels": labels.tolist(),
            b"coarse_labels": (labels // 5).tolist()}
(root / "train").write_bytes(pickle.dumps(batch(60)))
(root / "test").write_bytes(pickle.dumps(batch(10)))
names = {b"fine_label_names": [b"c%02d" % i for i in range(100)],
         b"coarse_label_names": [b"s%02d" % i for i in range(20)]}
(root / "meta").write_bytes(pickle.dumps(names))
EOF
}

if [ -z "$CIFAR" ]; then
  CIFAR="$TMP/cifar-100-python"
  make_cifar "$CIFAR" || exit 1
  DATA_NOTE="synthetic CIFAR-100-shaped folder (100 classes x 60 images)"
else
  DATA_NOTE="$CIFAR"
fi
# the committee trains one epoch and the student one: these runs check recover at scale
CIFAR_SETS=(--set squeeze.epochs=1 --set init.candidates=20 --set validate.epochs=1
  --set validate.random_real=false --set validate.compare_eval_labels=false)

if [ "$SMOKE" = 0 ]; then
  # limits add up to under 10 minutes (measured on an H200: the speed benchmark's CIFAR-100 set 74-88 s,
  # quick 37 s recover + 17 s validate); a step over its limit shows TIMEOUT in the summary
  # test_quick_preset_on_cuda is left to the `quick` step below, which runs that preset whole
  run gpu-tests 150 $PY -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -v -rfE \
    -k "not test_quick_preset_on_cuda"
  run speed 130 $PY benchmarks/recover_speed.py --device cuda --iters 5 --warmup 2 \
    --sets cifar100
  run profile 60 $PY benchmarks/recover_profile.py --device cuda --batch 1000 --steps 5 \
    --out benchmarks/out/recover_profile.md
  run quick 100 $PY -m cvdd run --preset quick --device cuda --runs-dir "$TMP/runs"
  run ipc10 60 $PY -m cvdd run --preset cifar100_ipc10 --data "$CIFAR" --device cuda \
    --runs-dir "$TMP/runs" "${CIFAR_SETS[@]}" --set recover.iterations="$STEPS"
  run ipc50 90 $PY -m cvdd run --preset cifar100_ipc50 --data "$CIFAR" --device cuda \
    --runs-dir "$TMP/runs" "${CIFAR_SETS[@]}" --set recover.iterations="$((STEPS / 4))"
else
  # the same steps on the CPU, shrunk to minutes: two narrow members, 2 recover steps, small
  # benchmark batches; IPC 50 under a 1 GiB budget, so its groups run in several waves
  NARROW=(--set squeeze.members=resnet18,shufflenetv2 --set squeeze.width=0.125
    --set validate.width=0.125 --set recover.iterations=2 --set recover.snapshot_every=0)
  run gpu-tests 60 $PY -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider
  run speed 240 $PY benchmarks/recover_speed.py --device cpu --iters 1 --warmup 0 \
    --sets cifar100 --batches 100 --cpu-cap 10
  run profile 120 $PY benchmarks/recover_profile.py --device cpu --batch 10 --steps 1 \
    --warmup 1 --out "$TMP/recover_profile_cpu_smoke.md"
  run quick 120 $PY -m cvdd run --preset tiny --device cpu --runs-dir "$TMP/runs"
  run ipc10 300 $PY -m cvdd run --preset cifar100_ipc10 --data "$CIFAR" --device cpu \
    --runs-dir "$TMP/runs" "${CIFAR_SETS[@]}" "${NARROW[@]}"
  run ipc50 400 $PY -m cvdd run --preset cifar100_ipc50 --data "$CIFAR" --device cpu \
    --runs-dir "$TMP/runs" "${CIFAR_SETS[@]}" "${NARROW[@]}" --set recover.memory_gb=1
fi

echo
publish
cat "benchmarks/out/$NAME"
exit 0

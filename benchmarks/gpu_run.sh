#!/usr/bin/env bash
# The GPU benchmark in one command on a GPU machine without network access.
#
# Where PyPI is reachable, first:  python -m benchmarks.gpu_kit fetch   # wheels -> .gpu_kit
# Copy the repository with .gpu_kit to the GPU machine; there, from its root:
#   OUT=/some/dir bash benchmarks/gpu_run.sh
#
# Unpacks the carried wheels (benchmarks/gpu_kit.py), records the machine, then runs each
# row of `python -m benchmarks.benchmark --device gpu` in its own process and time limit,
# so that one failing row still leaves the others' JSON. Everything lands in $OUT:
# env.txt, log.txt and gpu_<row>.json (merge with benchmarks/BENCHMARKS.md by hand); then,
# if at least 120 s of the BUDGET are left, rows 2 and 4 again with a bfloat16
# predictor on both sides (--dtype bfloat16, the usual way to train on a GPU) in
# gpu_bf16.json.
# Overrides for a dry run on a CPU machine: PYTHON (default python3), BENCH_ARGS
# (default "--device gpu"), ROWS (the rows run one by one, "row:seconds ...";
# default all four), BF16_ROWS (default "train_step,inference"), ROW_TIMEOUT (seconds
# for every row, overriding ROWS'), BUDGET (seconds of the whole script after which
# nothing new starts; default 540).
set -uo pipefail
export PYTHONUNBUFFERED=1
# JAX takes 75% of the GPU's memory up front; torch shares the process (the reference
# side), so leave it more room.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.6}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
"$PY" -m benchmarks.gpu_kit install --target /tmp/gpu_site || exit 1
export PYTHONPATH="/tmp/gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi -L 2>&1 || echo "no nvidia-smi"
  "$PY" -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
status=0
# Seconds per row (row 2 compiles two ResNet50 steps): 90 + 200 + 120 + 110 = 520 s,
# inside a 560 s budget with the unpacking.
for spec in ${ROWS:-canonicalizer:90 train_step:200 pointcloud:120 inference:110}; do
  row=${spec%%:*}
  timeout "${ROW_TIMEOUT:-${spec##*:}}" "$PY" -m benchmarks.benchmark ${BENCH_ARGS:---device gpu} \
      --rows "$row" --out "$OUT/gpu_$row.json" 2>&1 | tee -a "$OUT/log.txt"
  rc=${PIPESTATUS[0]}
  echo "[$row] exit status $rc" | tee -a "$OUT/log.txt"
  [ "$rc" -eq 0 ] || status=1
done
# SECONDS counts from the script's start (the unpacking included).
left=$(( ${BUDGET:-540} - SECONDS ))
if [ "$left" -ge 120 ]; then
  timeout "$left" "$PY" -m benchmarks.benchmark ${BENCH_ARGS:---device gpu} --dtype bfloat16 \
      --rows "${BF16_ROWS:-train_step,inference}" --out "$OUT/gpu_bf16.json" 2>&1 | tee -a "$OUT/log.txt"
  rc=${PIPESTATUS[0]}
  echo "[bf16] exit status $rc" | tee -a "$OUT/log.txt"
  # An extra pass: stopped at the budget (timeout's 124) is not a failure, a crash is.
  [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || status=1
else
  echo "[bf16] skipped: ${left} s of the budget left" | tee -a "$OUT/log.txt"
fi
exit "$status"

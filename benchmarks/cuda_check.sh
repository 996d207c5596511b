#!/usr/bin/env bash
# CUDA checks on a machine with a GPU (not a test; CI has no GPU):
#   benchmarks/cuda_check.sh OUTDIR [MODELS]
# runs the CUDA-marked tests (every gate, backend and shipped model on the device), then the
# benchmark table on CUDA at batch 1 and batch 32, and writes logs, JSON and tables to OUTDIR.
# PYTHON picks the interpreter (default python3) with dashc installed.
set -u
OUTDIR=${1:?usage: cuda_check.sh OUTDIR [MODELS]}
MODELS=${2:-A,C,relu16k,Fsmall}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUTDIR/gpu.txt" 2>&1
"$PY" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' \
    >>"$OUTDIR/gpu.txt" 2>&1
cat "$OUTDIR/gpu.txt"
echo "== CUDA tests"
timeout "${TEST_TIMEOUT:-300}" "$PY" -m pytest -q -m gpu -rfE --no-header -p no:cacheprovider \
    ${PYTEST_ARGS:-} tests 2>&1 | tee "$OUTDIR/tests.txt" | tail -25
echo "== benchmark, batch 1"
timeout "${BENCH_TIMEOUT:-240}" "$PY" benchmarks/bench_models.py --device cuda --models "$MODELS" \
    --repeat 3 --out "$OUTDIR/bench_b1.md" 2>&1 | tail -12
echo "== benchmark, batch 32"
timeout "${BENCH32_TIMEOUT:-240}" "$PY" benchmarks/bench_models.py --device cuda --models A,C \
    --batch 32 --repeat 3 --out "$OUTDIR/bench_b32.md" 2>&1 | tail -6

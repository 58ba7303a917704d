#!/usr/bin/env bash
# The GPU machine's one command (a machine with Python, PyTorch and CUDA, no Node): the PyTorch engine's own
# tests under that machine's torch, then bench/gpu/check.py (the GPU checks and the benchmark). Prepare the
# dataset first where Node is: `npm run gpu-check:prepare`.
# Usage: bash bench/gpu/run.sh [data dir, default .gpu-check] [report dir, default $OUT or gpu-report]
set -uo pipefail
data=${1:-.gpu-check}
out=${2:-${OUT:-gpu-report}}
python=${POSELOOP_PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ ! -f "$data/data-request.json" ]; then
  echo "no $data/data-request.json: run npm run gpu-check:prepare first" >&2
  exit 2
fi
{ nvidia-smi || true; df -h /dev/shm || true; "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
tests=0
# POSELOOP_GPU_CHECK_TESTS=0 skips the engine's tests (a rerun of some checks: run.sh DATA OUT --only speed).
if [ "${POSELOOP_GPU_CHECK_TESTS:-1}" != 0 ]; then
  started=$SECONDS
  # The tests' configuration is the CPU (CI's): no process of theirs opens a CUDA context.
  (cd services/trainer/pytorch && CUDA_VISIBLE_DEVICES= timeout 180 "$python" -m unittest discover -s tests -p 'test_*.py') > "$out/engine-tests.txt" 2>&1
  tests=$?
  echo "engine tests: exit $tests in $((SECONDS - started)) s; $(tail -n 3 "$out/engine-tests.txt" | tr '\n' ' ')"
fi
timeout "${POSELOOP_GPU_CHECK_TIMEOUT:-420}" "$python" bench/gpu/check.py --data "$data" --out "$out" "${@:3}" 2>&1 | tee "$out/check.log"
check=${PIPESTATUS[0]}
echo "check.py: exit $check"
[ "$tests" -eq 0 ] && [ "$check" -eq 0 ]

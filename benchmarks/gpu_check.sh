#!/usr/bin/env bash
# The speed issue's one prepared GPU check, run from the repository root on a lent GPU machine.
#
#   OUT=<folder> bash benchmarks/gpu_check.sh
#
# That machine has torch but no diffusers or pyiqa: put their wheels in .whl/ beforehand (pip download
# --no-deps diffusers pyiqa importlib_metadata, for its Python). Phases, each bounded in time, each writing
# its log and results under $OUT as it goes, so a phase that fails or runs out of time loses only itself:
#   1. the EDICT exactness and gradient-parity tests and the CUDA-graph tests on CUDA;
#   2. bench_sd at the library defaults (512x512, 20 steps, 20 iterations), fp16, eager (before) and
#      CUDA graphs (after) in one run;
#   3. per-call timings of the UNet's eps and eps + VJP: eager, graphed, each channels-last too, compiled.
# About 9 minutes on an H200 with every phase at its limit.
set -u
OUT=${OUT:-out/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The repository root is the package: expose it as iqa_map without installing.
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/iqa_map && export PYTHONPATH=/tmp/pkg:$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_graphs.py tests/test_edict.py 2>&1 \
  | tee "$OUT/tests.log" | tail -15

echo "== 2. bench_sd before (eager) and after (CUDA graphs)"
timeout 90 python3 -c "from benchmarks.random_sd import save_random_pipeline; save_random_pipeline('/tmp/sd15', 'sd15')"
timeout ${BENCH_TIMEOUT:-280} python3 -m benchmarks.bench_sd --pipeline /tmp/sd15/pipe --dtypes fp16 \
  --variants ${VARIANTS:-eager,graphs} --memory-steps 5,50 --out "$OUT/sd.json" 2>"$OUT/sd.log" | tee "$OUT/sd.md"
tail -5 "$OUT/sd.log"

echo "== 3. per-call timings"
timeout ${CALLS_TIMEOUT:-150} python3 -m benchmarks.bench_unet_calls --compile --out "$OUT/calls.json" 2>"$OUT/calls.log" \
  | tee "$OUT/calls.md"
tail -3 "$OUT/calls.log"
echo "== done"

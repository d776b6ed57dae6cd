#!/usr/bin/env bash
# The CUDA checks of issue 11 in one short run (a few minutes on one GPU, mostly Triton
# compilation): the fused DiGraP step <= 1.3x torch's fused AdamW, >= 5x faster than the
# per-tensor loop, 0 host syncs under torch.cuda.set_sync_debug_mode('error'), compiled ==
# eager on CUDA, and the fp16 GradScaler test of tests/test_reliability.py.
#
# Usage (repository root or anywhere):  bash tools/benchmark/gpu_check.sh
# Env: PYTHON (default python), OUT (results folder, default /tmp/mmdigrap_gpu_check).
# Exit status 1 if a test fails or a CUDA target is not met.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python}
OUT=${OUT:-/tmp/mmdigrap_gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__,
    torch.cuda.get_device_name() if ok else "NO CUDA"); sys.exit(0 if ok else 2)' || exit 2
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader || true
status=0
timeout 420 "$PY" -m pytest -q -p no:cacheprovider tests/test_reliability.py \
    tests/test_digrap_fused.py -k 'fp16_gradscaler or cuda' -rs 2>&1 | tee "$OUT/pytest.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 600 "$PY" tools/benchmark/step_bench.py --device cuda --models vit-s,vit-b \
    --configs adamw,adamw-fused,fused,fused-lean,loop --repeats 50 \
    --json "$OUT/step_bench_cuda.json" --out "$OUT/step_bench_cuda.md" > "$OUT/bench.log" 2>&1
[ $? -eq 0 ] || { status=1; tail -20 "$OUT/bench.log"; }
sed -n '/^## Targets/,$p' "$OUT/step_bench_cuda.md" 2>/dev/null
grep -q '\*\*no\*\*' "$OUT/step_bench_cuda.md" 2>/dev/null && status=1
echo "gpu_check: $([ $status -eq 0 ] && echo PASS || echo FAIL); results in $OUT"
exit $status

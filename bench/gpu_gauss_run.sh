#!/bin/bash
# Gaussian-selection device run (branch gpu-gauss): tests, memcheck of the new test, SDPA, bench.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
R=$OUT/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; python3 -c 'import torch; print("torch", torch.__version__)'; } >> $R 2>&1
el "tests"
( timeout 150 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst|gaussian:" $OUT/tests.log | cut -c1-900 | tee -a $R
el "memcheck"
( timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian unsupported 2>&1; echo "memcheck gpu_decode rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|Invalid|panicked" $OUT/memcheck.log | head -20 | tee -a $R
el "sdpa"
timeout 60 python3 sdpa_baseline.py --contexts 32K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json 2>&1 | tee -a $R
el "bench"
timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods dense-softmax,dense-entmax,gaussian-exact --iters 30 --warmup 5 --sdpa-json $OUT/sdpa.json --json $OUT/bench_gauss.json > $OUT/bench.log 2>&1
el "done"
grep "^  " $OUT/bench.log | cut -c1-400
grep -v "^  \|^context\|measuring\|wrote" $OUT/bench.log | cut -c1-300

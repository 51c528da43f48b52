#!/bin/bash
# Session 4, device run A: tests (split + fused selection), fused-selection A/B timings.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
R=$OUT/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; } >> $R 2>&1
el tests
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests.log
( timeout 300 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) >> $OUT/tests.log
( timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-700 | tee -a $R
el sdpa
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json 2>&1 | tail -6 | tee -a $R
M=topk,topk-softmax,gaussian-exact,dense-entmax
el "bench default plan"
timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods $M --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_default.json > $OUT/bench.log 2>&1
el "bench split (fused max 0)"
ENTMAXKV_TOPK_FUSED_MAX=0 ENTMAXKV_GAUSS_FUSED_MAX=0 timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --methods topk,gaussian-exact --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_split.json >> $OUT/bench.log 2>&1
el "bench fused to 8192"
ENTMAXKV_TOPK_FUSED_MAX=8192 ENTMAXKV_GAUSS_FUSED_MAX=8192 timeout 80 ./entmaxkv bench --device cuda --preset figure --contexts 128K --methods topk,gaussian-exact --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_f8192.json >> $OUT/bench.log 2>&1
el "bench 256K dense-entmax"
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 256K --methods dense-entmax --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_256.json >> $OUT/bench.log 2>&1
el done
grep -v "^  \|measuring\|wrote" $OUT/bench.log | cut -c1-260

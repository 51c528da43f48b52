#!/bin/bash
# Session 13 run 7, the standing run (commit 869d793): gpu_decode on the default plans (fused
# Gaussian at α ≤ 1.5 up to 64K), SDPA and every method B = 1 32K–1M, the fused path's
# accuracy against the f64 oracle, `check --device cuda` in the time left.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 340 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
el sdpa
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
tail -6 $OUT/sdpa.log | cut -c1-80
el "bench B1"
timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,topk-softmax,gaussian-exact,certified --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1; echo "rc=$?"
grep "^[a-z]" $OUT/bench.log | cut -c1-130
el acc
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --methods gaussian-exact --alpha 1.5,1.3333333333333333 --iters 5 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-200
LEFT=$(( 570 - $(date +%s) + T0 ))
el "check --device cuda (${LEFT}s)"
if [ $LEFT -gt 30 ]; then timeout $LEFT ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -2 $OUT/check_cuda.log | cut -c1-200; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

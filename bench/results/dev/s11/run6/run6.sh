#!/bin/bash
# Session 11 run 6, the standing run (commit 1018a90's code, lean tail limit 1536):
# memcheck and racecheck over tests that run the lean tail, SDPA and the standing benches
# (B = 1 8/8 D = 64 every method 32K-1M; alpha 2 and 4/3; B = 8 32/8 D = 128), then
# `check --device cuda` as time allows.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
el memcheck
( timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 certified_matches_dense_short budgets_at_or_above 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4
el racecheck
( timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_decode --test-threads=1 budgets_at_or_above 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck.log
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result|panicked" $OUT/racecheck.log | tail -4
el sdpa
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append >> $OUT/sdpa.log 2>&1
tail -7 $OUT/sdpa.log | cut -c1-80
el "bench B1"
timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,topk-softmax,gaussian-exact,certified --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1; echo "rc=$?"
grep "^  [a-z]" $OUT/bench.log | cut -c1-44 | paste -sd' ' | sed 's/  */ /g'
el "bench alpha"
timeout 80 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --alpha 2,1.3333333333333333 --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_alpha.json > $OUT/bench_alpha.log 2>&1; echo "rc=$?"
el "bench GQA"
timeout 90 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json > $OUT/bench_gqa.log 2>&1; echo "rc=$?"
grep "^  [a-z]" $OUT/bench_gqa.log | cut -c1-200
LEFT=$(( 570 - $(date +%s) + T0 ))
el "check --device cuda (${LEFT}s)"
if [ $LEFT -gt 30 ]; then timeout $LEFT ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -2 $OUT/check_cuda.log | cut -c1-200; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

#!/bin/bash
# Session 14 run 3, the standing run: the fused Gaussian step's third form (at any α up to
# 64K), τ̂ from the table for both criteria. gpu_decode, gpu_cache, gpu_oom; memcheck over
# the fused test; SDPA and every method B = 1 32K–1M; α = 2; `check --device cuda` in the
# time left.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
el cache
( timeout 90 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
el memcheck
( timeout 90 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact gaussian_fused_and_separate_steps_agree --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_fused.log
grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_fused.log
el sdpa
timeout 100 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
tail -6 $OUT/sdpa.log | cut -c1-80
el "bench B1"
timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified --budget 0.125 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1; echo "rc=$?"
grep "^[a-z]" $OUT/bench.log | cut -c1-130
el "alpha 2"
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,1M --methods gaussian-exact --alpha 2 --iters 30 --warmup 5 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_a2.json > $OUT/bench_a2.log 2>&1; echo "rc=$?"
grep "^  gauss" $OUT/bench_a2.log | cut -c1-130
LEFT=$(( 575 - $(date +%s) + T0 ))
el "check --device cuda (${LEFT}s)"
if [ $LEFT -gt 30 ]; then timeout $LEFT ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -2 $OUT/check_cuda.log | cut -c1-200; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

#!/bin/bash
# Session 18 run 4 (H200): the GPU test suite on the tensor-core paths as committed (FMA
# score_rows again left to the compiler to inline: identical SASS to de8dc87 for one head a
# task), the GQA shape and B = 1 128K/1M with SDPA, `check --device cuda`, then memcheck on
# the GQA test as time allows.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 250 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED|worst" $OUT/tests.log | cut -c1-200
grep -c "^note: " $OUT/tests.log
( timeout 30 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 30 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log; grep -E "test result|rc=" $OUT/tests_cache.log
el sdpa
timeout 40 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 40 python3 sdpa_baseline.py --contexts 128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json --append >> $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-90
el gqa
timeout 80 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json > $OUT/bench_gqa.log 2>&1; echo "gqa rc=$?"
grep -E "^(dense|topk|gauss|certified)|bandwidth" $OUT/bench_gqa.log | cut -c1-170
el b1
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --methods dense-softmax,dense-entmax,topk --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench_b1.log 2>&1; echo "b1 rc=$?"
grep -E "^  (dense|topk)" $OUT/bench_b1.log | cut -c1-60
LEFT=$(( 480 - $(date +%s) + T0 ))
el "check (${LEFT}s)"
timeout $LEFT ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?"; tail -2 $OUT/check_cuda.log | cut -c1-200
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
LEFT=$(( 575 - $(date +%s) + T0 ))
el "memcheck (${LEFT}s)"
if [ $LEFT -gt 30 ]; then ( timeout $LEFT $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact gqa_alibi_variable_lengths_and_page_boundaries --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_gqa.log; grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_gqa.log; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

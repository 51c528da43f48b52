#!/bin/bash
# Session 17 run 2 (H200): the GPU test suite with each test's cases in parallel (commit
# b3dda17), gpu_cache / gpu_oom / gpu_compile (now parallel), the GQA bench with SDPA in the
# same run, then compute-sanitizer memcheck over tests as time allows.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 330 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED|worst" $OUT/tests.log | cut -c1-200
grep -E "^test .* ok$" $OUT/tests.log | wc -l
el cache
( timeout 40 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep ctx $OUT/sdpa.log | cut -c1-80
el gqa
timeout 100 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json > $OUT/bench_gqa.log 2>&1; echo "gqa rc=$?"
grep -E "^  [a-z]|bandwidth" $OUT/bench_gqa.log | cut -c1-200
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
for t in gaussian_fused_and_separate_steps_agree certified_matches_dense_short gaussian_robust_matches_cpu gqa_alibi_variable_lengths_and_page_boundaries; do
  LEFT=$(( 560 - $(date +%s) + T0 )); [ $LEFT -lt 30 ] && break
  el "memcheck $t (${LEFT}s)"
  ( timeout $LEFT $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact $t --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_$t.log
  grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_$t.log
done
LEFT=$(( 590 - $(date +%s) + T0 ))
[ $LEFT -gt 20 ] && { el "gpu_compile (${LEFT}s)"; ( timeout $LEFT ./gpu_compile 2>&1; echo "gpu_compile rc=$?" ) > $OUT/gpu_compile.log; grep -E "test result|rc=" $OUT/gpu_compile.log; }
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

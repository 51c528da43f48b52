#!/bin/bash
# Session 17 run 3 (H200): the GPU test suite with every kernel compiled in one family only
# (commit after b3dda17: attention/Gaussian device code shared, kernels not), compile times
# logged; then H200 tuning A/B (resident waves, rows in flight) with SDPA in the same run;
# memcheck as time allows.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
export CUDA_CACHE_MAXSIZE=4294967296
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( ENTMAXKV_LOG_COMPILE=1 timeout 300 ./gpu_decode --test-threads=16 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|FAILED|worst" $OUT/tests.log | cut -c1-200
grep -E "^test .* ok$" $OUT/tests.log | wc -l
grep "entmaxkv: module" $OUT/tests.log | awk '{n++; for(i=1;i<=NF;i++){if($i=="NVRTC")a+=$(i+1); if($i=="JIT)")b+=$(i+1)}} END {print n" modules, NVRTC "a" s, load "b" s in total"}'
el cache
( timeout 40 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 32K,128K,256K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name env...
  local n=$1; shift
  LEFT=$(( 500 - $(date +%s) + T0 )); [ $LEFT -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,256K,1M --methods topk,dense-entmax,gaussian-exact --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
el bench
for r in a b; do
  run B$r
  run W$r ENTMAXKV_WAVES=2
  run U16$r ENTMAXKV_UNROLL=16
  run U4$r ENTMAXKV_UNROLL=4
done
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
for t in every_method_alpha_and_dtype_matches_cpu topk_sketch_scores_match_cpu; do
  LEFT=$(( 585 - $(date +%s) + T0 )); [ $LEFT -lt 30 ] && break
  el "memcheck $t (${LEFT}s)"
  ( timeout $LEFT $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact $t --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_$t.log
  grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_$t.log
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

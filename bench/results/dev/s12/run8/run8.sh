#!/bin/bash
# Session 12 dev run 8: V for every support in the tail where every list fits its shared
# memory (attn_entmax_values not launched). A/B against ENTMAXKV_V_IN_TAIL=0, three rounds,
# SDPA in the same run; accuracy vs the f64 oracle; gpu_decode (the tail path takes most of
# its short cases now), memcheck over two tests. MODE=tests2 runs gpu_decode with the old
# path instead, and gpu_cache / gpu_oom.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
if [ "${MODE:-}" = tests2 ]; then
  ( ENTMAXKV_V_IN_TAIL=0 timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode (V_IN_TAIL=0) rc=$?" ) > $OUT/tests_old_path.log
  grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests_old_path.log | cut -c1-200
  ( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?"; timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) > $OUT/tests_cache.log
  grep -E "test result|rc=" $OUT/tests_cache.log
  el done
  cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .
  exit 0
fi
timeout 120 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K --alpha 1.5,2 --methods topk --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep '^  [a-z]' $OUT/b_$n.log | cut -c16-40 | sed 's/  */ /g' | paste -sd' ')"
}
for r in a b c; do
  run O$r ENTMAXKV_V_IN_TAIL=0
  run N$r ENTMAXKV_V_IN_TAIL=1
done
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K --methods topk --alpha 1.5,2,1.3333333333333333 --budget 0.125 --iters 5 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-200
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-200
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
for t in topk_pinned_sink_and_recent_pages_match_cpu long_contexts_large_supports_and_ties; do
  if [ $(( $(date +%s) - T0 )) -gt 480 ]; then el "skip memcheck $t"; continue; fi
  ( timeout 100 $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact $t --test-threads=1 2>&1; echo "memcheck $t rc=$?" ) > $OUT/memcheck_$t.log
  grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_$t.log
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

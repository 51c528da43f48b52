#!/bin/bash
# Session 11 dev run 3: the lean exact-τ tail with the one-warp solve for short lists
# (ENTMAXKV_TAIL_LEAN=1, default) against the full tail (=0), both with the chunk map;
# alternated, SDPA in the same run; tail phase clocks; every GPU test suite.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
el sdpa
timeout 120 python3 sdpa_baseline.py --contexts 32K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { # name env...
  local n=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt 530 ]; then el "skip $n (time)"; return; fi
  el "bench $n"
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,256K,512K,1M --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  [a-z]" $OUT/b_$n.log | cut -c1-75
}
run L0a ENTMAXKV_TAIL_LEAN=0
run L1a ENTMAXKV_TAIL_LEAN=1
el prof
ENTMAXKV_PROFILE_TAIL=1 timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,512K --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 5 --warmup 2 --no-accuracy > $OUT/prof_L1.log 2>&1
echo "prof rc=$?"; grep -E "tail clocks" $OUT/prof_L1.log | cut -c1-160
el tests
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/tests.log | cut -c1-300
el cache
( timeout 120 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests2.log
( timeout 30 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests2.log
grep -E "test result|rc=" $OUT/tests2.log
run L1b ENTMAXKV_TAIL_LEAN=1
run L0b ENTMAXKV_TAIL_LEAN=0
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

#!/bin/bash
# Session 16 run 5 (H100): the committed code. Top-k 1/8 at 32K–128K with
# attn_entmax_tail15_lean against attn_entmax_tail15 (ENTMAXKV_TAIL_LEAN_KERNEL=0), SDPA in
# the same run; then the two tests run 4 left unfinished (gaussian_robust_matches_cpu,
# device_appends_match_host_appends) and memcheck over a top-k test (the lean kernel).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
grep -E "ctx" $OUT/sdpa.log | cut -c1-60
run() { # name ctx methods env...
  local n=$1 cx=$2 me=$3; shift 3
  env "$@" timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts $cx --methods $me --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (topk|gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ')"
}
el bench
run Ta 32K,64K,128K topk
run Oa 32K,64K,128K topk ENTMAXKV_TAIL_LEAN_KERNEL=0
run Tb 32K,64K,128K topk
run Ob 32K,64K,128K topk ENTMAXKV_TAIL_LEAN_KERNEL=0
grep "^  topk" $OUT/b_Ta.log | cut -c1-20,100-240
el tests
( timeout 100 ./gpu_decode --exact gaussian_robust_matches_cpu 2>&1; echo "robust rc=$?" ) > $OUT/tests_robust.log
grep -E "test result|rc=|worst" $OUT/tests_robust.log
( timeout 50 ./gpu_cache --exact device_appends_match_host_appends 2>&1; echo "appends rc=$?" ) > $OUT/tests_cache.log
grep -E "test result|rc=" $OUT/tests_cache.log
CS=$(ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || which compute-sanitizer)
LEFT=$(( 290 - $(date +%s) + T0 ))
el "memcheck (${LEFT}s)"
if [ $LEFT -gt 30 ]; then ( timeout $LEFT $CS --tool memcheck --error-exitcode 9 ./gpu_decode --exact topk_pinned_sink_and_recent_pages_match_cpu --test-threads=1 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck_topk.log; grep -E "ERROR SUMMARY|rc=|test result" $OUT/memcheck_topk.log; fi
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

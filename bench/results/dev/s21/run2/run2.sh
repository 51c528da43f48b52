#!/bin/bash
# Session 21 run 2 (H200): chunk-major order only where the grid is more than one resident
# wave (nch > wave_chunks). (1) gpu_decode on the final code; (2) A/B alternated at
# 256K/512K (default vs ENTMAXKV_CHUNK_MAJOR=0) and dense entmax with the order compiled out
# (CTA_CHUNK_MAJOR=0); (3) the standing, B = 1, and the GQA shape.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
timeout 40 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa_gqa.json > $OUT/sdpa_gqa.log 2>&1
grep ctx $OUT/sdpa.log $OUT/sdpa_gqa.log | cut -c1-100
el tests
( timeout $(left 280) ./gpu_decode --test-threads=4 2>&1; echo "rc=$?" ) > $OUT/tests_decode.log
grep -E "test result|rc=|panicked|FAILED" $OUT/tests_decode.log | cut -c1-200
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name limit contexts methods env...
  local n=$1 lim=$2 c=$3 m=$4; shift 4
  local L=$(left $lim); [ $L -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $L ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ')"
}
el ab
for r in a b; do
  run C$r 370 256K,512K topk,gaussian-exact
  run T$r 370 256K,512K topk,gaussian-exact ENTMAXKV_CHUNK_MAJOR=0
  run D$r 370 128K,1M dense-entmax
  run X$r 370 128K,1M dense-entmax ENTMAXKV_DEFINES="CTA_CHUNK_MAJOR=0"
done
el standing
run ST 545 32K,64K,128K,256K,512K,1M dense-softmax,dense-entmax,topk,topk-softmax,gaussian-exact,certified
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-100
el gqa
L=$(left 590); [ $L -gt 20 ] && { timeout $L ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa_gqa.json --json $OUT/b_gqa.json > $OUT/b_gqa.log 2>&1; echo "gqa rc=$?"; grep -E "^  [a-z]|bandwidth" $OUT/b_gqa.log | cut -c1-170; }
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

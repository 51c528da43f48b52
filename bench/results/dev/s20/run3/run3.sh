#!/bin/bash
# Session 20 run 3 (H200): PPC_SPREAD (pages a chunk of a short list may take before the list
# spreads over more than one resident wave) 64 (default) against 128, alternated, now that
# the K pass dispatches chunk-major; gpu_decode with PPC_SPREAD=128; the standing (default
# build, the bench's fused-Gaussian stage timing fixed) with SDPA.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
grep ctx $OUT/sdpa.log | cut -c1-100
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name contexts methods env...
  local n=$1 c=$2 m=$3; shift 3
  LEFT=$(left 150); [ $LEFT -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ') | $(grep -o 'attn_[a-z_]*scores [0-9.]*\|attn_softmax [0-9.]*' $OUT/b_$n.log | paste -sd' ')"
}
el ab
for r in a b; do
  run S64$r 256K,1M topk,gaussian-exact,topk-softmax
  run S128$r 256K,1M topk,gaussian-exact,topk-softmax ENTMAXKV_DEFINES="PPC_SPREAD=128"
done
el "gpu_decode PPC_SPREAD=128"
( ENTMAXKV_DEFINES="PPC_SPREAD=128" timeout $(left 370) ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests_decode_s128.log
grep -hE "test result|rc=|panicked|FAILED|failed" $OUT/tests_decode_s128.log | cut -c1-200
el standing
timeout $(left 575) ./entmaxkv bench $B --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified --budget 0.125 --json $OUT/b_ST.json > $OUT/b_ST.log 2>&1; echo "ST rc=$?"
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

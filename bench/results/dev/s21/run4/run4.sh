#!/bin/bash
# Session 21 run 4 (H200): gauss_pack's ordered write from per-thread keep bits (PACK_BITS=1,
# default) against one block scan per 256 pages (PACK_BITS=0). (1) gpu_decode; (2) A/B
# alternated, Gaussian 128K/256K/1M; (3) Gaussian 1M seeds 1..3; (4) GQA shape Gaussian A/B.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 60 python3 sdpa_baseline.py --contexts 128K,256K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
grep ctx $OUT/sdpa.log | cut -c1-100
el tests
( timeout $(left 290) ./gpu_decode --test-threads=4 2>&1; echo "rc=$?" ) > $OUT/tests_decode.log
grep -E "test result|rc=|panicked|FAILED|failed" $OUT/tests_decode.log | cut -c1-200
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name limit contexts methods env...
  local n=$1 lim=$2 c=$3 m=$4; shift 4
  local L=$(left $lim); [ $L -lt 15 ] && { echo "$n skipped"; return; }
  env "$@" timeout $L ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 $X --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ') | $(grep -o 'gauss_pack [0-9.]*' $OUT/b_$n.log | paste -sd' ')"
}
el ab
for r in a b; do
  run G$r 420 128K,256K,1M gaussian-exact
  run P$r 420 128K,256K,1M gaussian-exact ENTMAXKV_DEFINES="PACK_BITS=0"
done
el seeds
for s in 1 2 3; do X="--seed $s" run S$s 480 1M gaussian-exact; done
el gqa
for r in G P; do
  L=$(left 590); [ $L -lt 30 ] && break
  if [ $r = P ]; then export ENTMAXKV_DEFINES="PACK_BITS=0"; fi
  timeout $L ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods gaussian-exact --iters 20 --warmup 3 --no-accuracy --json $OUT/b_gqa$r.json > $OUT/b_gqa$r.log 2>&1; echo "gqa $r rc=$? $(grep -E '^  gauss' $OUT/b_gqa$r.log | cut -c1-200)"
done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

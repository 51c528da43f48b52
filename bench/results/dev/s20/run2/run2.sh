#!/bin/bash
# Session 20 run 2 (H200): chunk-major CTA order in the K pass (attn_entmax_scores,
# attn_softmax; CTA_CHUNK_MAJOR=1, the new default): gpu_decode and gpu_cache; an A/B
# against the old task-major order, alternated, with the K pass's phase stamps; the
# standing with SDPA; the Gaussian 1M step on seeds 1..3.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
el tests
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests_cache.log &
( timeout 225 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests_decode.log
wait
grep -hE "test result|rc=|panicked|FAILED|failed" $OUT/tests_cache.log $OUT/tests_decode.log | cut -c1-200
el sdpa
timeout 60 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1
grep ctx $OUT/sdpa.log | cut -c1-100
B="--device cuda --preset figure --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json"
run() { # name contexts methods env...
  local n=$1 c=$2 m=$3; shift 3
  LEFT=$(left 380); [ $LEFT -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench $B --contexts $c --methods $m --budget 0.125 --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' $OUT/b_$n.log | awk '{print $1, $3}' | paste -sd' ') | $(grep -o 'attn_[a-z_]*scores [0-9.]*\|attn_softmax [0-9.]*' $OUT/b_$n.log | paste -sd' ')"
}
el ab
for r in a b; do
  run N$r 32K,1M topk,gaussian-exact
  run O$r 32K,1M topk,gaussian-exact ENTMAXKV_DEFINES="CTA_CHUNK_MAJOR=0"
done
run NSM 1M topk-softmax
run OSM 1M topk-softmax ENTMAXKV_DEFINES="CTA_CHUNK_MAJOR=0"
run PRN 1M gaussian-exact ENTMAXKV_DEFINES="SCORES_PROF=1" ENTMAXKV_PROFILE_SCORES=1
grep "scores profile" $OUT/b_PRN.log | cut -c1-260
el standing
timeout $(left 530) ./entmaxkv bench $B --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust --budget 0.125 --json $OUT/b_ST.json > $OUT/b_ST.log 2>&1; echo "ST rc=$?"
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
el seeds
for s in 1 2 3; do L=$(left 585); [ $L -lt 12 ] && break; timeout $L ./entmaxkv bench $B --contexts 1M --methods gaussian-exact --seed $s --json $OUT/b_S$s.json > $OUT/b_S$s.log 2>&1; echo "seed $s rc=$? $(grep -E '^  gauss' $OUT/b_S$s.log | cut -c1-112)"; done
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

#!/bin/bash
# Session 10 dev run 4: K/V row loads - rows in flight per thread (ENTMAXKV_UNROLL 8 vs 16)
# and L2 prefetch hints (ENTMAXKV_LDHINT 0/1/2), alternated twice, SDPA in the same run.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
timeout 90 python3 sdpa_baseline.py --contexts 128K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
run() { local n=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt 480 ]; then el "skip $n"; return; fi
  el "bench $n"
  env "$@" timeout 70 ./entmaxkv bench --device cuda --preset figure --contexts 128K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "rc=$?"; grep "^  " $OUT/b_$n.log | cut -c1-110
}
run base_a X=1; run u16_a ENTMAXKV_UNROLL=16; run h1_a ENTMAXKV_LDHINT=1; run h2_a ENTMAXKV_LDHINT=2
run h2_b ENTMAXKV_LDHINT=2; run h1_b ENTMAXKV_LDHINT=1; run u16_b ENTMAXKV_UNROLL=16; run base_b X=1
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

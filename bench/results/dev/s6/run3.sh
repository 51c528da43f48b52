#!/bin/bash
cd "$(dirname "$0")/m2"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
T0=$(date +%s); R=$OUT/run.log
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
for ss in 1024 0 1024 0; do
  el "SMALL_SUPPORT=$ss"
  ENTMAXKV_SMALL_SUPPORT=$ss timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods dense-entmax,topk,gaussian-exact --budget 0.125 --iters 30 --warmup 5 --no-accuracy > $OUT/ss_$ss.log 2>&1
  grep "^  " $OUT/ss_$ss.log | cut -c1-330 | tee -a $R
done
for w in "" "--warm-code"; do
  el "profile tail $w"
  ENTMAXKV_PROFILE_TAIL=1 timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K --methods dense-entmax,topk --iters 20 --warmup 3 --no-accuracy $w 2>&1 | grep -E "tail clocks|^  " | cut -c1-250 | tee -a $R
done
el done

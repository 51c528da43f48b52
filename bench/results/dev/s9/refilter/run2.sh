#!/bin/bash
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
date -u > $OUT/card.txt; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >> $OUT/card.txt
for round in a b; do for R in 0 1 2; do
  ENTMAXKV_REFILTER=$R timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --alpha 1.3333333333333333,1.25,1.5 --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --json $OUT/bench_r${R}_$round.json > $OUT/bench_r${R}_$round.log 2>&1
  echo "round $round refilter $R rc=$?"; grep "^  " $OUT/bench_r${R}_$round.log | cut -c1-200
done; done
( ENTMAXKV_REFILTER=2 timeout 200 ./gpu_decode --test-threads=8 every_method_alpha long_contexts_large certified_matches_dense gaussian_selection_matches 2>&1; echo "gpu_decode refilter=2 rc=$?" ) > $OUT/tests_r2.log
grep -E "test result|rc=|panicked" $OUT/tests_r2.log | cut -c1-300
date -u >> $OUT/card.txt
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

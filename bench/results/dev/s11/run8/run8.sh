#!/bin/bash
# Session 11 run 8: gpu_decode on the refactor (powers3 through powers3_poly, one support-list
# body in the tail; same code paths), and a short bench against the f64 oracle.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 330 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
grep -E "test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-200
timeout 60 ./entmaxkv bench --device cuda --preset figure --contexts 32K --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 10 --warmup 2 --json $OUT/acc.json > $OUT/acc.log 2>&1; echo "acc rc=$?"; grep "^  [a-z]" $OUT/acc.log | cut -c1-60
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

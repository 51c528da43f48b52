#!/bin/bash
# Alternates main and thp binaries: 128K, B=1 8/8 D64 f16, 2 threads.
cd /tmp/thpab
for i in $(seq 1 ${N:-6}); do
  for b in main thp; do
    uptime > up_${b}_$i.txt
    /tmp/entmaxkv-$b bench --contexts 128K --methods dense-softmax,dense-entmax,topk,certified,gaussian-robust,gaussian-exact --iters 10 --no-accuracy --json ${b}_$i.json > ${b}_$i.log 2>&1
  done
done

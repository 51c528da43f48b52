#!/bin/bash
# usage: ab.sh tag N bin1 bin2 ... ; alternates the binaries /tmp/entmaxkv-<bin> N rounds
tag=$1; n=$2; shift 2
for i in $(seq 1 $n); do
  for b in "$@"; do
    /tmp/entmaxkv-$b bench --contexts 128K --methods dense-entmax,topk,certified,gaussian-robust --iters 10 --no-accuracy --json bench/results/dev/cpusparse/$tag-$b-$i.json > bench/results/dev/cpusparse/$tag-$b-$i.log 2>&1
  done
done

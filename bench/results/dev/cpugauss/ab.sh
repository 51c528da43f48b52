#!/bin/bash
# usage: ab.sh tag N bin1 bin2 ... ; alternates the binaries /tmp/entmaxkv-<bin> N rounds,
# each run measuring its own read bandwidth first; logs `uptime` before every run.
tag=$1; n=$2; shift 2
dir=bench/results/dev/cpugauss
methods=${METHODS:-gaussian-exact,gaussian-fixed,gaussian-corrected,dense-entmax,topk}
for i in $(seq 1 $n); do
  for b in "$@"; do
    uptime >> $dir/$tag-load.log
    /tmp/entmaxkv-$b bench --contexts 128K --methods $methods --iters 10 --no-accuracy --json $dir/$tag-$b-$i.json > $dir/$tag-$b-$i.log 2>&1
  done
done

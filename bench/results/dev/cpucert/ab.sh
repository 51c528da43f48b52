#!/bin/bash
# usage: ab.sh tag N bin1 bin2 ... ; alternates the binaries /tmp/entmaxkv-<bin> N rounds,
# logging the load average before each run.
tag=$1; n=$2; shift 2
out=bench/results/dev/cpucert
for i in $(seq 1 $n); do
  for b in "$@"; do
    echo "$tag $b $i $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)" >> $out/$tag-load.txt
    /tmp/entmaxkv-$b bench --contexts 128K --methods certified,gaussian-robust,topk --iters 10 --no-accuracy --json $out/$tag-$b-$i.json > $out/$tag-$b-$i.log 2>&1
  done
done

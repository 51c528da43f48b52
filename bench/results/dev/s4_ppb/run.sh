#!/bin/bash
# Session 4, device run G: Gaussian moments CTA size (ENTMAXKV_GAUSS_PPB cap 256/128/64).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
W=$OUT/w; mkdir -p $W
date -u > $W/run.log
for c in 256 128 64 256 128 64; do
  ENTMAXKV_GAUSS_PPB=$c timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods gaussian-exact --iters 30 --warmup 5 --no-accuracy --json $W/g_$c.json > $W/g_$c.log 2>&1
  echo "== ppb cap $c" >> $W/run.log
  grep "^  gaussian" $W/g_$c.log | cut -c1-260 >> $W/run.log
done
for c in 128 64; do
  ( ENTMAXKV_GAUSS_PPB=$c timeout 200 ./gpu_decode --test-threads=4 gaussian 2>&1; echo "ppb $c rc=$?" ) > $W/t_$c.log
  grep -E "test result|rc=|worst" $W/t_$c.log >> $W/run.log
done
cat $W/run.log
tar czf $OUT/s4g.tgz -C $OUT w

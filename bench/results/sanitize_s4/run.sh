#!/bin/bash
# Session 4, device run F: the four sanitizers over the ALiBi Gaussian (gauss_mix) and sketch
# top-k tests, final tree.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
W=$OUT/w; mkdir -p $W
date -u > $W/run.log
for tool in memcheck racecheck initcheck synccheck; do
  for t in gaussian_selection gaussian_fixed topk_sketch; do
    ( timeout 200 compute-sanitizer --tool $tool --error-exitcode 9 ./gpu_decode --test-threads=1 $t 2>&1; echo "$tool $t rc=$?" ) > $W/$tool-$t.log
    echo "== $tool $t" >> $W/run.log
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result" $W/$tool-$t.log | tail -3 >> $W/run.log
  done
done
cat $W/run.log
tar czf $OUT/s4f.tgz -C $OUT w

#!/bin/bash
# Sanitizers over the refilter path (alpha 4/3 cases; REFILTER=2 puts it on every exact tau).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
date -u > $OUT/san.txt
( timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 every_method_alpha 2>&1; echo "memcheck every_method_alpha rc=$?" ) > $OUT/memcheck_alpha.log
grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck_alpha.log | tail -4 | tee -a $OUT/san.txt
( ENTMAXKV_REFILTER=2 timeout 110 compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_decode --test-threads=1 certified_matches_dense_short 2>&1; echo "racecheck refilter=2 certified_short rc=$?" ) > $OUT/racecheck.log
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result|panicked" $OUT/racecheck.log | tail -4 | tee -a $OUT/san.txt
date -u >> $OUT/san.txt

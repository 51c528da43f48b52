#!/bin/bash
# Session 13 run 9: the one gpu_decode test run 8 left unfinished (the robust criterion's τ̂
# now from the t*(c) table), same binary.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 230 ./gpu_decode --exact gaussian_robust_matches_cpu 2>&1; echo "rc=$?" ) > $OUT/t_robust.log
grep -E "test result|rc=|panicked|worst|FAILED" $OUT/t_robust.log | cut -c1-300

#!/bin/bash
# Session 7 recorded run (one H100, 2026-11-27 09:23–09:35 UTC, commit 90e7895): two device
# calls from .devrun/s7f/ (entmaxkv, gpu_decode, gpu_cache, gpu_oom built from 90e7895 and
# stripped; bench/gpu_run.sh and bench/sdpa_baseline.py as of 90e7895 copied beside them:
# `git show 90e7895:bench/gpu_run.sh` is the script these lines ran).
# Call 1 -> tests/:
PART=tests RACECHECK="gaussian_robust_softmax_matches gaussian_robust_sink" RACECHECK_TIMEOUT=150 TAR=1 bash gpu_run.sh
# Call 2 -> bench/ (memcheck first, then check, SDPA and the benches):
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
( date -u; timeout 170 compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 gaussian_robust_softmax gaussian_robust_sink budgets_at_or_above 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
PART=bench TAR=1 bash gpu_run.sh

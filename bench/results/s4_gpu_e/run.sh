#!/bin/bash
# Session 4, device run E: main after both CPU merges: gpu_decode, check, sanitizers over the
# new kernels, the prefetching sketch-score kernel timed.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
W=$OUT/w; mkdir -p $W
R=$W/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv; } >> $R
el tests
( timeout 300 ./gpu_decode --test-threads=4 2>&1; echo "gpu_decode rc=$?" ) > $W/tests.log
grep -E "^test |test result|rc=|panicked|worst" $W/tests.log | cut -c1-900 | tee -a $R
el check
timeout 200 ./entmaxkv check --device cuda --json $W/check_cuda.json > $W/check_cuda.log 2>&1; echo "check rc=$?" | tee -a $R
tail -2 $W/check_cuda.log | tee -a $R
for tool in racecheck initcheck synccheck; do
  el "compute-sanitizer $tool"
  ( timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 ./gpu_decode --test-threads=1 topk_sketch 2>&1; echo "$tool topk_sketch rc=$?" ) > $W/$tool.log
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result" $W/$tool.log | tail -3 | tee -a $R
done
el sdpa
timeout 100 python3 sdpa_baseline.py --contexts 32K,128K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $W/sdpa.json 2>&1 | tee -a $R
el bench
timeout 150 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods topk-softmax,topk-softmax-sketchmass,topk-sketchmass --budget 0.125 --iters 30 --warmup 5 --sdpa-json $W/sdpa.json --json $W/bench_sketch.json > $W/bench.log 2>&1
grep -v "^  \|measuring\|wrote\|cache built" $W/bench.log | cut -c1-250 | tee -a $R
grep "^  " $W/bench.log | grep sketch | cut -c1-300
el done
tar czf $OUT/s4e.tgz -C $OUT w

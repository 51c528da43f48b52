#!/bin/bash
# The GPU validation + benchmark run recorded in BENCHMARKS.md (one command on the device).
# Expects, next to this script: `entmaxkv` (cargo build --release -p entmaxkv-cli), the test
# binaries `gpu_cache` and `gpu_decode` (cargo test --release --no-run -p entmaxkv, the
# target/release/deps/gpu_{cache,decode}-<hash> files), sdpa_baseline.py, and optionally a
# fuzz campaign kit in fuzz/ (fuzz/campaign.sh), run on the spare CPU cores meanwhile.
# SOAK=1 adds the 1M-step device soak; MEMCHECK="<test filter>" runs compute-sanitizer
# memcheck over those gpu_decode tests at the end.
# RACECHECK="<test filter>" runs compute-sanitizer racecheck over those tests.
# PART=tests runs only the tests and sanitizers, PART=bench only `check --device cuda`, SDPA
# and the benches (the two halves fit the device tool's 600 s limit each); unset, both.
# TAR=1 packs the outputs into results.tgz. OUT is the folder for logs and JSON. Needs LD_LIBRARY_PATH to reach libnvrtc (CUDA's lib64).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
R=$OUT/run.log
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $R; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv; nproc; python3 -c 'import torch; print("torch", torch.__version__)'; } >> $R 2>&1
if [ -x fuzz/campaign.sh ]; then
  el "fuzz campaign in the background (${FUZZ_SECONDS:-420} s, ${FUZZ_WORKERS:-4} workers per target)"
  ( cd fuzz && OUT=$OUT nice -n 19 ./campaign.sh ${FUZZ_SECONDS:-420} ${FUZZ_WORKERS:-4} > $OUT/fuzz_campaign.log 2>&1 ) &
  FUZZ_PID=$!
fi
if [ "${PART:-all}" != bench ]; then
el "tests"
( timeout 420 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
( timeout 100 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
if [ -x gpu_oom ]; then ( timeout 60 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log; fi
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-600 | tee -a $R
grep -A8 "panicked" $OUT/tests.log | head -40 | tee -a $R
if [ -n "${MEMCHECK:-}" ]; then
  el "compute-sanitizer memcheck: $MEMCHECK"
  ( timeout ${MEMCHECK_TIMEOUT:-150} compute-sanitizer --tool memcheck --error-exitcode 9 ./gpu_decode --test-threads=1 $MEMCHECK 2>&1; echo "memcheck rc=$?" ) > $OUT/memcheck.log
  grep -E "ERROR SUMMARY|rc=|test result|panicked" $OUT/memcheck.log | tail -4 | tee -a $R
fi
if [ -n "${RACECHECK:-}" ]; then
  el "compute-sanitizer racecheck: $RACECHECK"
  ( timeout ${RACECHECK_TIMEOUT:-90} compute-sanitizer --tool racecheck --error-exitcode 9 ./gpu_decode --test-threads=1 $RACECHECK 2>&1; echo "racecheck rc=$?" ) > $OUT/racecheck.log
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result|panicked" $OUT/racecheck.log | tail -4 | tee -a $R
fi
fi
if [ "${PART:-all}" != tests ]; then
el "check --device cuda"
timeout 300 ./entmaxkv check --device cuda --json $OUT/check_cuda.json > $OUT/check_cuda.log 2>&1; echo "check rc=$?" | tee -a $R
tail -1 $OUT/check_cuda.log | tee -a $R
el "sdpa"
timeout 150 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json 2>&1 | tee -a $R
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append 2>&1 | tee -a $R
el "bench B1 8/8 D64"
timeout 240 ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,topk-softmax,topk-softmax-sketchmass,gaussian-exact,certified --budget 0.125 --iters 30 --warmup 5 --sdpa-json $OUT/sdpa.json --json $OUT/bench_b1.json > $OUT/bench.log 2>&1
el "bench B1 other alphas"
timeout 100 ./entmaxkv bench --device cuda --preset figure --contexts 128K,1M --alpha 2,1.3333333333333333 --methods dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --sdpa-json $OUT/sdpa.json --json $OUT/bench_alpha.json >> $OUT/bench.log 2>&1
el "bench B1 robust Gaussian (GPU_ROBUST.md)"
timeout 120 ./entmaxkv bench --device cuda --preset figure --contexts 32K,128K,1M --methods gaussian-exact,gaussian-robust,gaussian-robust-corrected --iters 10 --warmup 2 --no-accuracy --json $OUT/bench_robust.json >> $OUT/bench.log 2>&1; echo "bench robust rc=$?" | tee -a $R
el "bench B1 robust criterion, softmax mode (alpha 1; iid and structured keys)"
for w in iid structured; do
  timeout 90 ./entmaxkv bench --device cuda --preset figure --alpha 1 --workload $w --contexts 32K,128K,1M --methods dense-softmax,topk-softmax,robust-softmax --budget 0.125 --iters 10 --warmup 2 --no-accuracy --json $OUT/bench_robust_softmax_$w.json >> $OUT/bench.log 2>&1; echo "bench robust softmax $w rc=$?" | tee -a $R
done
el "bench B8 32/8 D128"
timeout 120 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax,topk,gaussian-exact,certified --budget 0.125 --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/bench_gqa.json >> $OUT/bench.log 2>&1
if [ -n "${SOAK:-}" ]; then
  el "soak --device cuda (1M steps)"
  timeout ${SOAK_TIMEOUT:-150} ./entmaxkv soak --device cuda --steps 1000000 --json $OUT/soak_cuda.json > $OUT/soak_cuda.log 2>&1; echo "soak rc=$?" | tee -a $R
  cut -c1-400 $OUT/soak_cuda.log | tee -a $R
fi
fi
if [ -n "${FUZZ_PID:-}" ]; then el "waiting for the fuzz campaign"; wait $FUZZ_PID; tail -5 $OUT/fuzz_campaign.log | tee -a $R; fi
el "done"
if [ -f $OUT/bench.log ]; then
  grep "^  " $OUT/bench.log | cut -c1-330
  grep -v "^  \|^context\|measuring\|wrote" $OUT/bench.log | cut -c1-240
fi
# TAR=1: everything in one archive (the device tool returns at most eight files).
if [ -n "${TAR:-}" ]; then
  ( cd $OUT && tar czf ../results.tgz . && find . -type f -delete && mv ../results.tgz . )
fi

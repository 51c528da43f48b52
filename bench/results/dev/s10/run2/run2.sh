#!/bin/bash
# Session 10 dev run 2 (commit in BENCHMARKS): A/B of ENTMAXKV_WAVE_ROUND (whole waves of
# attention chunks) with the refilter rule of this session, SDPA in the same run; then the
# full gpu_decode / gpu_cache / gpu_oom suites with the defaults.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader; } > $OUT/card.txt
cat $OUT/card.txt
timeout 100 python3 sdpa_baseline.py --contexts 128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; echo "sdpa rc=$?"
timeout 60 python3 sdpa_baseline.py --contexts 128K --batch 8 --heads 32 --kv-heads 8 --head-dim 128 --iters 30 --json $OUT/sdpa.json --append >> $OUT/sdpa.log 2>&1; echo "sdpa gqa rc=$?"
ab() { # name wave_round
  el "ab $1"
  ENTMAXKV_WAVE_ROUND=$2 timeout 80 ./entmaxkv bench --device cuda --preset figure --contexts 128K,256K,512K,1M --methods dense-softmax,dense-entmax,certified --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/ab_$1.json > $OUT/ab_$1.log 2>&1
  echo "rc=$?"; grep "^  " $OUT/ab_$1.log | cut -c1-140
  ENTMAXKV_WAVE_ROUND=$2 timeout 60 ./entmaxkv bench --device cuda --preset llama8b --batch 8 --contexts 128K --gqa shared --methods dense-softmax,dense-entmax --iters 20 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/abg_$1.json > $OUT/abg_$1.log 2>&1
  echo "rc=$?"; grep "^  " $OUT/abg_$1.log | cut -c1-140
}
ab w0a 0; ab w1a 1; ab w1b 1; ab w0b 0
el tests
( timeout 400 ./gpu_decode --test-threads=8 2>&1; echo "gpu_decode rc=$?" ) > $OUT/tests.log
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) >> $OUT/tests.log
( timeout 40 ./gpu_oom 2>&1; echo "gpu_oom rc=$?" ) >> $OUT/tests.log
grep -E "^test |test result|rc=|panicked|worst" $OUT/tests.log | cut -c1-300
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

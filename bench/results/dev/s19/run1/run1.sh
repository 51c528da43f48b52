#!/bin/bash
# Session 19 run 1 (prepared in session 18): register bounds for more resident CTAs in the
# two kernels ncu found short of loads in flight (session 18 run 5): gauss_moments
# (MOM_MIN_CTAS=4: 64 registers, no spills, against 78 -> 3 CTAs) and attn_entmax_scores (SCORES_MIN_CTAS=5: 48 registers, no spills, against 64
# -> 4 CTAs), on the Gaussian step (1M: 3.78-3.97x SDPA on an H200, target 4x) and dense
# entmax (128K/256K: 0.70 / 0.63 of SDPA, target 0.6), alternated with the default, SDPA in
# the same run; then the standing sweep. First: merge branch s18-untested-gpu
# (append_device_as: f16/bf16 device K/V; q normalised both ways in the tensor-core scores;
# patch in .devrun/s18-untested-gpu.patch) and run its tests here (gpu_cache, device I/O,
# the GQA test with tiny and large q); the full gpu_decode suite in a later run. Stage (repo root, after `cargo build --release && cargo test
# --release -p entmaxkv --no-run`): D=.devrun/s19r1; cp target/release/entmaxkv $D/; cp
# $(ls -t target/release/deps/gpu_cache-* | grep -v '\.d$' | head -1) $D/gpu_cache; cp
# $(ls -t target/release/deps/gpu_decode-* | grep -v '\.d$' | head -1) $D/gpu_decode; strip
# $D/entmaxkv $D/gpu_cache $D/gpu_decode; cp bench/sdpa_baseline.py $D/
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > $OUT/card.txt; cat $OUT/card.txt
( timeout 60 ./gpu_cache --test-threads=4 2>&1; echo "gpu_cache rc=$?" ) > $OUT/tests_cache.log
grep -E "^test |test result|rc=|panicked" $OUT/tests_cache.log | cut -c1-200
( timeout 90 ./gpu_decode --exact device_io_steps_match_host_steps 2>&1; echo "device_io rc=$?"; timeout 120 ./gpu_decode --exact gqa_alibi_variable_lengths_and_page_boundaries 2>&1; echo "gqa rc=$?" ) > $OUT/tests_io.log
grep -E "test result|rc=|panicked" $OUT/tests_io.log | cut -c1-200
timeout 80 python3 sdpa_baseline.py --contexts 32K,64K,128K,256K,512K,1M --batch 1 --heads 8 --head-dim 64 --iters 50 --json $OUT/sdpa.json > $OUT/sdpa.log 2>&1; grep ctx $OUT/sdpa.log | cut -c1-80
run() { # name env...
  local n=$1; shift
  LEFT=$(( 330 - $(date +%s) + T0 )); [ $LEFT -lt 12 ] && { echo "$n skipped"; return; }
  env "$@" timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 128K,256K,1M --methods dense-entmax,gaussian-exact --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_$n.json > $OUT/b_$n.log 2>&1
  echo "$n rc=$? $(grep -E '^  (gauss|dense)' $OUT/b_$n.log | cut -c26-34 | paste -sd' ') | $(grep -E '^  (gauss|dense)' $OUT/b_$n.log | grep -o '\(gauss_moments\|attn_entmax_scores\) [0-9.]*' | paste -sd' ')"
}
el ab
for r in a b; do run B$r; run M4$r ENTMAXKV_DEFINES="MOM_MIN_CTAS=4"; run S5$r ENTMAXKV_DEFINES="SCORES_MIN_CTAS=5"; run M4S5$r ENTMAXKV_DEFINES="MOM_MIN_CTAS=4 SCORES_MIN_CTAS=5"; done
LEFT=$(( 585 - $(date +%s) + T0 ))
el "standing (${LEFT}s)"
timeout $LEFT ./entmaxkv bench --device cuda --preset figure --contexts 32K,64K,128K,256K,512K,1M --methods dense-softmax,dense-entmax,topk,gaussian-exact,gaussian-robust,certified --budget 0.125 --iters 30 --warmup 3 --no-accuracy --sdpa-json $OUT/sdpa.json --json $OUT/b_ST.json > $OUT/b_ST.log 2>&1; echo "ST rc=$?"
grep "^  [a-z]" $OUT/b_ST.log | cut -c1-112
el done
cd $OUT && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .

#!/bin/bash
# compute-sanitizer memcheck, racecheck, initcheck and synccheck over the GPU tests (one command
# on the device). Expects next to this script the test binaries `gpu_cache` and `gpu_decode`
# (cargo test --release --no-run -p entmaxkv: target/release/deps/gpu_{cache,decode}-<hash>);
# writes the logs to $OUT. Needs libnvrtc on LD_LIBRARY_PATH (CUDA's lib64).
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
S=$OUT/sanitize_summary.txt
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; compute-sanitizer --version | tail -1; } > $S
for tool in memcheck racecheck initcheck synccheck; do
  for t in "gpu_cache append_rejects device_appends" "gpu_decode budgets graph_replays unsupported gaussian certified_matches_dense_short certified_at_alpha topk_pinned"; do
    set -- $t
    bin=$1; shift
    ( timeout ${SANITIZE_TIMEOUT:-90} compute-sanitizer --tool $tool --error-exitcode 9 ./$bin --test-threads=1 "$@" 2>&1; echo "$tool $bin rc=$?" ) > $OUT/${tool}_${bin}.log
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result|panicked" $OUT/${tool}_${bin}.log | tail -4 | sed "s/^/$tool $bin: /" >> $S
  done
done
cat $S

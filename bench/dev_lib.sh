#!/bin/bash
# Helpers for a development run on the device (source it from a run script staged next to
# `entmaxkv`, the test binaries and sdpa_baseline.py; `$OUT` is the device tool's output
# folder). Every session's run scripts had repeated these lines.
#   el MSG                 elapsed seconds and MSG
#   left N                 seconds left until N seconds after the start
#   card                   date, GPU, driver, clocks and memory into $OUT/card.txt
#   bench NAME LIMIT CONTEXTS METHODS [VAR=VALUE ...]
#                          `entmaxkv bench` on the B = 1 figure preset (top-k 1/8), until
#                          LIMIT s after the start, SDPA from $OUT/sdpa.json when present;
#                          `$X` adds bench options; prints each cell's median
#   pack_out               $OUT packed into one r.tgz (what the device tool brings back)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ENTMAXKV_PTX_CACHE=/tmp/entmaxkv_ptx
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - $(date +%s) + T0 )); }
card() {
  { date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader; } > "$OUT/card.txt"
  cat "$OUT/card.txt"
}
bench() {
  local n=$1 lim=$2 c=$3 m=$4; shift 4
  local L; L=$(left "$lim"); [ "$L" -lt 15 ] && { echo "$n skipped"; return; }
  local sdpa=(); [ -f "$OUT/sdpa.json" ] && sdpa=(--sdpa-json "$OUT/sdpa.json")
  # shellcheck disable=SC2086
  env "$@" timeout "$L" ./entmaxkv bench --device cuda --preset figure --iters 30 --warmup 3 --no-accuracy \
    "${sdpa[@]}" --contexts "$c" --methods "$m" --budget 0.125 $X --json "$OUT/b_$n.json" > "$OUT/b_$n.log" 2>&1
  echo "$n rc=$? | $(grep -E '^  [a-z]' "$OUT/b_$n.log" | awk '{print $1, $3}' | paste -sd' ')"
}
pack_out() { (cd "$OUT" && tar czf ../r.tgz . && find . -type f -delete && mv ../r.tgz .); }

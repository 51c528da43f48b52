#!/bin/bash
# Alternated A/B of the [cpu-sparse] sparse steps (session 6): `main` (ea2297d) and the
# branch `cpu-bounds6`, each run measuring its own bandwidth first; `uptime` before each.
# usage: ab.sh ROUNDS TAG BIN_MAIN BIN_NEW
rounds=$1; tag=$2; a=$3; b=$4
dir=$(dirname "$0")
for r in $(seq 1 "$rounds"); do
  for pair in "main:$a" "new:$b"; do
    name=${pair%%:*}; bin=${pair#*:}
    uptime > "$dir/$tag-$name-$r.log"
    "$bin" bench --contexts 128K --methods certified,gaussian-robust,topk --iters 10 \
      --no-accuracy --json "$dir/$tag-$name-$r.json" >> "$dir/$tag-$name-$r.log" 2>&1
  done
done

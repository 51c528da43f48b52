#!/usr/bin/env python3
"""Markdown tables from `entmaxkv bench --device cuda` JSON (step time, × vs SDPA, floor ratio).

    python3 scripts/gpu_table.py bench/results/s3/bench_b1.json [more.json ...]
"""
import json
import sys


def ctx(n):
    return f"{n >> 20}M" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10}K"


for path in sys.argv[1:]:
    b = json.load(open(path))
    pv = b["provenance"]
    print(f"\n`{path}`: {b['device']}, read bandwidth {b['bandwidth']['read_gbs']:.0f} GB/s, "
          f"{pv['date_utc']}, commit {pv['git_commit']}\n")
    print("| context | method | α | median ms | SDPA ms | SDPA / ours | floor ms | ours / floor | pages kept | rel vs oracle | certified |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in b["cells"]:
        name = c["method"] + (f"@{c['budget']}" if c.get("budget") else "")
        sd = c.get("sdpa_ms")
        rel = "-" if c.get("rel") is None else f"{c['rel']:.2g}"
        cert = "-" if c.get("certified_frac") is None else f"{100 * c['certified_frac']:.0f}%"
        sds = "-" if sd is None else f"{sd:.4f}"
        ratio = "-" if sd is None else f"{sd / c['median_ms']:.2f}×"
        print(f"| {ctx(c['context'])} | {name} | {c['alpha']:.4g} | {c['median_ms']:.4f} | {sds} | {ratio} | "
              f"{c['floor_ms']:.4f} | {c['median_ms'] / c['floor_ms']:.2f}× | "
              f"{c['pages_kept_mean']:.0f}/{c['pages_total']:.0f} | {rel} | {cert} |")

#!/usr/bin/env python3
"""Medians (and ranges) over the runs of ab.sh: usage summarize.py TAG [DIR]."""
import glob, json, os, re, statistics as st, sys

tag = sys.argv[1]
d = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
rows = {}
loads = {}
for f in sorted(glob.glob(os.path.join(d, f"{tag}-*-*.json"))):
    name = os.path.basename(f).split("-")[-2]
    j = json.load(open(f))
    bw = j["bandwidth"]["read_gbs"]
    log = open(f[:-5] + ".log").read()
    m = re.search(r"load average: ([\d.]+)", log)
    loads.setdefault(name, []).append(float(m.group(1)) if m else float("nan"))
    for c in j["cells"]:
        rows.setdefault((c["method"], name), []).append(
            (c["median_ms"], c["floor_ms"], c["median_ms"] / c["floor_ms"], c["selection_ms"],
             c["attention_ms"], c["pages_kept_mean"], bw))
for name, l in loads.items():
    print(f"{name}: {len(l)} runs, load average (1 min) before the runs {min(l):.2f}-{max(l):.2f}, "
          f"median {st.median(l):.2f}")
print("| method | binary | runs | median ms | floor ms | × floor (range) | selection ms | attention ms | pages kept | probe GB/s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (meth, name), v in sorted(rows.items()):
    med = lambda i: st.median(x[i] for x in v)
    print(f"| {meth} | {name} | {len(v)} | {med(0):.2f} | {med(1):.2f} | {med(2):.2f}× "
          f"({min(x[2] for x in v):.2f}–{max(x[2] for x in v):.2f}) | {med(3):.2f} | {med(4):.2f} | "
          f"{med(5):.0f}/8192 | {med(6):.1f} |")

#!/usr/bin/env python3
"""usage: summarize.py TAG[,TAG...] BIN... : per binary and method, the runs' median step
time, selection, attention, floor and median/floor (each run's own bandwidth probe)."""
import json, glob, sys, statistics as st
tags = sys.argv[1].split(',')
for b in sys.argv[2:]:
    runs = []
    for t in tags:
        runs += sorted(glob.glob(f'bench/results/dev/cpucert/{t}-{b}-*.json'))
    per = {}
    bw = []
    for f in runs:
        j = json.load(open(f))
        bw.append(j['bandwidth']['read_gbs'])
        for c in j['cells']:
            per.setdefault(c['method'], []).append(c)
    print(f"{b}: {len(runs)} runs, read BW {min(bw):.1f}-{max(bw):.1f} GB/s (median {st.median(bw):.1f})")
    for m, cs in per.items():
        med = [c['median_ms'] for c in cs]
        sel = [c['selection_ms'] for c in cs]
        att = [c['attention_ms'] for c in cs]
        fl = [c['floor_ms'] for c in cs]
        ratio = [c['median_ms'] / c['floor_ms'] for c in cs]
        print(f"  {m:16s} median {st.median(med):6.2f} ms (runs {' '.join(f'{x:.2f}' for x in med)}) "
              f"sel {st.median(sel):5.2f} att {st.median(att):5.2f} floor {st.median(fl):5.2f} "
              f"median/floor {st.median(ratio):4.2f}x (per run {min(ratio):.2f}-{max(ratio):.2f})")

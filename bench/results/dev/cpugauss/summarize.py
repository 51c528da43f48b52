# usage: summarize.py TAGS BIN... ; TAGS comma-separated rounds pooled (e.g. r1,r2)
import json,glob,sys,statistics as st
tags=sys.argv[1].split(','); bins=sys.argv[2:]
for b in bins:
    files=sorted(f for t in tags for f in glob.glob(f'bench/results/dev/cpugauss/{t}-{b}-*.json'))
    bw=[json.load(open(f))['bandwidth']['read_gbs'] for f in files]
    print(f"{b}: {len(files)} runs, probe read BW {min(bw):.1f}-{max(bw):.1f} GB/s (median {st.median(bw):.1f})")
    rows={}
    for f in files:
        d=json.load(open(f))
        for c in d['cells']:
            rows.setdefault(c['method'],[]).append(c)
    for m,cs in rows.items():
        med=st.median(c['median_ms'] for c in cs)
        sel=st.median(c['selection_ms'] for c in cs)
        att=st.median(c['attention_ms'] for c in cs)
        ratio=st.median(c['median_ms']/c['floor_ms'] for c in cs)
        pct=st.median(100*c['floor_ms']/c['median_ms'] for c in cs)
        fl=st.median(c['floor_ms'] for c in cs)
        mn=st.median(c['min_ms'] for c in cs)
        mnr=st.median(c['min_ms']/c['floor_ms'] for c in cs)
        print(f"  {m:16s} median {med:7.2f} ms  sel {sel:5.2f} att {att:6.2f}  floor {fl:6.2f}  med/floor {ratio:4.2f}x  floor/med {pct:4.0f}%  min {mn:6.2f} min/floor {mnr:4.2f}x  per-run %: {sorted(round(100*c['floor_ms']/c['median_ms']) for c in cs)}")
# Per run: each method's median time ÷ dense entmax's median time in the same run (the
# machine's state cancels out), next to the ratio of their floors (bytes ÷ bytes).
print("same-run ratio to dense-entmax (time; floor):")
for b in bins:
    files=sorted(f for t in tags for f in glob.glob(f'bench/results/dev/cpugauss/{t}-{b}-*.json'))
    rows={}
    for f in files:
        d=json.load(open(f))
        dense=[c for c in d['cells'] if c['method']=='dense-entmax']
        if not dense: continue
        dn=dense[0]
        for c in d['cells']:
            rows.setdefault(c['method'],[]).append((c['median_ms']/dn['median_ms'], c['floor_ms']/dn['floor_ms'], (c['median_ms']/c['floor_ms'])/(dn['median_ms']/dn['floor_ms'])))
    for m,v in rows.items():
        if m=='dense-entmax': continue
        print(f"  {b:8s} {m:18s} time/dense {st.median(x[0] for x in v):5.2f} (runs {min(x[0] for x in v):.2f}-{max(x[0] for x in v):.2f})  floor/dense floor {st.median(x[1] for x in v):5.2f}  (med/floor)/(dense med/floor) {st.median(x[2] for x in v):5.2f}")

# usage: summarize.py TAGS BIN... ; TAGS comma-separated rounds pooled (e.g. r1,r2)
import json,glob,sys,statistics as st
tags=sys.argv[1].split(','); bins=sys.argv[2:]
for b in bins:
    files=sorted(f for t in tags for f in glob.glob(f'bench/results/dev/cpusparse/{t}-{b}-*.json'))
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
        print(f"  {m:16s} median {med:7.2f} ms  sel {sel:5.2f} att {att:6.2f}  floor {fl:6.2f}  med/floor {ratio:4.2f}x  floor/med {pct:4.0f}%  per-run %: {sorted(round(100*c['floor_ms']/c['median_ms']) for c in cs)}")

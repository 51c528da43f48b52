import json,glob,os,sys,statistics as st,collections
# Summarises the A/B runs in the folder given (default: this script's folder, e.g. `sum.py quiet`).
D=os.path.join(os.path.dirname(os.path.abspath(__file__)), sys.argv[1] if len(sys.argv)>1 else '')
R=collections.defaultdict(list); BW=collections.defaultdict(list)
for f in sorted(glob.glob(os.path.join(D,'*_*.json'))):
    b=f.split('/')[-1].split('_')[0]
    d=json.load(open(f))
    bw=d['bandwidth']['read_gbs'] if 'bandwidth' in d and isinstance(d['bandwidth'],dict) else None
    BW[b].append(bw)
    for c in d['cells']:
        R[(c['method'],b)].append((c['median_ms'], c['median_ms']/c['floor_ms'], c.get('selection_ms'), c.get('attention_ms')))
print('probe GB/s', {b:[round(x,1) for x in v if x] for b,v in BW.items()})
for (m,b),v in sorted(R.items()):
    ms=[x[0] for x in v]; xf=[x[1] for x in v]
    print(f"{m:16s} {b:5s} n={len(v)} median {st.median(ms):.3f} ms  xfloor {st.median(xf):.2f} ({min(xf):.2f}-{max(xf):.2f})  sel {st.median([x[2] for x in v]):.3f} att {st.median([x[3] for x in v]):.3f}")

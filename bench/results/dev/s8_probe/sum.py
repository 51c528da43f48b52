"""Summarises ab.sh's JSON: per probe setting, median over runs of the certified step's
median, selection, attention, K bytes and × floor (each run's median over its own floor)."""
import glob, json, statistics as st, sys

d = sys.argv[1] if len(sys.argv) > 1 else "."
for p in ("0", "256"):
    rows = []
    for f in sorted(glob.glob(f"{d}/p{p}_*.json")):
        j = json.load(open(f))
        bw = j["bandwidth"]["read_gbs"]
        for c in j["cells"]:
            if c["method"] == "certified":
                rows.append((c["median_ms"], c["selection_ms"], c["attention_ms"], c["bytes_k"], c["floor_ms"], c["median_ms"] / c["floor_ms"], bw))
    if not rows:
        continue
    med = lambda i: st.median(r[i] for r in rows)
    print(f"probe {p:>3}: runs {len(rows)}  median {med(0):.3f} ms  selection {med(1):.3f}  attention {med(2):.3f}  "
          f"K bytes {med(3)/1e6:.2f} MB  floor {med(4):.3f} ms  x floor {med(5):.2f} (range {min(r[5] for r in rows):.2f}-{max(r[5] for r in rows):.2f})  read GB/s {med(6):.1f}")

//! Random interleavings of sequence creation, appends of random lengths (both layouts),
//! releases and bad calls: no panic; an append is refused exactly when it is invalid, and a
//! refused one changes nothing; free-page accounting exact after every call; appended K/V
//! read back as given (rounded to the storage type, in either layout); the statistics of
//! every page an append touched equal to statistics recomputed from the stored keys right
//! after that append, and of every live page at the end.
#![no_main]
use arbitrary::Arbitrary;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::stats::reference_stats;
use entmaxkv::{with_kv, DType, KvElem};
use half::{f16, slice::HalfFloatSliceExt};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Add,
    Append {
        seq: u8,
        n: u8,
        head_major: bool,
        bad: u8,
    },
    Release {
        seq: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    dtype: u8,
    f32_stats: bool,
    ps: u8,
    hkv: u8,
    d: u8,
    pages: u8,
    ops: Vec<Op>,
}

/// `x` rounded to the storage type `dtype` (to nearest, ties to even), back in f32. bf16 is
/// rounded here independently of the library (x is finite): add half an ulp of bf16 (minus
/// one unless the kept lsb is odd) and truncate.
fn rounded(dtype: DType, x: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F32 => x.to_vec(),
        DType::F16 => {
            let mut h = vec![f16::ZERO; x.len()];
            h.convert_from_f32_slice(x);
            h.iter().map(|y| y.to_f32()).collect()
        }
        DType::Bf16 => x
            .iter()
            .map(|y| {
                let b = y.to_bits();
                f32::from_bits((b + 0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
            })
            .collect(),
    }
}

/// Keys (`key`) or values of page slot `i` of `id`, head `h`, widened to f32, straight from
/// the pool (one slice per page and head).
fn page_rows(cache: &PagedKvCache, id: SeqId, i: usize, h: usize, key: bool, out: &mut Vec<f32>) {
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let s = cache.seq(id).unwrap();
    let n = s.page_len(i, ps);
    let off = cache.kv_offset(s.pages[i], h);
    out.clear();
    with_kv!(cache.kv(), |k, v| {
        let src = if key { k } else { v };
        out.extend(src[off..off + n * d].iter().map(|x| x.to_f32()));
    });
}

/// The statistics of page slot `i` of `id` (every head) against those recomputed in f64
/// from its stored keys: min/max conservative, mean/std within 1e-5 when kept in f32 and
/// within one f16/bf16 rounding (1e-2) when kept in the K/V type.
fn check_page(cache: &PagedKvCache, id: SeqId, i: usize, f32_stats: bool, keys: &mut Vec<f32>) {
    let (hkv, d) = (cache.num_kv_heads(), cache.head_dim());
    for h in 0..hkv {
        page_rows(cache, id, i, h, true, keys);
        let r = reference_stats(keys, d);
        let got = cache.page_stats(id, i, h).unwrap();
        // accumulate without branching per channel; report the channel only on failure
        let mut ok = true;
        for c in 0..d {
            ok &= (got[0][c] as f64 <= r[0][c]) & (got[1][c] as f64 >= r[1][c]);
            for st in 2..4 {
                let (g, e) = (got[st][c] as f64, r[st][c]);
                ok &= (g - e).abs()
                    <= if f32_stats {
                        1e-5 * e.abs().max(1e-3)
                    } else {
                        1e-2 * e.abs().max(1e-2) // one rounding to f16/bf16
                    };
            }
        }
        assert!(
            ok,
            "page {i} head {h}: statistics {got:?} vs recomputed {r:?}"
        );
    }
}

const POOL_ELEMS: usize = 16_384;
const APPEND_ELEMS: usize = 32_768;

fuzz_target!(|inp: Input| {
    let dtype = [DType::F32, DType::F16, DType::Bf16][inp.dtype as usize % 3];
    let (ps, hkv, d) = (
        1 + inp.ps as usize % 20,
        1 + inp.hkv as usize % 3,
        1 + inp.d as usize % 24,
    );
    // Bounded work per input, extremes kept: at most 64 pages and 16 384 pool elements per
    // K (pages·ps·H_kv·D; any ps, H_kv, D still reach it), and appends clipped to 32 768 K
    // elements in all (a single append of any size fits; exhaustion stays reachable).
    let max_pages = (POOL_ELEMS / (ps * hkv * d)).clamp(1, 64);
    let mut budget = APPEND_ELEMS;
    let cfg = CacheConfig::new(hkv, d, 1 + inp.pages as usize % max_pages)
        .with_page_size(ps)
        .with_kv_dtype(dtype)
        .with_stats_dtype(if inp.f32_stats {
            StatsDType::F32
        } else {
            StatsDType::Kv
        });
    let mut cache = PagedKvCache::new(cfg).unwrap();
    // Snapshot for refused calls, refreshed only after the cache changed.
    let mut before = cache.clone();
    let mut stale = false;
    let mut ids: Vec<SeqId> = Vec::new();
    // xorshift32: K values in [−3.5, 10.5), V = −K
    let mut state = 0x9e37_79b9u32;
    let (mut keys, mut row) = (Vec::new(), Vec::new());
    for op in inp.ops.iter().take(64) {
        match *op {
            Op::Add => {
                ids.push(cache.add_sequence());
                stale = true;
            }
            Op::Append {
                seq,
                n,
                head_major,
                bad,
            } => {
                let id = if ids.is_empty() {
                    SeqId(1_000_000)
                } else {
                    ids[seq as usize % ids.len()]
                };
                let n = (n as usize % 40).min(budget / (hkv * d));
                budget -= n * hkv * d;
                let nan = bad % 7 == 0 && n > 0;
                let mut k: Vec<f32> = (0..n * hkv * d)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        (state >> 8) as f32 * (14.0 / (1u32 << 24) as f32) - 3.5
                    })
                    .collect();
                let v: Vec<f32> = k.iter().map(|&y| -y).collect();
                if nan {
                    k[0] = f32::NAN;
                }
                let layout = if head_major {
                    ChunkLayout::HeadMajor
                } else {
                    ChunkLayout::TokenMajor
                };
                // The append must be refused exactly when it is invalid: an empty chunk, a
                // non-finite value, an unknown sequence, or more new pages than are free (a
                // sequence of L tokens holds ⌈L/ps⌉ pages). A refused append must leave the
                // whole cache as it was (snapshot compared bit for bit).
                let (old_len, held) = cache.seq(id).map_or((0, 0), |s| (s.len, s.pages.len()));
                let valid = n > 0
                    && !nan
                    && ids.contains(&id)
                    && (old_len + n).div_ceil(ps) - held <= cache.free_pages();
                if !valid {
                    if stale {
                        before.clone_from(&cache);
                        stale = false;
                    }
                    assert!(
                        cache.append(id, &k, &v, layout).is_err(),
                        "invalid append accepted"
                    );
                    assert!(cache == before, "rejected append changed the cache");
                    continue;
                }
                if let Err(e) = cache.append(id, &k, &v, layout) {
                    panic!("valid append refused: {e}");
                }
                stale = true;
                assert_eq!(cache.seq_len(id).unwrap(), old_len + n);
                // what the cache must store: K and V rounded to the storage type
                let stored = [rounded(dtype, &k), rounded(dtype, &v)];
                // Read back what was appended (page by page, bit for bit), then check the
                // statistics of every page the append wrote.
                for i in old_len / ps..=(old_len + n - 1) / ps {
                    for h in 0..hkv {
                        for (src, key) in [(&stored[0], true), (&stored[1], false)] {
                            page_rows(&cache, id, i, h, key, &mut row);
                            let mut diff = 0u32;
                            for (t, got) in row.chunks_exact(d).enumerate() {
                                let Some(j) = (i * ps + t).checked_sub(old_len) else {
                                    continue; // written by an earlier append
                                };
                                let base = if head_major {
                                    (h * n + j) * d
                                } else {
                                    (j * hkv + h) * d
                                };
                                for (g, e) in got.iter().zip(&src[base..base + d]) {
                                    diff |= g.to_bits() ^ e.to_bits();
                                }
                            }
                            assert!(
                                diff == 0,
                                "page {i} head {h} (key {key}): appended rows read back wrong"
                            );
                        }
                    }
                    check_page(&cache, id, i, inp.f32_stats, &mut keys);
                }
            }
            Op::Release { seq } => {
                if !ids.is_empty() {
                    let i = seq as usize % ids.len();
                    cache.release(ids.remove(i)).unwrap();
                    stale = true;
                }
            }
        }
        let mut used = 0;
        for &i in &ids {
            let s = cache.seq(i).unwrap();
            assert_eq!(s.pages.len(), s.len.div_ceil(ps), "pages held vs tokens");
            used += s.pages.len();
        }
        assert_eq!(used + cache.free_pages(), cache.capacity_pages());
    }
    // Every live page at the end, keys read through the public row API.
    for &id in &ids {
        let s = cache.seq(id).unwrap();
        for i in 0..s.pages.len() {
            let n = s.page_len(i, ps);
            for h in 0..hkv {
                keys.resize(n * d, 0.0);
                for t in 0..n {
                    cache
                        .read_key(id, i * ps + t, h, &mut keys[t * d..(t + 1) * d])
                        .unwrap();
                }
                page_rows(&cache, id, i, h, true, &mut row);
                assert!(keys == row, "read_key disagrees with the pool");
            }
            check_page(&cache, id, i, inp.f32_stats, &mut keys);
        }
    }
});

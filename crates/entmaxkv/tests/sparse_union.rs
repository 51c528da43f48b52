//! The page-major top-k paths of the decoder: the bounds of all tasks of a sequence in one
//! walk over the statistics (`topk::seq_page_bounds`) equal the per-task bounds bit for
//! bit, and the union walk over the kept pages (`attention::sparse`) keeps the same pages,
//! the same τ and support as the per-task group kernel, and matches the f64 oracle on the
//! kept tokens.

#[path = "support/group_reference.rs"]
mod group_reference;
use entmaxkv::attention::cpu::{HeadResult, PoolGeometry, TauMode};
use entmaxkv::attention::oracle::oracle_scores;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::topk::{self, Budget, TaskHeads};
use entmaxkv::selection::{GqaMode, SelectScratch, SelectionContext};
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::tau::entmax;
use entmaxkv::DType;
use proptest::prelude::*;

fn kv_dtype(i: u8) -> (DType, StatsDType) {
    match i % 4 {
        0 => (DType::F32, StatsDType::F32),
        1 => (DType::F16, StatsDType::Kv),
        2 => (DType::F16, StatsDType::F32),
        _ => (DType::Bf16, StatsDType::Kv),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// `seq_page_bounds` equals `page_bounds` bit for bit, every task, every page (on
    /// AVX-512 CPUs through its pair kernel for f16 and f32 statistics).
    #[test]
    fn seq_bounds_equal_task_bounds(
        hkv in 1usize..10,
        group in 1usize..4,
        shared in any::<bool>(),
        alibi in any::<bool>(),
        dt in 0u8..4,
        len in 1usize..3000,
        d in prop_oneof![Just(8usize), Just(32), Just(64)],
        zeros in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let h = hkv * group;
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Structured, &[len], h, hkv, d);
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, len.div_ceil(16)).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        // Signed zeros in q: where the sign of q picks the row (the AVX-512 pair kernel).
        let q: Vec<f32> = prob
            .q
            .iter()
            .enumerate()
            .map(|(i, x)| match (zeros, i % 5) {
                (true, 0) => 0.0,
                (true, 1) => -0.0,
                _ => x * 0.17,
            })
            .collect();
        let slopes: Vec<f32> = (0..h).map(|i| if alibi { 0.01 * (i + 1) as f32 } else { 0.0 }).collect();
        let tasks: Vec<TaskHeads> = if shared {
            (0..hkv).map(|k| TaskHeads { kv_head: k, h0: k * group, group }).collect()
        } else {
            (0..h).map(|i| TaskHeads { kv_head: i / group, h0: i, group: 1 }).collect()
        };
        let seq = cache.seq(ids[0]).unwrap();
        let closed = seq.pages.len() - 1;
        let (mut out, mut rows) = (Vec::new(), Vec::new());
        topk::seq_page_bounds(&cache, seq, &tasks, &q, &slopes, &mut out, &mut rows);
        let mut scratch = SelectScratch::new(closed + 1, d);
        for (t, th) in tasks.iter().enumerate() {
            let ctx = SelectionContext {
                cache: &cache,
                seq,
                kv_head: th.kv_head,
                q_scaled: &q[th.h0 * d..(th.h0 + th.group) * d],
                slopes: &slopes[th.h0..th.h0 + th.group],
                alpha: 1.5,
            };
            topk::page_bounds(&ctx, &mut scratch);
            for i in 0..closed {
                prop_assert_eq!(out[t * closed + i].to_bits(), scratch.scored[i].0.to_bits(), "task {} page {}", t, i);
            }
        }
    }

    /// The decoder's top-k step against the per-task path (same pages, τ and support bit
    /// for bit) and against the f64 oracle on the kept tokens.
    #[test]
    fn union_walk_matches_group_kernel_and_oracle(
        alpha in prop_oneof![Just(1.0), Just(1.5), Just(2.0), Just(3.0)],
        hkv in 1usize..4,
        group in 1usize..3,
        shared in any::<bool>(),
        alibi in any::<bool>(),
        dt in 0u8..4,
        lens in prop::collection::vec(1usize..5000, 1..3),
        frac in prop_oneof![Just(0.05), Just(0.3)],
        sinks in 0usize..2,
        seed in any::<u64>(),
    ) {
        let (h, d, ps) = (hkv * group, 32, 16);
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Structured, &lens, h, hkv, d);
        let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, pages).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let mut params = AttentionParams::new(h, alpha);
        if alibi {
            params = params.with_alibi((0..h).map(|i| 0.02 * (i + 1) as f32).collect());
        }
        let max_len = *lens.iter().max().unwrap();
        let budget = Budget::Fraction(frac);
        let gqa = if shared { GqaMode::Shared } else { GqaMode::PerHead };
        let dcfg = DecodeConfig::new(params.clone(), Method::TopK(budget))
            .with_gqa(gqa)
            .with_sink_pages(sinks);
        let mut dec = Decoder::new(&cache, ids.len(), max_len, dcfg).unwrap();
        let mut out = vec![0.0; prob.q.len()];
        let rep = dec.step(&cache, &ids, &prob.q, &mut out).unwrap().clone();

        let scale = params.scale_for(d);
        let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
        let slopes: Vec<f32> = (0..h).map(|i| params.slope(i)).collect();
        let geom = PoolGeometry { num_kv_heads: hkv, page_size: ps, head_dim: d };
        let tg = if shared { group } else { 1 };
        for (b, &id) in ids.iter().enumerate() {
            let seq = cache.seq(id).unwrap();
            for h0 in (0..h).step_by(tg) {
                let (sel, gout, res) = group_reference::group_reference(
                    &cache,
                    seq,
                    geom,
                    h0 / group,
                    &qs[(b * h + h0) * d..(b * h + h0 + tg) * d],
                    &slopes[h0..h0 + tg],
                    alpha,
                    TauMode::Exact,
                    |ctx, scratch, sel| topk::select_pinned(ctx, budget, sinks, 0, scratch, sel).unwrap(),
                );
                for hg in 0..tg {
                    let hh = h0 + hg;
                    let r = rep.heads[b * h + hh];
                    prop_assert_eq!(r.pages_kept as usize, sel.pages.len());
                    prop_assert_eq!(r.tau.to_bits(), res[hg].tau.to_bits(), "tau of head {}", hh);
                    prop_assert_eq!(r.support, res[hg].support);
                    let row = (b * h + hh) * d;
                    // The f64 oracle on the kept tokens.
                    let all = oracle_scores(&cache, id, hh, &prob.q[row..row + d], &params).unwrap();
                    let kept: Vec<usize> = sel
                        .pages
                        .iter()
                        .flat_map(|p| p.start as usize..(p.start + p.len) as usize)
                        .collect();
                    let sc: Vec<f64> = kept.iter().map(|&t| all[t]).collect();
                    let e = entmax(&sc, alpha).unwrap();
                    let mut refo = vec![0.0f64; d];
                    let mut vrow = vec![0.0f32; d];
                    for (j, &t) in kept.iter().enumerate() {
                        if e.p[j] != 0.0 {
                            cache.read_value(id, t, hh / group, &mut vrow).unwrap();
                            for c in 0..d {
                                refo[c] += e.p[j] * vrow[c] as f64;
                            }
                        }
                    }
                    // f32 scores against the f64 oracle carry a few 1e-6 of relative error
                    // on some inputs (a few-ulp τ shift moves every weight); the group
                    // kernel's error on the same pages says what the f32 path can do.
                    let g_err = compare(&gout[hg * d..(hg + 1) * d], &refo).unwrap().rel;
                    let tol = (if alpha > 2.0 { 1e-5f64 } else { 2e-6 }).max(2.0 * g_err);
                    let m = compare(&out[row..row + d], &refo).unwrap();
                    prop_assert!(m.rel <= tol, "head {} rel vs oracle {} (group kernel {})", hh, m.rel, g_err);
                    let m = compare(&out[row..row + d], &gout[hg * d..(hg + 1) * d].iter().map(|&x| x as f64).collect::<Vec<_>>()).unwrap();
                    prop_assert!(m.rel <= tol, "head {} rel vs group kernel {}", hh, m.rel);
                }
            }
        }
    }
}

/// The top-k decoder sizes its workspace at plan time: steps never grow it.
#[test]
fn topk_decoder_workspace_is_planned() {
    let mut syn = Synth::new(23);
    let lens = [5000, 77];
    for (h, hkv) in [(4, 4), (8, 2)] {
        let prob = syn.problem(Workload::Iid, &lens, h, hkv, 64);
        let (cache, ids) = prob.build_cache(CacheConfig::new(hkv, 64, 400), 0).unwrap();
        for alpha in [1.0, 1.5] {
            for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                let cfg = DecodeConfig::new(
                    AttentionParams::new(h, alpha),
                    Method::TopK(Budget::Fraction(0.2)),
                )
                .with_gqa(gqa);
                let mut dec = Decoder::new(&cache, 2, 5000, cfg).unwrap();
                let planned = dec.workspace_bytes();
                let mut out = vec![0.0f32; prob.q.len()];
                for _ in 0..2 {
                    dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                    assert_eq!(
                        dec.workspace_bytes(),
                        planned,
                        "h {h} hkv {hkv} alpha {alpha} {gqa:?}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The decoder's `certified` step (bound pass page-major over all tasks of a sequence)
    /// equals the per-task strategy (`certified_decode_group`) bit for bit: outputs, τ,
    /// candidates, pages touched.
    #[test]
    fn certified_page_major_equals_per_task(
        alpha in prop_oneof![Just(1.5), Just(2.0), Just(4.0 / 3.0)],
        hkv in 1usize..4,
        group in 1usize..3,
        shared in any::<bool>(),
        alibi in any::<bool>(),
        dt in 0u8..4,
        lens in prop::collection::vec(1usize..5000, 1..3),
        seed in any::<u64>(),
    ) {
        use entmaxkv::certificate::{certified_decode_group, CertifiedWorkspace};
        let (h, d, ps) = (hkv * group, 32, 16);
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Structured, &lens, h, hkv, d);
        let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, pages).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let mut params = AttentionParams::new(h, alpha);
        if alibi {
            params = params.with_alibi((0..h).map(|i| 0.02 * (i + 1) as f32).collect());
        }
        let max_len = *lens.iter().max().unwrap();
        let gqa = if shared { GqaMode::Shared } else { GqaMode::PerHead };
        let dcfg = DecodeConfig::new(params.clone(), Method::Certified).with_gqa(gqa);
        let mut dec = Decoder::new(&cache, ids.len(), max_len, dcfg).unwrap();
        let mut out = vec![0.0; prob.q.len()];
        let rep = dec.step(&cache, &ids, &prob.q, &mut out).unwrap().clone();
        let scale = params.scale_for(d);
        let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
        let slopes: Vec<f32> = (0..h).map(|i| params.slope(i)).collect();
        let tg = if shared { group } else { 1 };
        for (b, &id) in ids.iter().enumerate() {
            let seq = cache.seq(id).unwrap();
            for h0 in (0..h).step_by(tg) {
                let mut ws = CertifiedWorkspace::new(tg, seq.len, ps, d);
                let mut gout = vec![0.0f32; tg * d];
                let mut res = vec![HeadResult::default(); tg];
                let q = &qs[(b * h + h0) * d..(b * h + h0 + tg) * d];
                certified_decode_group(&cache, seq, h0 / group, q, &slopes[h0..h0 + tg], alpha, &mut ws, &mut gout, &mut res).unwrap();
                for hg in 0..tg {
                    let hh = h0 + hg;
                    let r = rep.heads[b * h + hh];
                    prop_assert_eq!(r.tau.to_bits(), res[hg].tau.to_bits());
                    prop_assert_eq!(r.support, res[hg].support);
                    prop_assert_eq!(r.candidates as usize, ws.candidates());
                    prop_assert_eq!(r.pages_kept, ws.pages_touched());
                    let row = (b * h + hh) * d;
                    let a: Vec<u32> = out[row..row + d].iter().map(|x| x.to_bits()).collect();
                    let e: Vec<u32> = gout[hg * d..(hg + 1) * d].iter().map(|x| x.to_bits()).collect();
                    prop_assert_eq!(a, e, "head {}", hh);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The decoder's Gaussian step (one task per kv head: the union walk) against the
    /// per-task group kernel on the same selection: same pages, τ and support bit for bit,
    /// outputs to f32 summation order; the exact, fixed and corrected τ modes.
    #[test]
    fn union_walk_serves_gaussian_selection(
        alpha in prop_oneof![Just(4.0 / 3.0), Just(1.5), Just(2.0)],
        hkv in 1usize..3,
        group in 1usize..3,
        shared in any::<bool>(),
        robust in any::<bool>(),
        mode in prop_oneof![Just(TauMode::Exact), Just(TauMode::Fixed), Just(TauMode::Corrected(2))],
        lens in prop::collection::vec(1usize..3000, 1..3),
        seed in any::<u64>(),
    ) {
        use entmaxkv::selection::gaussian::{self, Criterion, GaussianOpts};
        let (h, d, ps) = (hkv * group, 32, 16);
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Iid, &lens, h, hkv, d);
        let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
        let cfg = CacheConfig::new(hkv, d, pages).with_kv_dtype(DType::F16);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let params = AttentionParams::new(h, alpha);
        let max_len = *lens.iter().max().unwrap();
        let opts = if robust {
            GaussianOpts::default().with_criterion(Criterion::Robust)
        } else {
            GaussianOpts::default()
        };
        let gqa = if shared { GqaMode::Shared } else { GqaMode::PerHead };
        let dcfg = DecodeConfig::new(params.clone(), Method::Gaussian(opts.clone()))
            .with_gqa(gqa)
            .with_tau_mode(mode);
        let mut dec = Decoder::new(&cache, ids.len(), max_len, dcfg).unwrap();
        let mut out = vec![0.0; prob.q.len()];
        let rep = dec.step(&cache, &ids, &prob.q, &mut out).unwrap().clone();

        let scale = params.scale_for(d);
        let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
        let slopes: Vec<f32> = (0..h).map(|i| params.slope(i)).collect();
        let geom = PoolGeometry { num_kv_heads: hkv, page_size: ps, head_dim: d };
        let tg = if shared { group } else { 1 };
        for (b, &id) in ids.iter().enumerate() {
            let seq = cache.seq(id).unwrap();
            for h0 in (0..h).step_by(tg) {
                let (sel, gout, res) = group_reference::group_reference(
                    &cache,
                    seq,
                    geom,
                    h0 / group,
                    &qs[(b * h + h0) * d..(b * h + h0 + tg) * d],
                    &slopes[h0..h0 + tg],
                    alpha,
                    mode,
                    |ctx, scratch, sel| gaussian::select(ctx, &opts, scratch, sel).unwrap(),
                );
                for hg in 0..tg {
                    let hh = h0 + hg;
                    let r = rep.heads[b * h + hh];
                    prop_assert_eq!(r.pages_kept as usize, sel.pages.len());
                    prop_assert_eq!(r.tau.to_bits(), res[hg].tau.to_bits(), "tau of head {} ({:?})", hh, mode);
                    prop_assert_eq!(r.support, res[hg].support);
                    let row = (b * h + hh) * d;
                    let want: Vec<f64> = gout[hg * d..(hg + 1) * d].iter().map(|&x| x as f64).collect();
                    let m = compare(&out[row..row + d], &want).unwrap();
                    prop_assert!(m.rel <= 2e-6, "head {} ({:?}) rel vs group kernel {}", hh, mode, m.rel);
                }
            }
        }
    }
}

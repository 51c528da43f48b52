//! The page-major Gaussian paths of the decoder (original criterion): the page moments of
//! every query head of a sequence in one walk over the statistics
//! (`model::seq_page_moments`) equal the per-task moments bit for bit; selection from them
//! (`gaussian::select_from_moments`) keeps the same pages with the same τ̂ as
//! `gaussian::select`; the decoder's step (the union walk with τ from the page maxima and V
//! from the pages with weight, or the group kernel) gives the same pages, τ̂, τ and support
//! as the per-task path, for every τ mode, stats dtype, GQA mode, ALiBi, short sequences
//! and lengths at page boundaries; bits do not depend on the thread count; steps never grow
//! the planned workspace.

#[path = "support/group_reference.rs"]
mod group_reference;
use entmaxkv::attention::cpu::{PoolGeometry, TauMode};
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::gaussian::{self, model, GaussianOpts};
use entmaxkv::selection::{GqaMode, SelectScratch, Selection, SelectionContext};
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::tau::{halley_correct, halley_correct_candidates};
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

/// Lengths around page boundaries (page 16) and short sequences, or a random one.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            1usize, 2, 15, 16, 17, 31, 32, 33, 48, 2047, 2048, 2049
        ]),
        1usize..4000,
    ]
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// `seq_page_moments` equals `page_moments` bit for bit, every query head, every page,
    /// whatever the task layout (per-head or shared GQA tasks).
    #[test]
    fn seq_moments_equal_task_moments(
        hkv in 1usize..4,
        group in 1usize..4,
        shared in any::<bool>(),
        dt in 0u8..4,
        d in prop::sample::select(vec![8usize, 12, 32, 64]),
        len in length(),
        seed in any::<u64>(),
    ) {
        let h = hkv * group;
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Structured, &[len], h, hkv, d);
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, len.div_ceil(16)).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let q: Vec<f32> = prob.q.iter().map(|x| x * 0.3).collect();
        let slopes = vec![0.0f32; h];
        let seq = cache.seq(ids[0]).unwrap();
        let closed = seq.pages.len() - 1;
        let (mut mu, mut sdv, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let meta = model::seq_page_moments(&cache, seq, &q, &mut mu, &mut sdv, &mut rows);
        prop_assert_eq!(meta, closed * 2 * hkv * cache.stats().row_bytes(d));
        let tg = if shared { group } else { 1 };
        let mut scratch = SelectScratch::new(closed + 1, d);
        for h0 in (0..h).step_by(tg) {
            let ctx = SelectionContext {
                cache: &cache,
                seq,
                kv_head: h0 / group,
                q_scaled: &q[h0 * d..(h0 + tg) * d],
                slopes: &slopes[h0..h0 + tg],
                alpha: 1.5,
            };
            let task_meta = model::page_moments(&ctx, &mut scratch);
            prop_assert_eq!(task_meta * hkv, meta);
            for hg in 0..tg {
                for i in 0..closed {
                    let (a, b) = (mu[(h0 + hg) * closed + i], scratch.mu[hg * closed + i]);
                    prop_assert!(same(a, b), "mu head {} page {}: {} vs {}", h0 + hg, i, a, b);
                    let (a, b) = (sdv[(h0 + hg) * closed + i], scratch.sd[hg * closed + i]);
                    prop_assert!(same(a, b), "sd head {} page {}: {} vs {}", h0 + hg, i, a, b);
                }
            }
        }
    }

    /// `select_from_moments` on the sequence's moments keeps what `select` keeps, with the
    /// same τ̂ bit for bit (original criterion; α = 1 keeps everything in both).
    #[test]
    fn select_from_moments_equals_select(
        alpha in prop_oneof![Just(1.0), Just(4.0 / 3.0), Just(1.5), Just(2.0), Just(3.0)],
        hkv in 1usize..3,
        group in 1usize..4,
        shared in any::<bool>(),
        alibi in any::<bool>(),
        within in any::<bool>(),
        dt in 0u8..4,
        len in length(),
        seed in any::<u64>(),
    ) {
        let (h, d) = (hkv * group, 32);
        let mut syn = Synth::new(seed);
        let prob = syn.problem(Workload::Structured, &[len], h, hkv, d);
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, len.div_ceil(16)).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let q: Vec<f32> = prob.q.iter().map(|x| x * 0.18).collect();
        let slopes: Vec<f32> = (0..h).map(|i| if alibi { 0.02 * (i + 1) as f32 } else { 0.0 }).collect();
        let opts = GaussianOpts { alibi_within_page: within, ..GaussianOpts::default() };
        let seq = cache.seq(ids[0]).unwrap();
        let closed = seq.pages.len() - 1;
        let (mut mu, mut sdv, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let meta = model::seq_page_moments(&cache, seq, &q, &mut mu, &mut sdv, &mut rows);
        let tg = if shared { group } else { 1 };
        for h0 in (0..h).step_by(tg) {
            let ctx = SelectionContext {
                cache: &cache,
                seq,
                kv_head: h0 / group,
                q_scaled: &q[h0 * d..(h0 + tg) * d],
                slopes: &slopes[h0..h0 + tg],
                alpha,
            };
            let mut s1 = SelectScratch::new(closed + 1, d);
            let mut want = Selection::with_capacity(closed + 1, tg);
            gaussian::select(&ctx, &opts, &mut s1, &mut want).unwrap();
            let mut s2 = SelectScratch::new(closed + 1, d);
            let mut got = Selection::with_capacity(closed + 1, tg);
            let r = h0 * closed..(h0 + tg) * closed;
            gaussian::select_from_moments(&ctx, &opts, &mu[r.clone()], &sdv[r], meta, &mut s2, &mut got).unwrap();
            prop_assert_eq!(&got.pages, &want.pages, "pages of task at head {}", h0);
            for hg in 0..tg {
                prop_assert!(same(got.tau_hat[hg], want.tau_hat[hg]), "tau_hat head {}: {} vs {}", h0 + hg, got.tau_hat[hg], want.tau_hat[hg]);
            }
        }
    }

    /// The decoder's Gaussian step (original criterion) against the per-task path: same
    /// pages, τ̂, τ and support bit for bit, outputs to f32 summation order; every τ mode,
    /// stats dtype, GQA mode (the union walk with one task per kv head, the group kernel
    /// otherwise), ALiBi, several sequences.
    #[test]
    fn decoder_step_equals_per_task_path(
        alpha in prop_oneof![Just(4.0 / 3.0), Just(1.5), Just(2.0), Just(3.0)],
        hkv in 1usize..3,
        group in 1usize..3,
        shared in any::<bool>(),
        alibi in any::<bool>(),
        dt in 0u8..4,
        iid in any::<bool>(),
        mode in prop_oneof![Just(TauMode::Exact), Just(TauMode::Fixed), Just(TauMode::Corrected(1)), Just(TauMode::Corrected(3))],
        lens in prop::collection::vec(length(), 1..3),
        seed in any::<u64>(),
    ) {
        let (h, d, ps) = (hkv * group, 32, 16);
        let mut syn = Synth::new(seed);
        let w = if iid { Workload::Iid } else { Workload::Structured };
        let prob = syn.problem(w, &lens, h, hkv, d);
        let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
        let (kvd, sd) = kv_dtype(dt);
        let cfg = CacheConfig::new(hkv, d, pages).with_kv_dtype(kvd).with_stats_dtype(sd);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let mut params = AttentionParams::new(h, alpha);
        if alibi {
            params = params.with_alibi((0..h).map(|i| 0.01 * (i + 1) as f32).collect());
        }
        let max_len = *lens.iter().max().unwrap();
        let opts = GaussianOpts::default();
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
        let mut meta = 0u64;
        for (b, &id) in ids.iter().enumerate() {
            let seq = cache.seq(id).unwrap();
            if seq.pages.len() > 1 {
                meta += ((seq.pages.len() - 1) * 2 * hkv * cache.stats().row_bytes(d)) as u64;
            }
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
                    prop_assert!(same(r.tau_hat, sel.tau_hat[hg]), "tau_hat of head {}", hh);
                    prop_assert_eq!(r.tau.to_bits(), res[hg].tau.to_bits(), "tau of head {} ({:?})", hh, mode);
                    prop_assert_eq!(r.support, res[hg].support, "support of head {} ({:?})", hh, mode);
                    let row = (b * h + hh) * d;
                    let want: Vec<f64> = gout[hg * d..(hg + 1) * d].iter().map(|&x| x as f64).collect();
                    let m = compare(&out[row..row + d], &want).unwrap();
                    prop_assert!(m.rel <= 2e-6, "head {} ({:?}) rel vs group kernel {}", hh, mode, m.rel);
                }
            }
        }
        // The statistics rows of every kv head are read once per step.
        prop_assert_eq!(rep.bytes.meta, meta);
    }
}

/// `halley_correct_candidates` on the values with `z − z_max > −1` equals `halley_correct`
/// on all of them, bit for bit.
#[test]
fn halley_on_candidates_equals_full() {
    let mut seed = 3u64;
    let mut rnd = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for case in 0..400 {
        let alpha = [4.0 / 3.0, 1.5, 2.0, 1.7][case % 4];
        let n = 1 + (rnd() * 3000.0) as usize;
        let spread = [0.5, 2.0, 8.0][case % 3];
        let z: Vec<f32> = (0..n).map(|_| ((rnd() - 0.5) * spread) as f32).collect();
        let zmax = z.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let cand: Vec<f32> = z
            .iter()
            .copied()
            .filter(|&x| f64::from(x) - zmax > -1.0)
            .collect();
        let tau0 = zmax - 1.5 * rnd();
        for iters in [0, 1, 2, 5] {
            let full = halley_correct(&z, alpha, tau0, iters).unwrap();
            let got = halley_correct_candidates(&cand, n, alpha, tau0, iters).unwrap();
            assert_eq!(got.to_bits(), full.to_bits(), "case {case} iters {iters}");
        }
    }
    assert!(halley_correct_candidates(&[0.5], 0, 1.5, 0.0, 1).is_err());
    assert!(halley_correct_candidates(&[0.5], 3, 1.0, 0.0, 1).is_err());
}

/// Gaussian steps give the same bits on thread pools of any size, run after run, in every
/// τ mode, with and without ALiBi, both GQA modes.
#[test]
fn gaussian_bits_do_not_depend_on_threads() {
    let mut syn = Synth::new(41);
    let lens = [9000, 2100, 33];
    for (h, hkv) in [(4, 4), (4, 2)] {
        let prob = syn.problem(Workload::Structured, &lens, h, hkv, 64);
        let (cache, ids) = prob.build_cache(CacheConfig::new(hkv, 64, 800), 0).unwrap();
        for alibi in [false, true] {
            let mut params = AttentionParams::new(h, 1.5);
            if alibi {
                params = params.with_alibi((0..h).map(|i| 0.002 * (i + 1) as f32).collect());
            }
            for mode in [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(1)] {
                for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                    let cfg = DecodeConfig::new(
                        params.clone(),
                        Method::Gaussian(GaussianOpts::default()),
                    )
                    .with_gqa(gqa)
                    .with_tau_mode(mode);
                    let mut outs = Vec::new();
                    for threads in [1, 2, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        let mut dec = Decoder::new(&cache, 3, 9000, cfg.clone()).unwrap();
                        for _ in 0..2 {
                            let mut out = vec![0.0f32; prob.q.len()];
                            let rep = pool.install(|| {
                                dec.step(&cache, &ids, &prob.q, &mut out).unwrap().clone()
                            });
                            let heads: Vec<(u64, u64, u32, u32)> = rep
                                .heads
                                .iter()
                                .map(|r| {
                                    (
                                        r.tau.to_bits(),
                                        r.tau_hat.to_bits(),
                                        r.support,
                                        r.pages_kept,
                                    )
                                })
                                .collect();
                            outs.push((out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), heads));
                        }
                    }
                    for o in &outs[1..] {
                        assert!(
                            o == &outs[0],
                            "h {h} hkv {hkv} alibi {alibi} {mode:?} {gqa:?}"
                        );
                    }
                }
            }
        }
    }
}

/// A Gaussian decoder sizes its workspace at plan time: steps never grow it.
#[test]
fn gaussian_decoder_workspace_is_planned() {
    let mut syn = Synth::new(29);
    let lens = [5000, 77];
    for (h, hkv) in [(4, 4), (8, 2)] {
        let prob = syn.problem(Workload::Iid, &lens, h, hkv, 64);
        let (cache, ids) = prob.build_cache(CacheConfig::new(hkv, 64, 400), 0).unwrap();
        for alpha in [1.5, 2.0] {
            for mode in [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(1)] {
                for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                    let cfg = DecodeConfig::new(
                        AttentionParams::new(h, alpha),
                        Method::Gaussian(GaussianOpts::default()),
                    )
                    .with_gqa(gqa)
                    .with_tau_mode(mode);
                    let mut dec = Decoder::new(&cache, 2, 5000, cfg).unwrap();
                    let planned = dec.workspace_bytes();
                    let mut out = vec![0.0f32; prob.q.len()];
                    for _ in 0..2 {
                        dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                        assert_eq!(
                            dec.workspace_bytes(),
                            planned,
                            "h {h} hkv {hkv} alpha {alpha} {mode:?} {gqa:?}"
                        );
                    }
                }
            }
        }
    }
}

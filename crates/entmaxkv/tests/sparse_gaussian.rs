//! Gaussian-aware selection: accuracy against the f64 oracle on the original's test
//! distribution, the full-support case, fixed/corrected normalisation, ALiBi + GQA, the
//! single-page case, knob validation, and the robust criterion on structured keys.

use entmaxkv::attention::cpu::TauMode;
use entmaxkv::attention::oracle::{oracle_decode, oracle_scores};
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, PagedKvCache, SeqId, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method, StepReport};
use entmaxkv::metrics::compare;
use entmaxkv::selection::gaussian::{Criterion, GaussianOpts};
use entmaxkv::selection::GqaMode;
use entmaxkv::synth::{Problem, Synth, Workload};
use entmaxkv::{DType, Error};

const H: usize = 8;
const D: usize = 64;
const SEEDS: u64 = 5;

fn build(prob: &Problem, len: usize, cfg: Option<CacheConfig>) -> (PagedKvCache, Vec<SeqId>) {
    let pages = len.div_ceil(16) * prob.k.len();
    let cfg = cfg.unwrap_or_else(|| CacheConfig::new(prob.num_kv_heads, prob.d, pages));
    prob.build_cache(cfg, 0).unwrap()
}

fn step(
    cache: &PagedKvCache,
    ids: &[SeqId],
    q: &[f32],
    len: usize,
    cfg: DecodeConfig,
) -> (Vec<f32>, StepReport) {
    let mut dec = Decoder::new(cache, ids.len(), len, cfg).unwrap();
    let mut out = vec![0.0; q.len()];
    let rep = dec.step(cache, ids, q, &mut out).unwrap().clone();
    (out, rep)
}

fn mean_kept(rep: &StepReport) -> f64 {
    rep.heads.iter().map(|h| h.pages_kept as f64).sum::<f64>() / rep.heads.len() as f64
}

/// One criterion's 5-seed means for one τ mode.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    rel: f64,
    pages: f64,
    total: f64,
    /// Metadata bytes per step.
    meta: f64,
}

/// 5-seed means for each of `opts` and each τ mode (exact, fixed, corrected(1)), on iid
/// N(0,1) q/k/v, 8/8 heads, D=64, page 16, α=1.5, f16 K/V and statistics; one cache and
/// one oracle per seed shared by all runs.
fn accuracy(len: usize, opts: &[GaussianOpts], alibi: bool) -> Vec<[Acc; 3]> {
    let modes = [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(1)];
    let mut acc = vec![[Acc::default(); 3]; opts.len()];
    let n = SEEDS as f64;
    for seed in 0..SEEDS {
        let prob = Synth::new(1000 + seed).problem(Workload::Iid, &[len], H, H, D);
        let (cache, ids) = build(&prob, len, None);
        let mut params = AttentionParams::new(H, 1.5);
        if alibi {
            params = params.with_alibi(nape_slopes(H));
        }
        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
        for (o, opt) in opts.iter().enumerate() {
            for (m, &mode) in modes.iter().enumerate() {
                let cfg = DecodeConfig::new(params.clone(), Method::Gaussian(opt.clone()))
                    .with_tau_mode(mode);
                let (out, rep) = step(&cache, &ids, &prob.q, len, cfg);
                let a = &mut acc[o][m];
                a.rel += compare(&out, &oracle.out).unwrap().rel / n;
                a.pages += mean_kept(&rep) / n;
                a.total = rep.heads[0].pages_total as f64;
                a.meta += rep.bytes.meta as f64 / n;
            }
        }
    }
    for (opt, r) in opts.iter().zip(&acc) {
        for (m, a) in modes.iter().zip(r) {
            eprintln!(
                "len {len} alibi {alibi} {:?} {m:?}: rel {:.5} pages {:.1} / {} meta {:.0} B",
                opt.criterion, a.rel, a.pages, a.total, a.meta
            );
        }
    }
    acc
}

/// The standard ALiBi slopes 2^(−8(i+1)/H).
fn alibi_slopes(h: usize) -> Vec<f32> {
    (0..h)
        .map(|i| 2f32.powf(-8.0 * (i + 1) as f32 / h as f32))
        .collect()
}

/// The original's test slopes ("NAPE", SPEC §6.1): `2^(−8i/(H/2))` for the first half of
/// the heads, 0 for the rest.
fn nape_slopes(h: usize) -> Vec<f32> {
    (0..h)
        .map(|i| {
            if i < h / 2 {
                2f32.powf(-8.0 * (i + 1) as f32 / (h / 2) as f32)
            } else {
                0.0
            }
        })
        .collect()
}

/// MEASURED.md: the original's Gaussian exact mode had rel 0.0036 at 8K; with the default
/// (original) criterion we measure ~0.0006 keeping ~506 of 512 pages. The robust criterion
/// is exact to f32 rounding here while keeping about a third of the pages.
#[test]
fn accuracy_8k() {
    let r = accuracy(8192, &[GaussianOpts::default(), robust()], false);
    assert!(r[0][0].rel <= 0.0036, "exact rel {} at 8K", r[0][0].rel);
    for a in r.iter().flatten() {
        assert!(a.rel.is_finite() && a.rel < 1.0);
    }
    assert!(
        r[1][0].rel <= 1e-5,
        "robust exact rel {} at 8K",
        r[1][0].rel
    );
    assert!(
        r[1][0].pages < 0.5 * r[1][0].total,
        "robust kept {:?}",
        r[1][0]
    );
}

/// The original kept a mean 1822 of 2049 pages at 32K; we may keep no more.
#[test]
fn pages_32k() {
    let r = accuracy(32768, &[GaussianOpts::default(), robust()], false);
    assert!(r[0][0].pages <= 1822.0, "kept {:?} at 32K", r[0][0]);
    assert!(
        r[1][0].pages <= 1822.0 && r[1][0].rel <= 1e-5,
        "robust {:?}",
        r[1][0]
    );
}

/// MEASURED.md gives the original's Gaussian exact mode rel 0.0254 at 64K (74% of pages).
/// The original criterion as SPEC §4 specifies it does NOT reproduce that: we measure
/// ~0.139 keeping ~75% of pages (5 seeds), in line with SPEC appendix B's independent
/// re-derivation (0.21 at 76% kept, one head). The dropped quarter of pages, chosen by the
/// Gaussian likely max, still holds dense-support tokens. This test pins the original
/// criterion to what it does (≤ 0.2), and holds the robust criterion to the 0.025 target.
#[test]
fn accuracy_64k() {
    let r = accuracy(65536, &[GaussianOpts::default(), robust()], false);
    assert!(
        r[0][0].rel <= 0.2,
        "original exact rel {} at 64K",
        r[0][0].rel
    );
    assert!(
        r[1][0].rel <= 0.025,
        "robust exact rel {} at 64K",
        r[1][0].rel
    );
    assert!(
        r[1][0].pages < 0.25 * r[1][0].total,
        "robust kept {:?}",
        r[1][0]
    );
}

/// ALiBi (the original's NAPE slopes) at 8K. MEASURED.md: the original had rel 0.0019
/// (exact) and 0.0020 (corrected) here.
#[test]
fn accuracy_alibi_8k() {
    let r = accuracy(8192, &[GaussianOpts::default(), robust()], true);
    for a in &r {
        assert!(a[0].rel <= 0.0036, "exact {:?}", a[0]);
        assert!(a[2].rel <= 0.05, "corrected {:?}", a[2]);
    }
}

/// Report only (not run by default): ALiBi at 64K, and the original criterion without the
/// within-page ALiBi correction.
#[test]
#[ignore]
fn report_alibi_64k() {
    let plain = GaussianOpts {
        alibi_within_page: false,
        ..GaussianOpts::default()
    };
    accuracy(65536, &[GaussianOpts::default(), plain, robust()], true);
    accuracy(
        8192,
        &[GaussianOpts {
            alibi_within_page: false,
            ..GaussianOpts::default()
        }],
        true,
    );
}

fn robust() -> GaussianOpts {
    GaussianOpts::default().with_criterion(Criterion::Robust)
}

/// Every page selected (huge margin) ⇒ the sparse path is dense decode: equal to the f64
/// oracle to 1e-6 with f32 K/V, for α ∈ {4/3, 1.5, 2}, with and without ALiBi and GQA.
#[test]
fn full_support_equals_dense() {
    let keep_all = GaussianOpts {
        safety_margin_z: Some(1e6),
        max_quantile: Some(0.999),
        ..GaussianOpts::default()
    };
    let mut case = 0u64;
    for alpha in [4.0 / 3.0, 1.5, 2.0] {
        for (hkv, g) in [(2, 1), (2, 3)] {
            for alibi in [false, true] {
                for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                    for len in [17, 100, 513] {
                        case += 1;
                        let h = hkv * g;
                        let prob = Synth::new(case).problem(
                            Workload::Iid,
                            &[len, len / 2 + 20],
                            h,
                            hkv,
                            32,
                        );
                        let cfg = CacheConfig::new(hkv, 32, 2 * len.div_ceil(16) + 4)
                            .with_kv_dtype(DType::F32)
                            .with_stats_dtype(StatsDType::F32);
                        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
                        let mut params = AttentionParams::new(h, alpha);
                        if alibi {
                            params =
                                params.with_alibi((0..h).map(|i| 0.05 * (i + 1) as f32).collect());
                        }
                        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
                        let cfg = DecodeConfig::new(params, Method::Gaussian(keep_all.clone()))
                            .with_gqa(gqa);
                        let (out, rep) = step(&cache, &ids, &prob.q, len, cfg);
                        for hr in &rep.heads {
                            assert_eq!(hr.pages_kept, hr.pages_total, "case {case}");
                            assert!(hr.tau_hat.is_finite(), "case {case}");
                        }
                        let m = compare(&out, &oracle.out).unwrap();
                        assert!(m.rel <= 1e-6, "case {case} alpha {alpha} rel {}", m.rel);
                    }
                }
            }
        }
    }
}

/// fixed and corrected renormalise over the tokens read: with every value row equal to 1
/// the output is exactly 1 whatever τ̂ was (the original's fixed mode summed to 3–4.5).
#[test]
fn fixed_and_corrected_are_convex_combinations() {
    let len = 4096;
    let mut prob = Synth::new(7).problem(Workload::Iid, &[len], H, H, D);
    for v in prob.v.iter_mut() {
        v.fill(1.0);
    }
    let (cache, ids) = build(&prob, len, None);
    for opts in [
        GaussianOpts::default(),
        GaussianOpts {
            clamp_tau: false,
            ..GaussianOpts::default()
        },
        robust(),
    ] {
        for mode in [TauMode::Fixed, TauMode::Corrected(1), TauMode::Corrected(2)] {
            let params = AttentionParams::new(H, 1.5);
            let cfg = DecodeConfig::new(params, Method::Gaussian(opts.clone())).with_tau_mode(mode);
            let (out, rep) = step(&cache, &ids, &prob.q, len, cfg);
            for &x in &out {
                assert!((x - 1.0).abs() < 1e-5, "{mode:?} {:?}: {x}", opts.criterion);
            }
            for hr in &rep.heads {
                assert!(hr.tau_hat.is_finite() && hr.support > 0);
            }
            if opts.criterion == Criterion::Robust {
                assert!(rep.heads.iter().all(|r| r.pages_kept < r.pages_total));
            }
        }
    }
}

/// The clamp keeps τ within [τ_floor, τ̂]: the clamped τ̂ is ≤ the unclamped one.
#[test]
fn clamp_only_lowers_tau_hat() {
    let len = 8192;
    let prob = Synth::new(8).problem(Workload::Iid, &[len], H, H, D);
    let (cache, ids) = build(&prob, len, None);
    let run = |clamp: bool| {
        let o = GaussianOpts {
            clamp_tau: clamp,
            ..GaussianOpts::default()
        };
        let cfg = DecodeConfig::new(AttentionParams::new(H, 1.5), Method::Gaussian(o));
        step(&cache, &ids, &prob.q, len, cfg).1
    };
    let (on, off) = (run(true), run(false));
    for (a, b) in on.heads.iter().zip(&off.heads) {
        assert!(a.tau_hat <= b.tau_hat, "{} > {}", a.tau_hat, b.tau_hat);
        assert!(a.tau_hat > b.tau_hat - 1.0);
        assert_eq!(a.pages_kept, b.pages_kept);
    }
}

/// ALiBi with GQA (16 query heads over 4 kv heads), per-head and shared page sets, every τ
/// mode, both criteria: runs, stays accurate, and shared mode gives a group one page set.
#[test]
fn alibi_gqa_runs() {
    let (hkv, g, len) = (4, 4, 4096 + 5);
    let h = hkv * g;
    let prob = Synth::new(11).problem(Workload::Iid, &[len, 3000], h, hkv, D);
    let (cache, ids) = build(&prob, len, None);
    let params = AttentionParams::new(h, 1.5).with_alibi(alibi_slopes(h));
    let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
    for crit in [Criterion::Original, Criterion::Robust] {
        for gqa in [GqaMode::PerHead, GqaMode::Shared] {
            for mode in [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(2)] {
                let o = GaussianOpts::default().with_criterion(crit);
                let cfg = DecodeConfig::new(params.clone(), Method::Gaussian(o))
                    .with_gqa(gqa)
                    .with_tau_mode(mode);
                let (out, rep) = step(&cache, &ids, &prob.q, len, cfg);
                let m = compare(&out, &oracle.out).unwrap();
                let bound = if mode == TauMode::Fixed { 0.8 } else { 0.02 };
                assert!(m.rel <= bound, "{crit:?} {gqa:?} {mode:?}: rel {}", m.rel);
                assert!(rep
                    .heads
                    .iter()
                    .all(|r| r.pages_kept <= r.pages_total && r.tau_hat.is_finite()));
                assert!(rep.heads.iter().any(|r| r.pages_kept < r.pages_total));
                if gqa == GqaMode::Shared {
                    for grp in rep.heads.chunks(g) {
                        assert!(grp.iter().all(|r| r.pages_kept == grp[0].pages_kept));
                    }
                }
            }
        }
    }
}

/// A sequence of one page (S ≤ page size): that page is read and the answer is exact in
/// every τ mode (no τ̂: attention solves τ on the tokens).
#[test]
fn single_page_sequence() {
    for len in [1, 7, 16] {
        let prob = Synth::new(len as u64).problem(Workload::Iid, &[len], 2, 2, 16);
        let cfg = CacheConfig::new(2, 16, 2)
            .with_kv_dtype(DType::F32)
            .with_stats_dtype(StatsDType::F32);
        let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
        let params = AttentionParams::new(2, 1.5);
        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
        for crit in [Criterion::Original, Criterion::Robust] {
            for mode in [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(1)] {
                let o = GaussianOpts::default().with_criterion(crit);
                let c = DecodeConfig::new(params.clone(), Method::Gaussian(o)).with_tau_mode(mode);
                let (out, rep) = step(&cache, &ids, &prob.q, len, c);
                assert!(rep
                    .heads
                    .iter()
                    .all(|r| r.pages_kept == 1 && r.pages_total == 1));
                assert_eq!(rep.bytes.meta, 0);
                assert!(
                    compare(&out, &oracle.out).unwrap().rel <= 1e-6,
                    "len {len} {mode:?}"
                );
            }
        }
    }
}

/// Pages whose keys are all equal (σ = 0) and a sequence of two pages (one closed page).
#[test]
fn zero_variance_pages_and_one_closed_page() {
    for len in [17, 32, 33, 400] {
        let mut prob = Synth::new(3).problem(Workload::Iid, &[len], 2, 1, 16);
        let k = &mut prob.k[0];
        let first: Vec<f32> = k[..16].to_vec();
        for t in 0..len.min(64) {
            k[t * 16..t * 16 + 16].copy_from_slice(&first);
        }
        let (cache, ids) = build(&prob, len, None);
        let params = AttentionParams::new(2, 1.5);
        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
        for crit in [Criterion::Original, Criterion::Robust] {
            let o = GaussianOpts::default().with_criterion(crit);
            let (out, rep) = step(
                &cache,
                &ids,
                &prob.q,
                len,
                DecodeConfig::new(params.clone(), Method::Gaussian(o)),
            );
            assert!(rep.heads.iter().all(|r| r.tau_hat.is_finite()), "len {len}");
            let m = compare(&out, &oracle.out).unwrap();
            assert!(m.rel < 0.05, "len {len} {crit:?}: rel {}", m.rel);
        }
    }
}

/// Metadata bytes: the original criterion reads the mean and std rows of every closed page.
#[test]
fn meta_bytes_count_mean_and_std_rows() {
    let len = 1000;
    let prob = Synth::new(5).problem(Workload::Iid, &[len], 4, 2, D);
    let (cache, ids) = build(&prob, len, None);
    let cfg = DecodeConfig::new(
        AttentionParams::new(4, 1.5),
        Method::Gaussian(GaussianOpts::default()),
    )
    .with_gqa(GqaMode::Shared);
    let (_, rep) = step(&cache, &ids, &prob.q, len, cfg);
    let closed = len.div_ceil(16) - 1;
    assert_eq!(
        rep.bytes.meta as usize,
        2 * closed * 2 * D * 2,
        "2 tasks × closed × (mean, std) × D × f16"
    );
}

/// Every bad knob gives `InvalidArgument` naming it, from `validate` and from a step.
#[test]
fn bad_knobs_are_rejected_by_name() {
    let d = GaussianOpts::default;
    let cases: Vec<(GaussianOpts, &str)> = vec![
        (
            GaussianOpts {
                safety_margin_z: Some(-0.1),
                ..d()
            },
            "safety_margin_z",
        ),
        (
            GaussianOpts {
                safety_margin_z: Some(f64::NAN),
                ..d()
            },
            "safety_margin_z",
        ),
        (
            GaussianOpts {
                safety_margin_z: Some(f64::INFINITY),
                ..d()
            },
            "safety_margin_z",
        ),
        (
            GaussianOpts {
                max_quantile: Some(1.0),
                ..d()
            },
            "max_quantile",
        ),
        (
            GaussianOpts {
                max_quantile: Some(0.0),
                ..d()
            },
            "max_quantile",
        ),
        (
            GaussianOpts {
                max_quantile: Some(f64::NAN),
                ..d()
            },
            "max_quantile",
        ),
        (
            GaussianOpts {
                threshold_excess_margin_fraction: -1.0,
                ..d()
            },
            "threshold_excess_margin_fraction",
        ),
        (
            GaussianOpts {
                threshold_excess_margin_fraction: f64::NAN,
                ..d()
            },
            "threshold_excess_margin_fraction",
        ),
        (
            GaussianOpts {
                tau_clamp_page_max_quantile: 1.5,
                ..d()
            },
            "tau_clamp_page_max_quantile",
        ),
        (
            GaussianOpts {
                tau_clamp_page_max_quantile: f64::NAN,
                ..d()
            },
            "tau_clamp_page_max_quantile",
        ),
        (
            GaussianOpts {
                tau_clamp_sigma_scale: -0.3,
                ..d()
            },
            "tau_clamp_sigma_scale",
        ),
        (
            GaussianOpts {
                tau_tol: f64::NAN,
                ..d()
            },
            "tau_tol",
        ),
        (
            GaussianOpts {
                tau_tol: -1e-6,
                ..d()
            },
            "tau_tol",
        ),
        (
            GaussianOpts {
                tau_max_iter: Some(0),
                ..d()
            },
            "tau_max_iter",
        ),
    ];
    let len = 100;
    let prob = Synth::new(1).problem(Workload::Iid, &[len], 2, 2, 16);
    let (cache, _ids) = build(&prob, len, None);
    for (opts, knob) in cases {
        match opts.validate("test") {
            Err(Error::InvalidArgument { op, arg, .. }) => {
                assert_eq!((op, arg), ("test", knob));
            }
            other => panic!("{knob}: {other:?}"),
        }
        // Rejected when the decoder is planned, before any step runs.
        let cfg = DecodeConfig::new(AttentionParams::new(2, 1.5), Method::Gaussian(opts.clone()));
        match Decoder::new(&cache, 1, len, cfg) {
            Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, knob),
            other => panic!("{knob}: {:?}", other.map(|_| ())),
        }
    }
    assert!(GaussianOpts::default().validate("test").is_ok());
    assert!(robust().validate("test").is_ok());
}

/// Kept page slots of one query head (per-head task), by calling the selector directly.
fn kept_slots(
    cache: &PagedKvCache,
    id: SeqId,
    q: &[f32],
    slope: f32,
    opts: &GaussianOpts,
) -> Vec<usize> {
    use entmaxkv::selection::{gaussian, SelectScratch, Selection, SelectionContext};
    let d = cache.head_dim();
    let seq = cache.seq(id).unwrap();
    let qs: Vec<f32> = q.iter().map(|x| x / (d as f32).sqrt()).collect();
    let slopes = [slope];
    let ctx = SelectionContext {
        cache,
        seq,
        kv_head: 0,
        q_scaled: &qs,
        slopes: &slopes,
        alpha: 1.5,
    };
    let mut scratch = SelectScratch::new(seq.pages.len(), d);
    let mut sel = Selection::with_capacity(seq.pages.len(), 1);
    gaussian::select(&ctx, opts, &mut scratch, &mut sel).unwrap();
    sel.pages
        .iter()
        .map(|p| p.start as usize / cache.page_size())
        .collect()
}

/// Structured keys (sink on token 0, planted query-aligned pages, outlier channels, a run of
/// near-duplicates). With the sink, the dense support is the sink alone (it outscores the
/// planted pages by ~10 score units): the robust criterion keeps its page and little else.
/// Without the sink (token 0 made an ordinary key) the planted pages carry the support: the
/// robust criterion keeps all of them. Either way exact τ on the kept pages equals dense.
/// The original criterion's losses are printed for comparison.
#[test]
fn robust_keeps_sink_and_planted_pages() {
    let len: usize = 8192;
    let pages = len.div_ceil(16);
    let (mut worst_frac, mut orig_lost) = (0.0f64, 0usize);
    for seed in 0..3u64 {
        for sink in [true, false] {
            // One kv head per problem so `kept_slots` can address it as head 0.
            let mut prob = Synth::new(50 + seed).problem(Workload::Structured, &[len], 1, 1, D);
            if !sink {
                let k1: Vec<f32> = prob.k[0][D..2 * D].to_vec();
                prob.k[0][..D].copy_from_slice(&k1);
            }
            let (cache, ids) = build(&prob, len, None);
            let params = AttentionParams::new(1, 1.5);
            let scores = oracle_scores(&cache, ids[0], 0, &prob.q[..D], &params).unwrap();
            let e = entmaxkv::tau::entmax(&scores, 1.5).unwrap();
            let mut support: Vec<usize> =
                (0..len).filter(|&t| e.p[t] > 0.0).map(|t| t / 16).collect();
            support.dedup();
            let mut page_max: Vec<(f64, usize)> = (0..pages)
                .map(|p| {
                    (
                        scores[p * 16..(p + 1) * 16]
                            .iter()
                            .cloned()
                            .fold(f64::MIN, f64::max),
                        p,
                    )
                })
                .collect();
            page_max.sort_by(|a, b| b.0.total_cmp(&a.0));
            // With the sink: page 0 is the top page and the whole support. Without: the
            // page of the top score (always in the support); the planted pages are in
            // `support` when they carry weight, and all of `support` must be kept below.
            let must: Vec<usize> = if sink {
                assert_eq!(page_max[0].1, 0, "the sink page has the top score");
                vec![0]
            } else {
                vec![page_max[0].1]
            };
            for p in &must {
                assert!(
                    support.contains(p),
                    "seed {seed} sink {sink}: page {p} carries weight"
                );
            }
            let kept = kept_slots(&cache, ids[0], &prob.q[..D], 0.0, &robust());
            for p in support.iter().chain(&must) {
                assert!(
                    kept.contains(p),
                    "seed {seed} sink {sink}: robust lost page {p}"
                );
            }
            let frac = kept.len() as f64 / pages as f64;
            worst_frac = worst_frac.max(frac);
            let orig = kept_slots(&cache, ids[0], &prob.q[..D], 0.0, &GaussianOpts::default());
            let lost = support.iter().filter(|p| !orig.contains(p)).count();
            orig_lost += lost;
            eprintln!(
                "seed {seed} sink {sink}: support pages {support:?}; robust keeps {} of {pages}, original keeps {} and loses {lost} (sink page kept: {})",
                kept.len(), orig.len(), orig.contains(&0)
            );
            let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
            let cfg = DecodeConfig::new(params.clone(), Method::Gaussian(robust()));
            let (out, _) = step(&cache, &ids, &prob.q, len, cfg);
            assert!(compare(&out, &oracle.out).unwrap().rel <= 1e-5);
        }
    }
    eprintln!(
        "robust worst kept fraction {worst_frac:.3}; original lost {orig_lost} support pages"
    );
    assert!(worst_frac < 0.15, "robust kept {worst_frac} of the pages");
}

/// Without a key sketch the robust test falls back to the box bound and τ̂: a looser bound
/// and a lower threshold, so it keeps a superset-sized page set and stays accurate.
#[test]
fn robust_without_sketch_uses_the_box_bound() {
    let len = 4096;
    let prob = Synth::new(21).problem(Workload::Structured, &[len], 4, 4, D);
    let pages = len.div_ceil(16);
    let params = AttentionParams::new(4, 1.5);
    let mut kept = Vec::new();
    for bits in [4, 0] {
        let cfg = CacheConfig::new(4, D, pages).with_sketch_bits(bits);
        let (cache, ids) = build(&prob, len, Some(cfg));
        let oracle = oracle_decode(&cache, &ids, &prob.q, &params).unwrap();
        let c = DecodeConfig::new(params.clone(), Method::Gaussian(robust()));
        let (out, rep) = step(&cache, &ids, &prob.q, len, c);
        assert!(
            compare(&out, &oracle.out).unwrap().rel <= 1e-5,
            "bits {bits}"
        );
        kept.push(rep.heads.iter().map(|r| r.pages_kept).collect::<Vec<_>>());
    }
    for (with, without) in kept[0].iter().zip(&kept[1]) {
        assert!(with <= without, "{with} > {without}");
    }
}

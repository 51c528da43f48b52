//! A planned Gaussian decode step (original criterion: page-major moments, selection from
//! them, the union walk or the group kernel) allocates nothing: a counting global
//! allocator sees no allocation during steps after the plan, in every τ mode, GQA mode,
//! with and without ALiBi. On a one-thread pool: with more threads rayon itself grows a
//! worker's job queue whenever work stealing first queues more jobs there than before
//! (seen with a backtrace at the allocation), which no warm-up makes deterministic.

use entmaxkv::attention::cpu::TauMode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::CacheConfig;
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::selection::gaussian::GaussianOpts;
use entmaxkv::selection::GqaMode;
use entmaxkv::synth::{Synth, Workload};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn planned_gaussian_steps_do_not_allocate() {
    let mut syn = Synth::new(7);
    let lens = [6000, 77, 16];
    for (h, hkv) in [(4, 4), (8, 2)] {
        let prob = syn.problem(Workload::Iid, &lens, h, hkv, 64);
        let (cache, ids) = prob.build_cache(CacheConfig::new(hkv, 64, 500), 0).unwrap();
        {
            let threads = 1;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for alibi in [false, true] {
                let mut params = AttentionParams::new(h, 1.5);
                if alibi {
                    params = params.with_alibi((0..h).map(|i| 0.001 * (i + 1) as f32).collect());
                }
                for mode in [TauMode::Exact, TauMode::Fixed, TauMode::Corrected(1)] {
                    for gqa in [GqaMode::PerHead, GqaMode::Shared] {
                        let cfg = DecodeConfig::new(
                            params.clone(),
                            Method::Gaussian(GaussianOpts::default()),
                        )
                        .with_gqa(gqa)
                        .with_tau_mode(mode);
                        let mut dec = Decoder::new(&cache, 3, 6000, cfg).unwrap();
                        let mut out = vec![0.0f32; prob.q.len()];
                        let n = pool.install(|| {
                            // Warm the pool's thread: rayon allocates its job queue on the
                            // worker's first jobs.
                            dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                            COUNT.store(0, Ordering::SeqCst);
                            ON.store(true, Ordering::SeqCst);
                            for _ in 0..3 {
                                dec.step(&cache, &ids, &prob.q, &mut out).unwrap();
                            }
                            ON.store(false, Ordering::SeqCst);
                            COUNT.load(Ordering::SeqCst)
                        });
                        assert_eq!(
                            n, 0,
                            "h {h} hkv {hkv} threads {threads} alibi {alibi} {mode:?} {gqa:?}"
                        );
                    }
                }
            }
        }
    }
}

//! The CUDA backend of `EntmaxKvAttention` against its CPU backend on the same prefill and
//! decode steps (a model-shaped cache: 9 query / 3 kv heads, D = 64, f16 K/V): every method
//! the model evaluation runs, steps across a page boundary, and a layer stepped without a
//! prefill. Skips loudly without a GPU.

use entmaxkv::attention::AttentionParams;
use entmaxkv::decode::{DecodeConfig, Method};
use entmaxkv::gpu::Gpu;
use entmaxkv::selection::gaussian::{Criterion, GaussianOpts};
use entmaxkv::selection::topk::Budget;
use entmaxkv::DType;
use entmaxkv_models::{
    AttentionShape, Backend, DecodeAttention, EntmaxKvAttention, EntmaxKvOptions,
};
use std::io::Write;

fn gpu_or_skip(test: &str) -> bool {
    match Gpu::get() {
        Ok(_) => true,
        Err(e) => {
            assert!(
                matches!(e, entmaxkv::Error::NoCuda { .. }),
                "expected NoCuda, got {e:?}"
            );
            let _ = writeln!(std::io::stderr(), "SKIPPED: no CUDA device: {e} ({test})");
            false
        }
    }
}

fn shape() -> AttentionShape {
    AttentionShape {
        n_layers: 3,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        scale: 0.125,
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// What one backend did over the steps: pages kept, (step, head) pairs, those certified.
#[derive(Debug, PartialEq)]
struct Kept {
    pages: u64,
    heads: u64,
    certified: u64,
}

/// Worst relative output error (‖gpu − cpu‖ / ‖cpu‖ per step and layer) and what each
/// backend kept, over a prefill of `prompt` tokens (layer 2: none) and `steps` steps.
fn compare(method: Method, alpha: f64, prompt: usize, steps: usize) -> (f64, Kept, Kept) {
    let s = shape();
    let (h, hk, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
    let cfg = DecodeConfig::new(AttentionParams::new(h, alpha), method);
    let opts = EntmaxKvOptions::new(DType::F16, prompt + steps);
    let mut cpu = EntmaxKvAttention::new(s, cfg.clone(), opts.clone()).unwrap();
    let mut gpu = EntmaxKvAttention::new(s, cfg, opts.with_backend(Backend::Cuda)).unwrap();
    let mut worst = 0f64;
    for layer in 0..s.n_layers {
        if layer < 2 {
            // Keys with a common direction and a sink on token 0, like real attention.
            let mut k = noise(10 + layer as u64, hk * prompt * d);
            for kh in 0..hk {
                for c in 0..d {
                    k[kh * prompt * d + c] += 3.0;
                }
            }
            let v = noise(20 + layer as u64, hk * prompt * d);
            cpu.prefill(layer, &k, &v, prompt).unwrap();
            gpu.prefill(layer, &k, &v, prompt).unwrap();
        }
        for st in 0..steps {
            let seed = 1000 * layer as u64 + st as u64;
            let q: Vec<f32> = noise(seed, h * d).iter().map(|x| 4.0 * x + 1.0).collect();
            let kn = noise(seed + 7, hk * d);
            let vn = noise(seed + 9, hk * d);
            let (mut o1, mut o2) = (vec![0f32; h * d], vec![0f32; h * d]);
            cpu.step(layer, &q, &kn, &vn, &mut o1).unwrap();
            gpu.step(layer, &q, &kn, &vn, &mut o2).unwrap();
            let num: f64 = o1
                .iter()
                .zip(&o2)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let den: f64 = o1.iter().map(|a| (*a as f64).powi(2)).sum();
            worst = worst.max((num / den.max(1e-30)).sqrt());
        }
        assert_eq!(cpu.len(layer), gpu.len(layer));
    }
    let (tc, tg) = (cpu.totals(), gpu.totals());
    assert_eq!(tc.steps, tg.steps);
    assert_eq!(tc.pages_total, tg.pages_total);
    let kept = |t: entmaxkv_models::StepTotals| Kept {
        pages: t.pages_kept,
        heads: t.heads,
        certified: t.heads_certified,
    };
    (worst, kept(tc), kept(tg))
}

fn check(name: &str, method: Method, alpha: f64) {
    if !gpu_or_skip(name) {
        return;
    }
    // 318 + 6 steps: the open page fills at 320 and a new one opens.
    let certified = method == Method::Certified;
    let (rel, kc, kg) = compare(method, alpha, 318, 6);
    eprintln!("{name}: worst rel {rel:.3e}, kept cpu {kc:?} gpu {kg:?}");
    assert!(rel <= 2e-3, "{name}: GPU vs CPU backend rel {rel}");
    if certified {
        // The candidates' pages come from each backend's own rounding of the bounds (the
        // first device run: 298 vs 299); what must agree is the output and the proof.
        assert_eq!(
            kc.certified, kc.heads,
            "{name}: CPU heads not all certified"
        );
        assert_eq!(
            kg.certified, kg.heads,
            "{name}: GPU heads not all certified"
        );
    } else {
        assert_eq!(kc, kg, "{name}: pages kept differ");
    }
}

#[test]
fn cuda_backend_matches_cpu_dense_softmax() {
    check("dense softmax", Method::Dense, 1.0);
}

#[test]
fn cuda_backend_matches_cpu_topk_softmax() {
    check(
        "top-k 1/8 softmax",
        Method::TopK(Budget::Fraction(0.125)),
        1.0,
    );
}

#[test]
fn cuda_backend_matches_cpu_dense_entmax() {
    check("dense entmax", Method::Dense, 1.5);
}

#[test]
fn cuda_backend_matches_cpu_robust_gaussian() {
    let m = Method::Gaussian(GaussianOpts {
        criterion: Criterion::Robust,
        ..GaussianOpts::default()
    });
    check("robust Gaussian", m, 1.5);
}

#[test]
fn cuda_backend_matches_cpu_certified() {
    check("certified", Method::Certified, 1.5);
}

#[test]
fn cuda_backend_without_gpu_is_a_typed_error() {
    if Gpu::get().is_ok() {
        eprintln!("a GPU is present: nothing to check");
        return;
    }
    let cfg = DecodeConfig::new(AttentionParams::new(9, 1.0), Method::Dense);
    let opts = EntmaxKvOptions::new(DType::F16, 64).with_backend(Backend::Cuda);
    assert!(EntmaxKvAttention::new(shape(), cfg, opts).is_err());
}

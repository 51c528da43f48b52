//! The CUDA backend: the decode pipeline of the CPU crate on an NVIDIA GPU.
//!
//! * [`DeviceKvCache`] — the paged KV cache in device memory (uploaded from a host
//!   [`crate::cache::PagedKvCache`], grown by a device append kernel that also maintains the
//!   page statistics and the key sketch);
//! * [`GpuDecoder`] — a planned decode step (dense or top-k; softmax or α-entmax), a fixed
//!   sequence of kernel launches with caller-owned workspaces, capturable in a CUDA graph;
//! * [`probe`] — device bandwidth probes for benchmarks.
//!
//! Engines whose queries and K/V are device tensors keep them on the device:
//! [`DeviceKvCache::append_device`], [`GpuDecoder::query_ptr`] / [`GpuDecoder::output_ptr`]
//! and [`GpuDecoder::step_async`] (ordered against the cache's appends by events, no host
//! wait per step); [`Stream::raw`] gives the streams to order the engine's own work.
//!
//! Kernels are CUDA C sources in `gpu/kernels/`, compiled by NVRTC at first use for the
//! device's compute capability, in modules per kernel family, each kernel in one (a plan
//! loads only the families it can launch), cached per process and their PTX on disk. The
//! crate builds and runs without CUDA: [`Gpu::get`] then returns [`crate::Error::NoCuda`].
//!
//! For f16 K/V with 2–4 query heads per kv head (GQA groups), the attention's K pass and the
//! softmax V pass run on tensor cores (`mma.m16n8k16`, q and the weights split in f16 as
//! hi + lo, f32 accumulation); everything else, and the certificate's bounds, use f32 FMA.
//!
//! The GPU path matches the CPU pipeline: the same pages kept (ties aside), τ to ~1e-7, and
//! outputs to f32 accumulation-order rounding. Every reduction has a fixed order, so a step
//! is bitwise deterministic.

pub mod cache;
mod ctx;
pub mod decode;
mod params;
pub mod probe;
mod ptx_cache;

pub use cache::{DeviceCacheOptions, DeviceKvCache};
pub use ctx::{DevBuf, DeviceInfo, Event, Gpu, Graph, Stream};
pub use decode::{GpuDecoder, Stage};

/// Compiles every kernel module a configuration set needs to PTX for compute capability
/// `cc`, without a device (needs NVRTC only), each with and without the Gaussian quadrature.
/// Returns the PTX sizes (the probe first; then, for the first configuration, each family's
/// module). Used by tests to catch
/// kernel compile errors on machines without a GPU.
pub fn compile_check(
    configs: &[(crate::DType, crate::DType, usize, usize)],
    cc: (i32, i32),
) -> crate::Result<Vec<usize>> {
    let key = |family,
               (kv, stats, head_dim, tg): (crate::DType, crate::DType, usize, usize),
               gauss_generic| {
        ctx::ModuleKey::Decode {
            family,
            kv,
            stats,
            head_dim,
            tg,
            unroll: ctx::unroll_rows(tg),
            gauss_generic,
        }
    };
    let mut keys = vec![ctx::ModuleKey::Probe];
    for &c in configs {
        // Both variants: closed-form Gaussian τ̂ only, and with the quadrature compiled in.
        for gauss_generic in [false, true] {
            keys.push(key(ctx::Family::All, c, gauss_generic));
        }
    }
    // Each family's own module (the ones plans load), for the first configuration: a
    // family whose files miss a definition from another file fails here.
    if let Some(&c) = configs.first() {
        for family in ctx::Family::SPLIT {
            keys.push(key(family, c, false));
        }
    }
    // In parallel (each compile takes NVRTC seconds; NVRTC compiles programs concurrently).
    use rayon::prelude::*;
    keys.par_iter()
        .map(|k| ctx::compile(k, cc).map(|ptx| ptx.len()))
        .collect()
}

//! Device memory-bandwidth probes (read-only reduction, copy) and an L2 flush, so GPU
//! timings can be stated against the bandwidth measured in the same run.

use super::ctx::{DevBuf, Event, Gpu, ModuleKey, Stream};
use crate::error::Result;
use serde::Serialize;
use std::sync::Arc;

/// Measured device bandwidth.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GpuBandwidth {
    /// Read-only reduction, GB/s (bytes read).
    pub read_gbs: f64,
    /// Copy, GB/s counting bytes read + written.
    pub copy_gbs: f64,
    /// Buffer size used.
    pub bytes: usize,
}

#[repr(C)]
struct ReadArgs {
    src: u64,
    n16: u64,
    partial: u64,
}

/// Measures read and copy bandwidth over `bytes`-sized buffers (median of `reps`).
pub fn measure(gpu: &Arc<Gpu>, stream: &Stream, bytes: usize, reps: usize) -> Result<GpuBandwidth> {
    let m = gpu.module(ModuleKey::Probe)?;
    let n16 = (bytes / 16) as u64;
    let src: DevBuf<u8> = gpu.alloc(n16 as usize * 16)?;
    let dst: DevBuf<u8> = gpu.alloc(n16 as usize * 16)?;
    // Launch shape: 8 CTAs of 512 threads per SM unless `ENTMAXKV_PROBE_CTAS` /
    // `ENTMAXKV_PROBE_THREADS` say otherwise (development: on an H200 SDPA moved K/V at
    // 4555 GB/s where this probe read 4328, session 17).
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&v| v > 0)
            .unwrap_or(default)
    };
    let blocks = (gpu.info().sm_count * env("ENTMAXKV_PROBE_CTAS", 8).min(64)) as u32;
    let threads = (env("ENTMAXKV_PROBE_THREADS", 512).min(1024) / 32).max(1) as u32 * 32;
    let partial: DevBuf<u32> = gpu.alloc(blocks as usize)?;
    // Kernels with several arguments take them as consecutive pointers.
    let fill = |buf: &DevBuf<u8>, seed: u32| -> Result<()> {
        let (p, n) = (buf.ptr(), n16);
        let mut args = [
            &p as *const u64 as *mut std::ffi::c_void,
            &n as *const u64 as *mut std::ffi::c_void,
            &seed as *const u32 as *mut std::ffi::c_void,
        ];
        unsafe {
            cudarc::driver::result::launch_kernel(
                m.func("probe_fill"),
                (blocks, 1, 1),
                (256, 1, 1),
                0,
                stream.raw,
                &mut args,
            )
        }
        .map_err(|e| super::ctx::cuda_err("probe_fill", e))
    };
    fill(&src, 1)?;
    fill(&dst, 2)?;
    let (e0, e1) = (Event::new(gpu)?, Event::new(gpu)?);
    let mut read = Vec::new();
    let mut copy = Vec::new();
    for _ in 0..reps.max(1) {
        let a = ReadArgs {
            src: src.ptr(),
            n16,
            partial: partial.ptr(),
        };
        let mut args = [
            &a.src as *const u64 as *mut std::ffi::c_void,
            &a.n16 as *const u64 as *mut std::ffi::c_void,
            &a.partial as *const u64 as *mut std::ffi::c_void,
        ];
        e0.record(stream)?;
        unsafe {
            cudarc::driver::result::launch_kernel(
                m.func("probe_read"),
                (blocks, 1, 1),
                (threads, 1, 1),
                0,
                stream.raw,
                &mut args,
            )
        }
        .map_err(|e| super::ctx::cuda_err("probe_read", e))?;
        e1.record(stream)?;
        read.push(e0.elapsed_ms(&e1)? as f64);
        let (s, dd) = (src.ptr(), dst.ptr());
        let mut args = [
            &s as *const u64 as *mut std::ffi::c_void,
            &dd as *const u64 as *mut std::ffi::c_void,
            &n16 as *const u64 as *mut std::ffi::c_void,
        ];
        e0.record(stream)?;
        unsafe {
            cudarc::driver::result::launch_kernel(
                m.func("probe_copy"),
                (blocks, 1, 1),
                (threads, 1, 1),
                0,
                stream.raw,
                &mut args,
            )
        }
        .map_err(|e| super::ctx::cuda_err("probe_copy", e))?;
        e1.record(stream)?;
        copy.push(e0.elapsed_ms(&e1)? as f64);
    }
    stream.sync()?;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let b = (n16 * 16) as f64;
    Ok(GpuBandwidth {
        read_gbs: b / (med(&mut read) * 1e-3) / 1e9,
        copy_gbs: 2.0 * b / (med(&mut copy) * 1e-3) / 1e9,
        bytes: b as usize,
    })
}

/// Evicts the L2 cache by writing a buffer larger than it (queued on `stream`).
pub struct L2Flush {
    buf: DevBuf<u8>,
}

impl L2Flush {
    pub fn new(gpu: &Arc<Gpu>) -> Result<L2Flush> {
        let bytes = (gpu.info().l2_bytes * 4).max(64 << 20);
        Ok(L2Flush {
            buf: gpu.alloc(bytes)?,
        })
    }
    pub fn run(&self, stream: &Stream) -> Result<()> {
        self.buf.memset_async(stream, 0x5a)
    }
}

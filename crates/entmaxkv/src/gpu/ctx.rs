//! Device, context, streams, events, device buffers and the NVRTC module cache (in memory,
//! and the PTX on disk: `ptx_cache.rs`): thin, typed wrappers over the CUDA driver API
//! (through cudarc's `result`/`sys` layers).
//!
//! Nothing here panics when CUDA is missing: the driver library, a device and NVRTC are
//! probed first and their absence is [`Error::NoCuda`].

use crate::dtype::DType;
use crate::error::{Error, Result};
use cudarc::driver::{result, sys, CudaContext, DriverError};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) fn cuda_err(op: &'static str, e: DriverError) -> Error {
    if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        return Error::DeviceOutOfMemory { op, bytes: 0 };
    }
    Error::Cuda {
        op,
        msg: format!("{e:?}"),
    }
}

/// What the device reports about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability (major, minor).
    pub cc: (i32, i32),
    pub sm_count: usize,
    pub total_mem: usize,
    pub l2_bytes: usize,
    pub driver_version: i32,
}

/// A compiled module, or `None` until the first thread that needs it has compiled it (a
/// failed compile leaves `None`: the next caller tries again and gets the error again).
type ModuleSlot = Arc<Mutex<Option<Arc<Module>>>>;

/// The process's CUDA device 0: context, properties and compiled modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
    /// One slot per configuration: the map's lock is held only to find the slot, so
    /// threads compile different configurations in parallel (NVRTC and the driver's PTX JIT
    /// take seconds per module) and wait only for one another on the same configuration.
    modules: Mutex<HashMap<ModuleKey, ModuleSlot>>,
}

static GPU: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

impl Gpu {
    /// The device, initialised on first use. [`Error::NoCuda`] when there is no driver, no
    /// device or no NVRTC (the reason says which); never panics.
    pub fn get() -> Result<Arc<Gpu>> {
        GPU.get_or_init(|| {
            std::panic::catch_unwind(init)
                .unwrap_or_else(|_| Err("CUDA initialisation panicked".into()))
        })
        .clone()
        .map_err(|reason| Error::NoCuda {
            op: "Gpu::get",
            reason,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Makes the context current on the calling thread.
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| cuda_err("bind", e))
    }

    /// Free and total device memory in bytes (the driver's view, all processes).
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        cudarc::driver::result::mem_get_info().map_err(|e| cuda_err("mem_get_info", e))
    }

    /// Allocates `len` elements (uninitialised).
    pub(crate) fn alloc<T: Copy>(self: &Arc<Self>, len: usize) -> Result<DevBuf<T>> {
        self.bind()?;
        let bytes = (len.max(1)) * std::mem::size_of::<T>();
        let ptr =
            unsafe { result::malloc_sync(bytes) }.map_err(|e| match cuda_err("alloc", e) {
                Error::DeviceOutOfMemory { op, .. } => Error::DeviceOutOfMemory { op, bytes },
                other => other,
            })?;
        Ok(DevBuf {
            ptr,
            len,
            gpu: self.clone(),
            _t: std::marker::PhantomData,
        })
    }

    /// Allocates and zero-fills.
    pub(crate) fn zeros<T: Copy>(self: &Arc<Self>, len: usize) -> Result<DevBuf<T>> {
        let b = self.alloc::<T>(len)?;
        unsafe { result::memset_d8_sync(b.ptr, 0, b.bytes().max(1)) }
            .map_err(|e| cuda_err("memset", e))?;
        Ok(b)
    }

    /// Allocates and copies `src` in.
    pub(crate) fn upload<T: Copy>(self: &Arc<Self>, src: &[T]) -> Result<DevBuf<T>> {
        let b = self.alloc::<T>(src.len())?;
        if !src.is_empty() {
            unsafe { result::memcpy_htod_sync(b.ptr, src) }.map_err(|e| cuda_err("upload", e))?;
        }
        Ok(b)
    }

    /// The module for a kernel configuration, compiled by NVRTC on first use.
    pub(crate) fn module(&self, key: ModuleKey) -> Result<Arc<Module>> {
        let slot = {
            let mut map = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key).or_default().clone()
        };
        let mut cell = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cell.as_ref() {
            return Ok(m.clone());
        }
        self.bind()?;
        let t0 = std::time::Instant::now();
        let (ptx, cached) = compile_cached(&key, self.info.cc, false)?;
        let t1 = std::time::Instant::now();
        let m = match Module::load(&ptx, &key.kernel_names()) {
            Ok(m) => Arc::new(m),
            // A stored entry the driver refuses (damaged on disk): compile afresh and store
            // that in its place.
            Err(_) if cached => {
                let (ptx, _) = compile_cached(&key, self.info.cc, true)?;
                Arc::new(Module::load(&ptx, &key.kernel_names())?)
            }
            Err(e) => return Err(e),
        };
        // `ENTMAXKV_LOG_COMPILE=1`: where a cold process spends its first-use time. Written
        // to the process stderr directly (`eprintln!` is captured by a test harness).
        if std::env::var("ENTMAXKV_LOG_COMPILE").is_ok_and(|v| v != "0") {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "entmaxkv: module {key:?}: NVRTC {:.1} s{}, load (driver JIT) {:.1} s",
                (t1 - t0).as_secs_f64(),
                if cached {
                    " (PTX from the disk cache)"
                } else {
                    ""
                },
                t1.elapsed().as_secs_f64()
            );
        }
        *cell = Some(m.clone());
        Ok(m)
    }

    /// A new non-blocking stream.
    pub fn stream(self: &Arc<Self>) -> Result<Arc<Stream>> {
        self.bind()?;
        let raw = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| cuda_err("stream", e))?;
        Ok(Arc::new(Stream {
            raw,
            gpu: self.clone(),
        }))
    }
}

fn init() -> std::result::Result<Arc<Gpu>, String> {
    if !unsafe { sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not installed".into());
    }
    result::init().map_err(|e| format!("cuInit failed: {e:?}"))?;
    let n = result::device::get_count().map_err(|e| format!("cuDeviceGetCount: {e:?}"))?;
    if n < 1 {
        return Err("the driver reports no CUDA device".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so) not found: add the CUDA toolkit's lib64 to LD_LIBRARY_PATH".into(),
        );
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("context: {e:?}"))?;
    // Every launch and copy is on our own streams and ordered by them.
    unsafe { ctx.disable_event_tracking() };
    let attr = |a| ctx.attribute(a).map_err(|e| format!("attribute: {e:?}"));
    use sys::CUdevice_attribute_enum as A;
    let mut drv = 0i32;
    unsafe { sys::cuDriverGetVersion(&mut drv) };
    let info = DeviceInfo {
        name: ctx.name().map_err(|e| format!("name: {e:?}"))?,
        cc: ctx
            .compute_capability()
            .map_err(|e| format!("compute capability: {e:?}"))?,
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize,
        total_mem: ctx.total_mem().map_err(|e| format!("total mem: {e:?}"))?,
        l2_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as usize,
        driver_version: drv,
    };
    if info.cc.0 < 8 {
        return Err(format!(
            "device {} has compute capability {}.{}; entmaxkv needs 8.0 or newer",
            info.name, info.cc.0, info.cc.1
        ));
    }
    Ok(Arc::new(Gpu {
        ctx,
        info,
        modules: Mutex::new(HashMap::new()),
    }))
}

/// A device allocation of `len` elements of `T`, freed on drop.
pub struct DevBuf<T: Copy> {
    ptr: sys::CUdeviceptr,
    len: usize,
    gpu: Arc<Gpu>,
    _t: std::marker::PhantomData<T>,
}

// Device memory is addressed by value; access goes through stream-ordered driver calls.
unsafe impl<T: Copy> Send for DevBuf<T> {}
unsafe impl<T: Copy> Sync for DevBuf<T> {}

impl<T: Copy> DevBuf<T> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    /// The raw device address (for kernel parameter structs).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Address of element `i`.
    pub fn ptr_at(&self, i: usize) -> u64 {
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }

    /// Copies `src` to elements `at..at + src.len()` (synchronous with respect to `stream`).
    pub fn write_at(&self, stream: &Stream, at: usize, src: &[T]) -> Result<()> {
        if at + src.len() > self.len {
            return Err(Error::invalid(
                "DevBuf::write_at",
                "src",
                src.len(),
                format!(
                    "{} elements at {at} exceed the buffer of {}",
                    src.len(),
                    self.len
                ),
            ));
        }
        if src.is_empty() {
            return Ok(());
        }
        self.gpu.bind()?;
        unsafe {
            result::memcpy_htod_async(self.ptr_at(at), src, stream.raw)
                .map_err(|e| cuda_err("write", e))?;
        }
        stream.sync()
    }

    /// Sets the 32-bit element `at` to `bits` on `stream` (asynchronous: a driver memset,
    /// no host memory to wait for; capturable). For 4-byte element types.
    pub(crate) fn set_word_async(&self, stream: &Stream, at: usize, bits: u32) -> Result<()> {
        if std::mem::size_of::<T>() != 4 || at >= self.len {
            return Err(Error::invalid(
                "DevBuf::set_word_async",
                "at",
                at,
                format!(
                    "a 4-byte element of the buffer of {} (elements of {} bytes)",
                    self.len,
                    std::mem::size_of::<T>()
                ),
            ));
        }
        self.gpu.bind()?;
        unsafe { sys::cuMemsetD32Async(self.ptr_at(at), bits, 1, stream.raw).result() }
            .map_err(|e| cuda_err("memset", e))
    }

    /// Copies elements `at..at + dst.len()` out (synchronous).
    pub fn read_at(&self, stream: &Stream, at: usize, dst: &mut [T]) -> Result<()> {
        if at + dst.len() > self.len {
            return Err(Error::invalid(
                "DevBuf::read_at",
                "dst",
                dst.len(),
                format!(
                    "{} elements at {at} exceed the buffer of {}",
                    dst.len(),
                    self.len
                ),
            ));
        }
        if dst.is_empty() {
            return Ok(());
        }
        self.gpu.bind()?;
        stream.sync()?;
        unsafe {
            result::memcpy_dtoh_async(dst, self.ptr_at(at), stream.raw)
                .map_err(|e| cuda_err("read", e))?;
        }
        stream.sync()
    }

    /// The whole buffer on the host.
    pub fn to_vec(&self, stream: &Stream) -> Result<Vec<T>>
    where
        T: Default,
    {
        let mut v = vec![T::default(); self.len];
        self.read_at(stream, 0, &mut v)?;
        Ok(v)
    }

    /// Sets every byte to `byte` (asynchronous on `stream`; capturable).
    pub fn memset_async(&self, stream: &Stream, byte: u8) -> Result<()> {
        self.gpu.bind()?;
        unsafe { result::memset_d8_async(self.ptr, byte, self.bytes().max(1), stream.raw) }
            .map_err(|e| cuda_err("memset", e))
    }
}

impl<T: Copy> Drop for DevBuf<T> {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// A CUDA stream.
pub struct Stream {
    pub(crate) raw: sys::CUstream,
    gpu: Arc<Gpu>,
}

unsafe impl Send for Stream {}
unsafe impl Sync for Stream {}

impl Stream {
    /// The driver's handle (`cudarc::driver::sys::CUstream`, cudarc 0.19), for an engine to
    /// order its own work against this stream: record an event on one and make the other
    /// wait for it (`cuEventRecord`, `cuStreamWaitEvent`), or queue its copies here.
    /// The stream stays owned by this value.
    pub fn raw(&self) -> sys::CUstream {
        self.raw
    }

    /// Waits for everything queued on the stream; reports asynchronous kernel faults.
    pub fn sync(&self) -> Result<()> {
        self.gpu.bind()?;
        unsafe { result::stream::synchronize(self.raw) }.map_err(|e| cuda_err("sync", e))
    }
    /// Makes work queued on this stream after the call wait for `event` (recorded on any
    /// stream) without blocking the host: orders two streams on the device.
    pub fn wait(&self, event: &Event) -> Result<()> {
        self.gpu.bind()?;
        unsafe {
            result::stream::wait_event(
                self.raw,
                event.raw,
                sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
            )
        }
        .map_err(|e| cuda_err("stream wait", e))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            let _ = unsafe { result::stream::synchronize(self.raw) };
            let _ = unsafe { result::stream::destroy(self.raw) };
        }
    }
}

/// A CUDA event, for timing.
pub struct Event {
    raw: sys::CUevent,
    gpu: Arc<Gpu>,
}

unsafe impl Send for Event {}

impl Event {
    pub fn new(gpu: &Arc<Gpu>) -> Result<Event> {
        gpu.bind()?;
        let raw = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| cuda_err("event", e))?;
        Ok(Event {
            raw,
            gpu: gpu.clone(),
        })
    }
    pub fn record(&self, stream: &Stream) -> Result<()> {
        self.gpu.bind()?;
        unsafe { result::event::record(self.raw, stream.raw) }.map_err(|e| cuda_err("record", e))
    }
    /// Milliseconds from `self` to `end` (both recorded and complete).
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32> {
        self.gpu.bind()?;
        unsafe {
            result::event::synchronize(end.raw).map_err(|e| cuda_err("event sync", e))?;
            result::event::elapsed(self.raw, end.raw).map_err(|e| cuda_err("elapsed", e))
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            let _ = unsafe { result::event::destroy(self.raw) };
        }
    }
}

/// A captured, instantiated CUDA graph, replayed on the stream it was captured on.
pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<Stream>,
}

unsafe impl Send for Graph {}

impl Graph {
    /// Captures everything `enqueue` puts on `stream` (which must do no synchronous work).
    pub(crate) fn capture(
        stream: &Arc<Stream>,
        enqueue: impl FnOnce() -> Result<()>,
    ) -> Result<Graph> {
        stream.gpu.bind()?;
        stream.sync()?;
        unsafe {
            result::stream::begin_capture(
                stream.raw,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(|e| cuda_err("begin capture", e))?;
        let res = enqueue();
        let graph = unsafe { result::stream::end_capture(stream.raw) }
            .map_err(|e| cuda_err("end capture", e));
        res?;
        let graph = graph?;
        if graph.is_null() {
            return Err(Error::Cuda {
                op: "capture",
                msg: "capture produced no graph".into(),
            });
        }
        let exec =
            match unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) } {
                Ok(x) => x,
                Err(e) => {
                    let _ = unsafe { result::graph::destroy(graph) };
                    return Err(cuda_err("instantiate", e));
                }
            };
        unsafe { result::graph::upload(exec, stream.raw) }.map_err(|e| cuda_err("upload", e))?;
        Ok(Graph {
            graph,
            exec,
            stream: stream.clone(),
        })
    }

    /// Replays the graph on its stream (asynchronous).
    pub fn launch(&self) -> Result<()> {
        self.stream.gpu.bind()?;
        unsafe { result::graph::launch(self.exec, self.stream.raw) }
            .map_err(|e| cuda_err("graph launch", e))
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        if self.stream.gpu.bind().is_ok() {
            unsafe {
                let _ = result::stream::synchronize(self.stream.raw);
                let _ = result::graph::exec_destroy(self.exec);
                let _ = result::graph::destroy(self.graph);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Modules

const COMMON_SRC: &str = include_str!("kernels/common.cuh");
const CACHE_SRC: &str = include_str!("kernels/cache.cu");
const TOPK_SRC: &str = include_str!("kernels/topk.cu");
const GAUSS_BETA_SRC: &str = include_str!("kernels/gauss_beta.cuh");
const GAUSS_SRC: &str = include_str!("kernels/gauss.cu");
const ATTN_SRC: &str = include_str!("kernels/attn.cu");
const CERT_SRC: &str = include_str!("kernels/cert.cu");
const GAUSS_FUSED_SRC: &str = include_str!("kernels/gauss_fused.cu");
const ROBUST_BOUND_SRC: &str = include_str!("kernels/robust_bound.cuh");
const ROBUST_SRC: &str = include_str!("kernels/robust.cu");
const PROBE_SRC: &str = include_str!("kernels/probe.cu");

/// Which decode kernels a module holds. A plan loads the families it can launch, so a
/// process compiles (NVRTC, then the driver's JIT) only those: with NVRTC to an sm_90
/// cubin on the 2-core development machine, the whole decode source took 34 s, attention
/// 8 s, top-k 2 s, the Gaussian statistics 7 s (session 16). A family's source is the
/// common header plus the files its kernels need; where those files define kernels of
/// another family (the fused step, the certified and robust strategies all build on
/// `attn.cu`'s device code), they are compiled without them (their `*_KERNELS` guard is 0)
/// and the plan loads that family's own module for them: every kernel is compiled in one
/// family only, and one attention module per shape serves every plan of that shape (session
/// 17: a cold GPU test run was bound by compiling the attention kernels into four families).
/// `ENTMAXKV_ONE_MODULE=1` loads everything as one module ([`Family::All`]), as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// `cache.cu`: the append kernels.
    Cache,
    /// `topk.cu`: page scores and the radix select.
    Topk,
    /// `attn.cu`: the attention kernels.
    Attn,
    /// `gauss.cu`: the Gaussian statistics, τ̂ and packing.
    Gauss,
    /// `gauss_fused.cu` (built on the Gaussian and attention device code).
    Fused,
    /// `cert.cu` (built on the attention device code).
    Cert,
    /// `robust.cu` (built on the Gaussian and attention device code).
    Robust,
    /// Every decode kernel in one module.
    All,
}

impl Family {
    /// The families plans load (every kernel is in exactly one).
    pub(crate) const SPLIT: [Family; 7] = [
        Family::Cache,
        Family::Topk,
        Family::Attn,
        Family::Gauss,
        Family::Fused,
        Family::Cert,
        Family::Robust,
    ];

    /// The family a plan's kernels come from, or `All` where `ENTMAXKV_ONE_MODULE` is set.
    pub(crate) fn or_all(self) -> Family {
        if std::env::var("ENTMAXKV_ONE_MODULE").is_ok_and(|v| v != "0") {
            Family::All
        } else {
            self
        }
    }

    /// The source files after the common header, in order, each with whether the family
    /// defines its kernels (`false`: only its device code, which the family's own kernels
    /// build on): a family's sources, options and kernel list all come from here.
    fn parts(self) -> &'static [(Part, bool)] {
        match self {
            Family::Cache => &[(CACHE, true)],
            Family::Topk => &[(TOPK, true)],
            Family::Attn => &[(ATTN, true)],
            Family::Gauss => &[(GAUSS_BETA, true), (GAUSS, true)],
            Family::Fused => &[
                (GAUSS_BETA, true),
                (GAUSS, false),
                (ATTN, false),
                (GAUSS_FUSED, true),
            ],
            Family::Cert => &[(ATTN, false), (CERT, true)],
            Family::Robust => &[
                (GAUSS_BETA, true),
                (GAUSS, false),
                (ATTN, false),
                (ROBUST_BOUND, true),
                (ROBUST, true),
            ],
            Family::All => &[
                (CACHE, true),
                (TOPK, true),
                (GAUSS_BETA, true),
                (GAUSS, true),
                (ATTN, true),
                (CERT, true),
                (GAUSS_FUSED, true),
                (ROBUST_BOUND, true),
                (ROBUST, true),
            ],
        }
    }

    /// The kernel sources after the common header, in order.
    fn sources(self) -> impl Iterator<Item = &'static str> {
        self.parts().iter().map(|(p, _)| p.src)
    }

    /// The kernels the family's module defines.
    fn kernels(self) -> impl Iterator<Item = &'static str> {
        self.parts()
            .iter()
            .filter(|(_, own)| *own)
            .flat_map(|(p, _)| p.kernels.iter().copied())
    }

    /// `-D` options switching off the kernels of the parts the family only builds on.
    fn guard_options(self) -> impl Iterator<Item = String> {
        self.parts()
            .iter()
            .filter_map(|(p, own)| p.guard.map(|g| format!("-D{g}={}", u8::from(*own))))
    }

    /// Whether the family holds the Gaussian code (the only code with a quadrature variant).
    fn has_gauss(self) -> bool {
        self.parts().iter().any(|(p, _)| p.src == GAUSS_SRC)
    }
}

/// A kernel source file, the kernels it defines and the macro that, set to 0, leaves them
/// out (only files whose device code other families build on have one).
struct Part {
    src: &'static str,
    kernels: &'static [&'static str],
    guard: Option<&'static str>,
}

const CACHE: Part = Part {
    src: CACHE_SRC,
    kernels: &["cache_append", "cache_advance"],
    guard: None,
};
const TOPK: Part = Part {
    src: TOPK_SRC,
    kernels: &["topk_score", "topk_sketch_score", "topk_select"],
    guard: None,
};
const GAUSS_BETA: Part = Part {
    src: GAUSS_BETA_SRC,
    kernels: &[],
    guard: None,
};
const GAUSS: Part = Part {
    src: GAUSS_SRC,
    kernels: &["gauss_moments", "gauss_mix", "gauss_count", "gauss_pack"],
    guard: Some("GAUSS_KERNELS"),
};
const ATTN: Part = Part {
    src: ATTN_SRC,
    kernels: &[
        "attn_entmax_scores",
        "attn_entmax_filter",
        "attn_entmax_refilter",
        "attn_entmax_tail",
        "attn_entmax_tail15",
        "attn_entmax_tail15_lean",
        "attn_entmax_values",
        "attn_softmax",
    ],
    guard: Some("ATTN_KERNELS"),
};
const CERT: Part = Part {
    src: CERT_SRC,
    kernels: &["cert_bounds", "cert_exact"],
    guard: None,
};
const GAUSS_FUSED: Part = Part {
    src: GAUSS_FUSED_SRC,
    kernels: &["gauss_fused_scores", "gauss_fused_scores15"],
    guard: None,
};
const ROBUST_BOUND: Part = Part {
    src: ROBUST_BOUND_SRC,
    kernels: &[],
    guard: None,
};
const ROBUST: Part = Part {
    src: ROBUST_SRC,
    kernels: &[
        "rob_box",
        "rob_bmax",
        "rob_tok1",
        "rob_tok2",
        "rob_cmax1",
        "rob_ccnt1",
        "rob_cpack1",
        "rob_solve1",
        "rob_cmax2",
        "rob_ccnt2",
        "rob_cpack2",
        "rob_solve2",
        "rob_pcnt",
        "rob_pack",
    ],
    guard: None,
};

/// Which compiled module: the decode kernels are specialised on the element types, the
/// head dimension and the query heads per attention task, and split by [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ModuleKey {
    Decode {
        family: Family,
        kv: DType,
        stats: DType,
        head_dim: usize,
        tg: usize,
        /// K/V rows each thread has in flight (8 unless `ENTMAXKV_UNROLL` says otherwise).
        unroll: usize,
        /// Gaussian τ̂ by quadrature (α with β = 1/(α−1) ∉ {1, 2, 3}): compiled only into the
        /// modules that need it, to keep the closed-form kernels small.
        gauss_generic: bool,
    },
    Probe,
}

/// K/V rows in flight per thread for `tg` query heads per task: 8 for one head, 4 for GQA
/// groups (their q and accumulators take the registers; measured on an H100: 84% instead of
/// 72% of read bandwidth at 32q/8kv, D = 128). `ENTMAXKV_UNROLL` (1, 2, 4, 8 or 16)
/// overrides it for experiments.
pub(crate) fn unroll_rows(tg: usize) -> usize {
    std::env::var("ENTMAXKV_UNROLL")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|u| [1, 2, 4, 8, 16].contains(u))
        .unwrap_or(if tg > 1 { 4 } else { 8 })
}

impl ModuleKey {
    /// The kernels a module's functions are looked up for (every kernel its source defines).
    pub(crate) fn kernel_names(&self) -> Vec<&'static str> {
        match self {
            ModuleKey::Decode { family, .. } => family.kernels().collect(),
            ModuleKey::Probe => vec!["probe_read", "probe_copy", "probe_fill"],
        }
    }

    /// Full source and NVRTC options for compute capability `cc`.
    pub(crate) fn source_and_options(&self, cc: (i32, i32)) -> (String, Vec<String>) {
        let mut opts = vec![
            format!("--gpu-architecture=compute_{}{}", cc.0, cc.1),
            "--std=c++17".to_string(),
        ];
        let src = match *self {
            ModuleKey::Decode {
                family,
                kv,
                stats,
                head_dim,
                tg,
                unroll,
                gauss_generic,
            } => {
                let code = |d: DType| match d {
                    DType::F32 => 0,
                    DType::F16 => 1,
                    DType::Bf16 => 2,
                };
                opts.push(format!("-DKV_T={}", code(kv)));
                opts.push(format!("-DST_T={}", code(stats)));
                opts.push(format!("-DHEAD_DIM={head_dim}"));
                opts.push(format!("-DTG={tg}"));
                opts.push(format!("-DUNROLL_ROWS={unroll}"));
                opts.push(format!("-DGAUSS_GENERIC={}", u8::from(gauss_generic)));
                // `ENTMAXKV_DEFINES="NAME=VALUE ..."` (development knob): further -D options,
                // so that kernel variants behind #if switches can be timed from one binary
                // (session 16 timed topk_select's this way). They are part of the PTX cache
                // key; words with other characters than [A-Za-z0-9_=] are ignored.
                if let Ok(defs) = std::env::var("ENTMAXKV_DEFINES") {
                    opts.extend(
                        defs.split_whitespace()
                            .filter(|d| {
                                d.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '=')
                            })
                            .map(|d| format!("-D{d}")),
                    );
                }
                opts.push(format!(
                    "-DEXPECT_ATTN_SIZE={}",
                    std::mem::size_of::<super::params::AttnParams>()
                ));
                opts.push(format!(
                    "-DEXPECT_TOPK_SIZE={}",
                    std::mem::size_of::<super::params::TopkParams>()
                ));
                opts.push(format!(
                    "-DEXPECT_GAUSS_SIZE={}",
                    std::mem::size_of::<super::params::GaussParams>()
                ));
                opts.push(format!(
                    "-DEXPECT_ROBUST_SIZE={}",
                    std::mem::size_of::<super::params::RobustParams>()
                ));
                opts.push(format!(
                    "-DEXPECT_FUSED_SIZE={}",
                    std::mem::size_of::<super::params::FusedGaussParams>()
                ));
                opts.push(format!(
                    "-DEXPECT_APPEND_SIZE={}",
                    std::mem::size_of::<super::params::AppendParams>()
                ));
                opts.extend(family.guard_options());
                let mut src = format!("{COMMON_SRC}\n");
                for part in family.sources() {
                    src.push_str(part);
                    src.push('\n');
                }
                src
            }
            ModuleKey::Probe => PROBE_SRC.to_string(),
        };
        (src, opts)
    }
}

/// Compiles a module's source to PTX with NVRTC (no device needed).
pub(crate) fn compile(key: &ModuleKey, cc: (i32, i32)) -> Result<String> {
    nvrtc_present()?;
    let (src, options) = key.source_and_options(cc);
    nvrtc_compile(key, src, options)
}

/// NVRTC is loadable, or the typed NoCuda error.
fn nvrtc_present() -> Result<()> {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::NoCuda {
            op: "nvrtc",
            reason:
                "NVRTC (libnvrtc.so) not found: add the CUDA toolkit's lib64 to LD_LIBRARY_PATH"
                    .into(),
        });
    }
    Ok(())
}

/// `key`'s source and options (`ModuleKey::source_and_options`) to PTX; NVRTC is present.
fn nvrtc_compile(key: &ModuleKey, src: String, options: Vec<String>) -> Result<String> {
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some("entmaxkv.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, options, .. } => Error::Cuda {
            op: "nvrtc",
            msg: format!(
                "compiling {key:?} with {options:?} failed:\n{}",
                log.to_string_lossy()
            ),
        },
        other => Error::Cuda {
            op: "nvrtc",
            msg: format!("{other:?}"),
        },
    })?;
    Ok(ptx.to_src())
}

/// NVRTC's version (major, minor); NVRTC must be present.
fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Cuda {
            op: "nvrtc",
            msg: format!("nvrtcVersion: {r:?}"),
        });
    }
    Ok((major, minor))
}

/// [`compile`] through the on-disk PTX cache (`ptx_cache.rs`) where one is configured: a
/// module another process compiled from the same source, options and NVRTC is read back.
/// Also says whether the PTX came from the cache; `fresh`: compile, and store the result.
pub(crate) fn compile_cached(
    key: &ModuleKey,
    cc: (i32, i32),
    fresh: bool,
) -> Result<(String, bool)> {
    compile_cached_in(key, cc, super::ptx_cache::dir_from_env(), fresh)
}

fn compile_cached_in(
    key: &ModuleKey,
    cc: (i32, i32),
    dir: Option<std::path::PathBuf>,
    fresh: bool,
) -> Result<(String, bool)> {
    let Some(dir) = dir else {
        return Ok((compile(key, cc)?, false));
    };
    nvrtc_present()?;
    let (src, options) = key.source_and_options(cc);
    let name = super::ptx_cache::entry_name(&src, &options, nvrtc_version()?);
    if let Some(ptx) = super::ptx_cache::get(&dir, &name).filter(|_| !fresh) {
        return Ok((ptx, true));
    }
    let ptx = nvrtc_compile(key, src, options)?;
    super::ptx_cache::put(&dir, &name, &ptx);
    Ok((ptx, false))
}

/// The modules of a plan ([`Family`]): each kernel is taken from the one module that holds
/// it.
pub(crate) struct Kernels {
    mods: Vec<Arc<Module>>,
}

impl Kernels {
    /// The modules of `families` for one shape (`key` gives the shape; its family is
    /// replaced), in that order, each compiled once per process.
    pub(crate) fn load(gpu: &Gpu, key: ModuleKey, families: &[Family]) -> Result<Kernels> {
        let mut mods = Vec::with_capacity(families.len());
        let mut seen = Vec::new();
        for &f in families {
            let f = f.or_all();
            if seen.contains(&f) {
                continue;
            }
            seen.push(f);
            let mut k = key;
            if let ModuleKey::Decode {
                family,
                gauss_generic,
                ..
            } = &mut k
            {
                *family = f;
                // Only the Gaussian code has a quadrature variant: the other families'
                // modules are the same either way (one compile for both).
                *gauss_generic &= f.has_gauss();
            }
            mods.push(gpu.module(k)?);
        }
        Ok(Kernels { mods })
    }

    fn module_of(&self, name: &'static str) -> &Module {
        self.mods
            .iter()
            .find(|m| m.has(name))
            .unwrap_or_else(|| panic!("kernel {name} is in none of the plan's modules"))
    }

    pub(crate) fn func(&self, name: &'static str) -> sys::CUfunction {
        self.module_of(name).func(name)
    }

    /// Resident CTAs per multiprocessor for a launch shape.
    pub(crate) fn occupancy(&self, name: &'static str, block: u32, smem: usize) -> Result<usize> {
        self.module_of(name).occupancy(name, block, smem)
    }

    /// Allows a kernel more than 48 KB of dynamic shared memory in the module that holds it
    /// (a module is shared by the plans of its shape, so each such limit is the largest any
    /// plan sets); kernels of families the plan did not load are skipped.
    pub(crate) fn set_max_dynamic_smem(&self, name: &'static str, bytes: usize) -> Result<()> {
        for m in self.mods.iter().filter(|m| m.has(name)) {
            m.set_max_dynamic_smem(name, bytes)?;
        }
        Ok(())
    }
}

/// A loaded module and its kernels.
pub(crate) struct Module {
    raw: sys::CUmodule,
    funcs: HashMap<&'static str, sys::CUfunction>,
}

unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    fn load(ptx: &str, names: &[&'static str]) -> Result<Module> {
        let image = CString::new(ptx).map_err(|_| Error::Cuda {
            op: "module load",
            msg: "PTX holds a NUL byte".into(),
        })?;
        let raw = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| cuda_err("module load", e))?;
        let mut funcs = HashMap::new();
        for &n in names {
            let cname = CString::new(n).expect("static kernel name");
            let f = unsafe { result::module::get_function(raw, cname) }
                .map_err(|e| cuda_err("get function", e))?;
            funcs.insert(n, f);
        }
        Ok(Module { raw, funcs })
    }

    pub(crate) fn func(&self, name: &'static str) -> sys::CUfunction {
        self.funcs[name]
    }

    /// Whether the module holds the kernel.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    /// Resident CTAs per multiprocessor for a launch shape.
    pub(crate) fn occupancy(&self, name: &'static str, block: u32, smem: usize) -> Result<usize> {
        let n = unsafe {
            result::occupancy::max_active_block_per_multiprocessor(
                self.func(name),
                block as i32,
                smem,
            )
        }
        .map_err(|e| cuda_err("occupancy", e))?;
        Ok(n.max(1) as usize)
    }

    /// Allows a kernel more than 48 KB of dynamic shared memory.
    pub(crate) fn set_max_dynamic_smem(&self, name: &'static str, bytes: usize) -> Result<()> {
        unsafe {
            result::function::set_function_attribute(
                self.func(name),
                sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        }
        .map_err(|e| cuda_err("set smem", e))
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = unsafe { result::module::unload(self.raw) };
    }
}

/// Launches `func` with one by-value parameter struct.
///
/// # Safety
/// `P` must be the `#[repr(C)]` mirror of the kernel's parameter struct and every pointer
/// in it valid for what the kernel does.
pub(crate) unsafe fn launch<P>(
    func: sys::CUfunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: usize,
    stream: &Stream,
    params: &P,
) -> Result<()> {
    let mut args = [params as *const P as *mut c_void];
    result::launch_kernel(
        func,
        grid,
        (block, 1, 1),
        smem as u32,
        stream.raw,
        &mut args,
    )
    .map_err(|e| cuda_err("launch", e))
}

/// Launches `func` like [`launch`], with programmatic stream serialization allowed when
/// `pdl` (sm_90+): the kernel may be scheduled before its predecessor in the stream has
/// finished. Only for kernels that begin with `PDL_ENTRY()` (common.cuh), which waits for
/// the predecessor before any global access, so stream order is kept; graph capture records
/// the launch as a programmatic edge.
///
/// # Safety
/// As [`launch`].
pub(crate) unsafe fn launch_ex<P>(
    func: sys::CUfunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: usize,
    stream: &Stream,
    params: &P,
    pdl: bool,
) -> Result<()> {
    if !pdl {
        return launch(func, grid, block, smem, stream, params);
    }
    let mut args = [params as *const P as *mut c_void];
    let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let cfg = sys::CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: smem as u32,
        hStream: stream.raw,
        attrs: &mut attr,
        numAttrs: 1,
    };
    sys::cuLaunchKernelEx(&cfg, func, args.as_mut_ptr(), std::ptr::null_mut())
        .result()
        .map_err(|e| cuda_err("launch (PDL)", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PTX cache end to end with the real NVRTC, where one is found (skips otherwise):
    /// a miss compiles and stores, a hit returns the same text without compiling.
    #[test]
    fn cached_compile_matches_and_is_read_back() {
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("SKIP cached_compile_matches_and_is_read_back: no NVRTC on this machine");
            return;
        }
        let dir = std::env::temp_dir().join(format!("entmaxkv-ptx-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = ModuleKey::Probe;
        let fresh = compile(&key, (9, 0)).expect("compile");
        let first = compile_cached_in(&key, (9, 0), Some(dir.clone()), false).expect("miss");
        assert_eq!(first, (fresh.clone(), false));
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        // A hit: the stored text, even if the entry were edited (shows it is read back).
        let path = entries[0].as_ref().unwrap().path();
        std::fs::write(&path, format!("{fresh}// read back\n")).unwrap();
        let second = compile_cached_in(&key, (9, 0), Some(dir.clone()), false).expect("hit");
        assert_eq!(second, (format!("{fresh}// read back\n"), true));
        // `fresh` compiles and puts the compiled text back in place of the stored one.
        let third = compile_cached_in(&key, (9, 0), Some(dir.clone()), true).expect("fresh");
        assert_eq!(third, (fresh.clone(), false));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), fresh);
        // Another architecture is another entry.
        compile_cached_in(&key, (8, 0), Some(dir.clone()), false).expect("miss");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The `extern "C" __global__` kernels a source defines, in order.
    fn kernels_defined(src: &str) -> Vec<String> {
        src.lines()
            .filter_map(|l| l.trim_start().strip_prefix("extern \"C\" __global__ void "))
            .map(|rest| {
                let rest = match rest.strip_prefix("__launch_bounds__(") {
                    Some(r) => r.split_once(')').map(|(_, r)| r.trim_start()).unwrap_or(r),
                    None => rest,
                };
                // The name is the last word before its parameters (a launch-bounds macro,
                // e.g. SOFTMAX_BOUNDS, may precede it).
                let head = rest.split('(').next().unwrap_or("");
                head.split_whitespace().last().unwrap_or("").to_string()
            })
            .collect()
    }

    /// The certificate's bounds rest on the FMA dot's error bound: cert.cu scores K rows only
    /// through `FMA_SCORER` (the FMA `score_rows` of attn.cu), never through the tensor-core
    /// `score_rows` that serves the attention for GQA groups (session 18).
    #[test]
    fn certificate_scores_by_fma() {
        let calls = |name: &str| {
            CERT_SRC
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .filter(|l| l.contains(&format!("{name}(")))
                .count()
        };
        assert_eq!(calls("score_rows"), 0, "cert.cu calls score_rows");
        assert!(
            calls("FMA_SCORER") >= 1,
            "cert.cu scores its open page by FMA_SCORER"
        );
        assert!(ATTN_SRC.contains("#define FMA_SCORER score_rows_fma"));
    }

    /// Every kernel the sources define is listed (a launch looks its function up by name, so
    /// a kernel missing from the list fails only on a GPU), and every listed name is defined.
    #[test]
    fn kernel_lists_match_the_sources() {
        let decode = |family| ModuleKey::Decode {
            family,
            kv: DType::F16,
            stats: DType::F16,
            head_dim: 64,
            tg: 1,
            unroll: 8,
            gauss_generic: false,
        };
        let mut cases: Vec<(ModuleKey, Vec<&str>)> = Family::SPLIT
            .iter()
            .chain([Family::All].iter())
            .map(|&f| {
                let own = f.parts().iter().filter(|(_, own)| *own).map(|(p, _)| p.src);
                (decode(f), own.collect())
            })
            .collect();
        cases.push((ModuleKey::Probe, vec![PROBE_SRC]));
        // The quadrature variant exists only for the families with the Gaussian code.
        for f in Family::SPLIT.iter().chain([Family::All].iter()) {
            let gauss = matches!(
                f,
                Family::Gauss | Family::Fused | Family::Robust | Family::All
            );
            assert_eq!(f.has_gauss(), gauss, "{f:?}");
        }
        // A part a family only builds on can leave its kernels out.
        for f in Family::SPLIT {
            for (p, own) in f.parts() {
                assert!(*own || p.guard.is_some() || p.kernels.is_empty(), "{f:?}");
            }
        }
        // Every kernel is in exactly one family plans load.
        let mut split: Vec<&str> = Family::SPLIT.iter().flat_map(|f| f.kernels()).collect();
        let n = split.len();
        split.sort();
        split.dedup();
        assert_eq!(split.len(), n, "a kernel is in two families");
        for k in decode(Family::All).kernel_names() {
            assert!(split.contains(&k), "{k} is in no family");
        }
        for (key, srcs) in cases {
            let mut defined: Vec<String> = srcs.iter().flat_map(|s| kernels_defined(s)).collect();
            let mut listed: Vec<String> =
                key.kernel_names().iter().map(|s| s.to_string()).collect();
            defined.sort();
            listed.sort();
            assert!(!defined.is_empty());
            assert_eq!(defined, listed, "{key:?}: kernels defined vs listed");
        }
    }
}

//! The device-resident paged KV cache: the host cache's layout and semantics (page pool,
//! block tables, per-sequence lengths, statistics, sketch, open-page accumulators) in device
//! memory.
//!
//! It is created by uploading a host [`PagedKvCache`], so both sides hold identical bytes,
//! and grows by [`DeviceKvCache::append`], a kernel that writes one token per sequence and
//! updates page statistics (and the sketch when a page closes) exactly as the host append
//! does. Page allocation stays on the host (a mirror of the free list, the block tables and
//! the lengths, which the host always knows without reading the device); only the new block
//! table entries travel.

use super::ctx::{DevBuf, Family, Gpu, Module, ModuleKey, Stream};
use super::params::AppendParams;
use crate::cache::{CacheConfig, KvStorage, PagedKvCache, SeqId};
use crate::dtype::DType;
use crate::error::{check_finite, check_len, Error, Result};
use crate::stats::{sketch, StatsStorage};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Capacity of a device cache beyond what the uploaded host cache holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceCacheOptions {
    /// Sequences the device block tables hold (0 = the host's live sequences, at least 1).
    pub max_seqs: usize,
    /// Pages one sequence may own (0 = the whole pool).
    pub max_pages_per_seq: usize,
}

/// Device buffers of a cache; decoders keep an `Arc` so the pool outlives them.
pub(crate) struct CacheBufs {
    pub k: DevBuf<u8>,
    pub v: DevBuf<u8>,
    /// min, max, mean, std.
    pub stats: [DevBuf<u8>; 4],
    pub sketch: DevBuf<u8>,
    pub block_tables: DevBuf<u32>,
    pub lens: DevBuf<i32>,
    pub acc_mean: DevBuf<f64>,
    pub acc_m2: DevBuf<f64>,
    pub acc_min: DevBuf<f32>,
    pub acc_max: DevBuf<f32>,
    pub bt_stride: usize,
}

#[derive(Debug, Clone)]
struct DevSeq {
    row: usize,
    pages: Vec<u32>,
    len: usize,
}

/// A paged KV cache in device memory (see the module docs).
pub struct DeviceKvCache {
    gpu: Arc<Gpu>,
    stream: Arc<Stream>,
    cfg: CacheConfig,
    pub(crate) bufs: Arc<CacheBufs>,
    module: Arc<Module>,
    free: Vec<u32>,
    seqs: BTreeMap<u64, DevSeq>,
    free_rows: Vec<usize>,
    next_id: u64,
    staging: Option<Staging>,
    /// Whether an append left work queued on the stream (`append_device`): steps then order
    /// themselves against the cache's stream on the device (`GpuDecoder::replay`).
    async_appends: bool,
}

/// Where an append's new keys and values are.
enum NewKv<'a> {
    Host(&'a [f32], &'a [f32]),
    /// Device addresses and their element type.
    Device(u64, u64, DType),
}

struct Staging {
    cap: usize,
    k: DevBuf<f32>,
    v: DevBuf<f32>,
    rows: DevBuf<i32>,
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: plain-old-data element types (f32, f16, bf16, u8) without padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Checks that the GPU kernels support a cache shape.
pub(crate) fn check_gpu_config(op: &'static str, cfg: &CacheConfig) -> Result<()> {
    let d = cfg.head_dim;
    for (what, dt) in [
        ("kv dtype", cfg.kv_dtype),
        ("stats dtype", cfg.resolved_stats_dtype()),
    ] {
        if !(d * dt.size()).is_multiple_of(16) {
            return Err(Error::Unsupported {
                op,
                what: format!(
                    "head_dim {d} with {what} {dt}: the GPU kernels read rows as 16-byte vectors, \
                     so head_dim must be a multiple of {}",
                    16 / dt.size()
                ),
            });
        }
    }
    if d > 256 {
        return Err(Error::Unsupported {
            op,
            what: format!("head_dim {d}: the GPU kernels support head_dim <= 256"),
        });
    }
    Ok(())
}

impl DeviceKvCache {
    /// Uploads a host cache (pool, statistics, sketch, sequences and their open-page
    /// accumulators) with the given capacity for more sequences.
    pub fn upload(host: &PagedKvCache, opts: DeviceCacheOptions) -> Result<DeviceKvCache> {
        const OP: &str = "DeviceKvCache::upload";
        let cfg = host.config().clone();
        check_gpu_config(OP, &cfg)?;
        let gpu = Gpu::get()?;
        let stream = gpu.stream()?;
        let module = gpu.module(ModuleKey::Decode {
            family: Family::Cache.or_all(),
            kv: cfg.kv_dtype,
            stats: cfg.resolved_stats_dtype(),
            head_dim: cfg.head_dim,
            tg: 1,
            unroll: super::ctx::unroll_rows(1),
            gauss_generic: false,
        })?;
        let live = host.sequences();
        let max_rows = if opts.max_seqs == 0 {
            live.len().max(1)
        } else {
            opts.max_seqs
        };
        if max_rows < live.len() {
            return Err(Error::invalid(
                OP,
                "max_seqs",
                max_rows,
                format!("the host cache holds {} sequences", live.len()),
            ));
        }
        let bt_stride = if opts.max_pages_per_seq == 0 {
            cfg.num_pages
        } else {
            opts.max_pages_per_seq
        };
        let (k, v) = match host.kv() {
            KvStorage::F32 { k, v } => (gpu.upload(as_bytes(k))?, gpu.upload(as_bytes(v))?),
            KvStorage::F16 { k, v } => (gpu.upload(as_bytes(k))?, gpu.upload(as_bytes(v))?),
            KvStorage::Bf16 { k, v } => (gpu.upload(as_bytes(k))?, gpu.upload(as_bytes(v))?),
        };
        let st = |i: usize| -> Result<DevBuf<u8>> {
            match host.stats() {
                StatsStorage::F32(a) => gpu.upload(as_bytes(&a[i])),
                StatsStorage::F16(a) => gpu.upload(as_bytes(&a[i])),
                StatsStorage::Bf16(a) => gpu.upload(as_bytes(&a[i])),
            }
        };
        let stats = [st(0)?, st(1)?, st(2)?, st(3)?];
        let sketch = gpu.upload(host.sketch())?;
        let hd = cfg.num_kv_heads * cfg.head_dim;
        let mut bt = vec![0u32; max_rows * bt_stride];
        let mut lens = vec![0i32; max_rows];
        let mut acc_mean = vec![0.0f64; max_rows * hd];
        let mut acc_m2 = vec![0.0f64; max_rows * hd];
        let mut acc_min = vec![f32::INFINITY; max_rows * hd];
        let mut acc_max = vec![f32::NEG_INFINITY; max_rows * hd];
        let mut seqs = BTreeMap::new();
        for (row, &id) in live.iter().enumerate() {
            let s = host.seq(id)?;
            if s.pages.len() > bt_stride {
                return Err(Error::invalid(
                    OP,
                    "max_pages_per_seq",
                    bt_stride,
                    format!("sequence {id} already owns {} pages", s.pages.len()),
                ));
            }
            if s.len > i32::MAX as usize {
                return Err(Error::invalid(
                    OP,
                    "len",
                    s.len,
                    "sequences above 2^31 tokens",
                ));
            }
            bt[row * bt_stride..row * bt_stride + s.pages.len()].copy_from_slice(s.pages);
            lens[row] = s.len as i32;
            let (mean, m2, mn, mx) = host
                .open_accumulators(id)
                .expect("live sequence has accumulators");
            acc_mean[row * hd..(row + 1) * hd].copy_from_slice(mean);
            acc_m2[row * hd..(row + 1) * hd].copy_from_slice(m2);
            acc_min[row * hd..(row + 1) * hd].copy_from_slice(mn);
            acc_max[row * hd..(row + 1) * hd].copy_from_slice(mx);
            seqs.insert(
                id.0,
                DevSeq {
                    row,
                    pages: s.pages.to_vec(),
                    len: s.len,
                },
            );
        }
        let bufs = CacheBufs {
            k,
            v,
            stats,
            sketch,
            block_tables: gpu.upload(&bt)?,
            lens: gpu.upload(&lens)?,
            acc_mean: gpu.upload(&acc_mean)?,
            acc_m2: gpu.upload(&acc_m2)?,
            acc_min: gpu.upload(&acc_min)?,
            acc_max: gpu.upload(&acc_max)?,
            bt_stride,
        };
        Ok(DeviceKvCache {
            gpu,
            stream,
            cfg,
            bufs: Arc::new(bufs),
            module,
            free: host.free_list().to_vec(),
            seqs,
            free_rows: (live.len()..max_rows).rev().collect(),
            next_id: host.next_seq_id(),
            staging: None,
            async_appends: false,
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
    /// The stream every operation on this cache (and its decoders) runs on.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
    pub fn num_kv_heads(&self) -> usize {
        self.cfg.num_kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.cfg.head_dim
    }
    pub fn page_size(&self) -> usize {
        self.cfg.page_size
    }
    pub fn free_pages(&self) -> usize {
        self.free.len()
    }
    /// Pages a sequence may own (the block-table row length).
    pub fn max_pages_per_seq(&self) -> usize {
        self.bufs.bt_stride
    }

    fn seq(&self, op: &'static str, id: SeqId) -> Result<&DevSeq> {
        self.seqs
            .get(&id.0)
            .ok_or(Error::UnknownSequence { op, id: id.0 })
    }

    /// Tokens cached for `id` (the host mirror; equals the device length).
    pub fn seq_len(&self, id: SeqId) -> Result<usize> {
        Ok(self.seq("seq_len", id)?.len)
    }
    /// The block table of `id`.
    pub fn seq_pages(&self, id: SeqId) -> Result<&[u32]> {
        Ok(&self.seq("seq_pages", id)?.pages)
    }
    /// Block-table row of `id` on the device.
    pub(crate) fn seq_row(&self, id: SeqId) -> Result<usize> {
        Ok(self.seq("seq_row", id)?.row)
    }
    /// Live sequence ids in creation order.
    pub fn sequences(&self) -> Vec<SeqId> {
        self.seqs.keys().map(|&k| SeqId(k)).collect()
    }

    /// Creates an empty sequence (the same id the host cache would give).
    pub fn add_sequence(&mut self) -> Result<SeqId> {
        let row = self.free_rows.pop().ok_or_else(|| {
            Error::invalid(
                "DeviceKvCache::add_sequence",
                "max_seqs",
                self.seqs.len(),
                "every device block-table row is in use (raise DeviceCacheOptions::max_seqs)",
            )
        })?;
        self.bufs.lens.write_at(&self.stream, row, &[0])?;
        let id = self.next_id;
        self.next_id += 1;
        self.seqs.insert(
            id,
            DevSeq {
                row,
                pages: Vec::new(),
                len: 0,
            },
        );
        Ok(SeqId(id))
    }

    /// Returns a sequence's pages to the pool (in the host cache's order).
    pub fn release(&mut self, id: SeqId) -> Result<()> {
        let s = self.seqs.remove(&id.0).ok_or(Error::UnknownSequence {
            op: "DeviceKvCache::release",
            id: id.0,
        })?;
        self.free.extend(s.pages.iter().rev());
        self.bufs.lens.write_at(&self.stream, s.row, &[0])?;
        self.free_rows.push(s.row);
        Ok(())
    }

    /// Appends one token to each sequence of `seqs`: `k`, `v` are `[B, H_kv, D]` (f32,
    /// rounded to the cache dtype on the device). Statistics and the sketch are updated on
    /// the device. Validates everything before changing anything.
    pub fn append(&mut self, seqs: &[SeqId], k: &[f32], v: &[f32]) -> Result<()> {
        const OP: &str = "DeviceKvCache::append";
        let (hkv, d) = (self.cfg.num_kv_heads, self.cfg.head_dim);
        let b = seqs.len();
        if b == 0 {
            return Err(Error::invalid(OP, "seqs", "[]", "at least one sequence"));
        }
        check_len(OP, "k", k.len(), &[b, hkv, d])?;
        check_len(OP, "v", v.len(), &[b, hkv, d])?;
        check_finite(OP, "k", k)?;
        check_finite(OP, "v", v)?;
        self.append_from(OP, seqs, NewKv::Host(k, v))
    }

    /// [`Self::append`] with the new keys and values already on the device, for engines
    /// whose K/V are device tensors: `k`, `v` are the device addresses of `[B, H_kv, D]`
    /// f32 values (rounded to the cache dtype on the device), read by the append kernel on
    /// [`Self::stream`]. Nothing is copied through the host and the host does not wait
    /// (new block-table entries and the batch's rows go by driver memsets on the stream;
    /// only growing the staging for a larger batch allocates). Steps order themselves
    /// after it on the device (`GpuDecoder::replay`,
    /// `GpuDecoder::step_async`). The sequences are validated as for `append`; the values
    /// are not checked for NaN/Inf (that would need them on the host): a non-finite key
    /// makes its page's statistics non-finite.
    ///
    /// # Safety
    /// `k` and `v` must each address `B·H_kv·D` f32 values in device memory of this
    /// context, written before the append in the stream's order (queued on
    /// [`Self::stream`], or ordered before it by an event the stream waits for), and left
    /// unchanged until the append kernel has read them.
    pub unsafe fn append_device(&mut self, seqs: &[SeqId], k: u64, v: u64) -> Result<()> {
        unsafe { self.append_device_as(seqs, k, v, DType::F32) }
    }

    /// [`Self::append_device`] with the new keys and values in `dtype` (f32, f16 or bf16),
    /// as engines keep them: `k`, `v` address `B·H_kv·D` elements of that type. An f16 or
    /// bf16 value is exact in f32, so the cache stores what [`Self::append`] stores for
    /// that value converted to f32 (bit for bit the same pool).
    ///
    /// # Safety
    /// As [`Self::append_device`], with `B·H_kv·D` elements of `dtype` at each address.
    pub unsafe fn append_device_as(
        &mut self,
        seqs: &[SeqId],
        k: u64,
        v: u64,
        dtype: DType,
    ) -> Result<()> {
        const OP: &str = "DeviceKvCache::append_device";
        if seqs.is_empty() {
            return Err(Error::invalid(OP, "seqs", "[]", "at least one sequence"));
        }
        if k == 0 || v == 0 {
            return Err(Error::invalid(OP, "k / v", "null", "device addresses"));
        }
        self.append_from(OP, seqs, NewKv::Device(k, v, dtype))
    }

    /// Whether steps must order themselves against this cache's stream on the device (an
    /// append left work queued there).
    pub(crate) fn has_async_appends(&self) -> bool {
        self.async_appends
    }

    fn append_from(&mut self, op: &'static str, seqs: &[SeqId], new: NewKv<'_>) -> Result<()> {
        let (hkv, d, ps) = (self.cfg.num_kv_heads, self.cfg.head_dim, self.cfg.page_size);
        let b = seqs.len();
        let mut needed = 0;
        for (i, id) in seqs.iter().enumerate() {
            let s = self.seq(op, *id)?;
            if seqs[..i].contains(id) {
                return Err(Error::invalid(op, "seqs", id, "sequence listed twice"));
            }
            if s.len.is_multiple_of(ps) {
                needed += 1;
            }
            if s.len + 1 > i32::MAX as usize {
                return Err(Error::invalid(op, "seqs", id, "sequence at 2^31 tokens"));
            }
        }
        if needed > self.free.len() {
            return Err(Error::OutOfPages {
                op,
                needed,
                free: self.free.len(),
                capacity: self.cfg.num_pages,
            });
        }
        for id in seqs {
            let s = self.seq(op, *id)?;
            if s.len.is_multiple_of(ps) && s.pages.len() >= self.bufs.bt_stride {
                return Err(Error::invalid(
                    op,
                    "seqs",
                    id,
                    format!(
                        "the sequence owns {} pages, the device block-table row holds {}",
                        s.pages.len(),
                        self.bufs.bt_stride
                    ),
                ));
            }
        }
        // Staging buffers (grown, never per token once large enough).
        if self.staging.as_ref().is_none_or(|s| s.cap < b) {
            let cap = b.max(8);
            self.staging = Some(Staging {
                cap,
                k: self.gpu.alloc(cap * hkv * d)?,
                v: self.gpu.alloc(cap * hkv * d)?,
                rows: self.gpu.alloc(cap)?,
            });
        }
        // Validated: allocate pages on the mirror and publish new block-table entries.
        // From device K/V, the small host-side values go by driver memsets (stream-ordered,
        // nothing for the host to wait for); from host K/V, by copies.
        let device_kv = matches!(new, NewKv::Device(..));
        let stride = self.bufs.bt_stride;
        let mut rows = Vec::with_capacity(b);
        for id in seqs {
            let s = self.seqs.get_mut(&id.0).expect("checked above");
            if s.len.is_multiple_of(ps) {
                let page = self.free.pop().expect("page count checked");
                let slot = s.pages.len();
                s.pages.push(page);
                let at = s.row * stride + slot;
                if device_kv {
                    self.bufs
                        .block_tables
                        .set_word_async(&self.stream, at, page)?;
                } else {
                    self.bufs.block_tables.write_at(&self.stream, at, &[page])?;
                }
            }
            rows.push(s.row as i32);
        }
        let st = self.staging.as_ref().expect("allocated above");
        let (k_new, v_new, src_dtype) = match new {
            NewKv::Host(k, v) => {
                st.k.write_at(&self.stream, 0, k)?;
                st.v.write_at(&self.stream, 0, v)?;
                st.rows.write_at(&self.stream, 0, &rows)?;
                (st.k.ptr(), st.v.ptr(), 0)
            }
            NewKv::Device(k, v, dtype) => {
                for (i, &r) in rows.iter().enumerate() {
                    st.rows.set_word_async(&self.stream, i, r as u32)?;
                }
                let code = match dtype {
                    DType::F32 => 0,
                    DType::F16 => 1,
                    DType::Bf16 => 2,
                };
                (k, v, code)
            }
        };
        let bf = &self.bufs;
        let p = AppendParams {
            k: bf.k.ptr(),
            v: bf.v.ptr(),
            smin: bf.stats[0].ptr(),
            smax: bf.stats[1].ptr(),
            smean: bf.stats[2].ptr(),
            sstd: bf.stats[3].ptr(),
            sketch: bf.sketch.ptr(),
            block_tables: bf.block_tables.ptr(),
            seq_lens: bf.lens.ptr(),
            rows: st.rows.ptr(),
            k_new,
            v_new,
            acc_mean: bf.acc_mean.ptr(),
            acc_m2: bf.acc_m2.ptr(),
            acc_min: bf.acc_min.ptr(),
            acc_max: bf.acc_max.ptr(),
            num_kv_heads: hkv as i32,
            page_size: ps as i32,
            bt_stride: stride as i32,
            sketch_bits: self.cfg.sketch_bits as i32,
            row_bytes: sketch::row_bytes(d, self.cfg.sketch_bits) as i32,
            batch: b as i32,
            src_dtype,
        };
        self.gpu.bind()?;
        unsafe {
            super::ctx::launch(
                self.module.func("cache_append"),
                (b as u32, hkv as u32, 1),
                128,
                0,
                &self.stream,
                &p,
            )?;
            super::ctx::launch(
                self.module.func("cache_advance"),
                (1, 1, 1),
                256,
                0,
                &self.stream,
                &p,
            )?;
        }
        for id in seqs {
            self.seqs.get_mut(&id.0).expect("checked above").len += 1;
        }
        if matches!(new, NewKv::Device(..)) {
            self.async_appends = true;
            return Ok(());
        }
        self.stream.sync()
    }

    /// K and V of the whole pool as raw bytes (the host cache's layout).
    pub fn download_kv(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        Ok((
            self.bufs.k.to_vec(&self.stream)?,
            self.bufs.v.to_vec(&self.stream)?,
        ))
    }
    /// The four statistics arrays (min, max, mean, std) as raw bytes.
    pub fn download_stats(&self) -> Result<[Vec<u8>; 4]> {
        let s = &self.bufs.stats;
        Ok([
            s[0].to_vec(&self.stream)?,
            s[1].to_vec(&self.stream)?,
            s[2].to_vec(&self.stream)?,
            s[3].to_vec(&self.stream)?,
        ])
    }
    /// The key sketch as raw bytes.
    pub fn download_sketch(&self) -> Result<Vec<u8>> {
        let mut v = self.bufs.sketch.to_vec(&self.stream)?;
        if self.cfg.sketch_bits == 0 {
            v.clear();
        }
        Ok(v)
    }
    /// The device's length of a sequence (read back; equals [`Self::seq_len`]).
    pub fn download_len(&self, id: SeqId) -> Result<usize> {
        let row = self.seq("download_len", id)?.row;
        let mut l = [0i32];
        self.bufs.lens.read_at(&self.stream, row, &mut l)?;
        Ok(l[0] as usize)
    }
    /// A sequence's block table as the device holds it.
    pub fn download_block_table(&self, id: SeqId) -> Result<Vec<u32>> {
        let s = self.seq("download_block_table", id)?;
        let mut v = vec![0u32; s.pages.len()];
        self.bufs
            .block_tables
            .read_at(&self.stream, s.row * self.bufs.bt_stride, &mut v)?;
        Ok(v)
    }
}

/// Raw bytes of a host cache's K, V, statistics and sketch, for comparisons with a device
/// cache.
pub fn host_bytes(host: &PagedKvCache) -> (Vec<u8>, Vec<u8>, [Vec<u8>; 4], Vec<u8>) {
    let (k, v) = match host.kv() {
        KvStorage::F32 { k, v } => (as_bytes(k).to_vec(), as_bytes(v).to_vec()),
        KvStorage::F16 { k, v } => (as_bytes(k).to_vec(), as_bytes(v).to_vec()),
        KvStorage::Bf16 { k, v } => (as_bytes(k).to_vec(), as_bytes(v).to_vec()),
    };
    let st: [Vec<u8>; 4] = std::array::from_fn(|i| match host.stats() {
        StatsStorage::F32(a) => as_bytes(&a[i]).to_vec(),
        StatsStorage::F16(a) => as_bytes(&a[i]).to_vec(),
        StatsStorage::Bf16(a) => as_bytes(&a[i]).to_vec(),
    });
    (k, v, st, host.sketch().to_vec())
}

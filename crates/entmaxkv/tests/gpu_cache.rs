//! The device cache against the host cache: an upload holds identical bytes, and N device
//! appends leave the device pool (K, V, statistics, sketch, lengths, block tables) equal to
//! a host cache given the same appends. Skips loudly without a GPU.

use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::gpu::cache::host_bytes;
use entmaxkv::gpu::{DeviceCacheOptions, DeviceKvCache};
use entmaxkv::synth::Synth;
use entmaxkv::{DType, Error};

mod common;

fn assert_same(host: &PagedKvCache, dev: &DeviceKvCache, what: &str) {
    let (hk, hv, hs, hsk) = host_bytes(host);
    let (dk, dv) = dev.download_kv().unwrap();
    let ds = dev.download_stats().unwrap();
    let dsk = dev.download_sketch().unwrap();
    assert!(
        hk == dk,
        "{what}: K differs at byte {:?}",
        hk.iter().zip(&dk).position(|(a, b)| a != b)
    );
    assert!(hv == dv, "{what}: V differs");
    for i in 0..4 {
        assert!(
            hs[i] == ds[i],
            "{what}: statistic {i} differs at byte {:?}",
            hs[i].iter().zip(&ds[i]).position(|(a, b)| a != b)
        );
    }
    assert!(
        hsk == dsk,
        "{what}: sketch differs at byte {:?}",
        hsk.iter().zip(&dsk).position(|(a, b)| a != b)
    );
    for id in host.sequences() {
        let s = host.seq(id).unwrap();
        assert_eq!(
            dev.seq_len(id).unwrap(),
            s.len,
            "{what}: host-mirror length of {id}"
        );
        assert_eq!(
            dev.download_len(id).unwrap(),
            s.len,
            "{what}: device length of {id}"
        );
        assert_eq!(
            dev.seq_pages(id).unwrap(),
            s.pages,
            "{what}: mirror block table of {id}"
        );
        assert_eq!(
            dev.download_block_table(id).unwrap(),
            s.pages,
            "{what}: device block table of {id}"
        );
    }
}

/// `via_device`: the device cache's appends take their K/V from device memory
/// (`append_device`, no host wait between them), kept alive until the comparison.
fn check_appends(
    kv: DType,
    stats: StatsDType,
    ps: usize,
    bits: u32,
    d: usize,
    seed: u64,
    // None: `append` from host f32; Some(t): `append_device_as` from device values of type t.
    via_device: Option<DType>,
) {
    let hkv = 2;
    let lens = [0usize, 5, 16, 37];
    let cfg = CacheConfig::new(hkv, d, 256)
        .with_page_size(ps)
        .with_kv_dtype(kv)
        .with_stats_dtype(stats)
        .with_sketch_bits(bits);
    let mut host = PagedKvCache::new(cfg).unwrap();
    let mut syn = Synth::new(seed);
    let mut ids = Vec::new();
    for &l in &lens {
        let id = host.add_sequence();
        if l > 0 {
            let k: Vec<f32> = syn
                .normals(l * hkv * d)
                .iter()
                .map(|x| x * 3.0 + 0.5)
                .collect();
            let v = syn.normals(l * hkv * d);
            // Prefill in uneven chunks (Chan merges), as a model would.
            let mut t = 0;
            while t < l {
                let e = (t + 7).min(l);
                host.append(
                    id,
                    &k[t * hkv * d..e * hkv * d],
                    &v[t * hkv * d..e * hkv * d],
                    ChunkLayout::TokenMajor,
                )
                .unwrap();
                t = e;
            }
        }
        ids.push(id);
    }
    let what = format!("{kv} stats {stats:?} ps {ps} bits {bits} d {d}");
    let mut dev = DeviceKvCache::upload(
        &host,
        DeviceCacheOptions {
            max_seqs: 6,
            max_pages_per_seq: 0,
        },
    )
    .unwrap();
    assert_same(&host, &dev, &format!("upload {what}"));
    let mut on_device = Vec::new();
    let mut on_device16 = Vec::new();
    let mut append =
        |dev: &mut DeviceKvCache, batch: &[SeqId], k: &[f32], v: &[f32]| match via_device {
            None => dev.append(batch, k, v).unwrap(),
            Some(DType::F32) => {
                let (kd, vd) = (common::DevF32::new(k), common::DevF32::new(v));
                unsafe { dev.append_device(batch, kd.ptr, vd.ptr) }.unwrap();
                on_device.push((kd, vd));
            }
            Some(t) => {
                // The values are exact in t (rounded by `exact_in` below).
                let bits = |x: &[f32]| -> Vec<u16> {
                    x.iter()
                        .map(|&x| match t {
                            DType::F16 => half::f16::from_f32(x).to_bits(),
                            _ => half::bf16::from_f32(x).to_bits(),
                        })
                        .collect()
                };
                let (kd, vd) = (common::DevU16::new(&bits(k)), common::DevU16::new(&bits(v)));
                unsafe { dev.append_device_as(batch, kd.ptr, vd.ptr, t) }.unwrap();
                on_device16.push((kd, vd));
            }
        };
    // The appended values as a 16-bit source holds them (identity for host and f32).
    let exact_in = |x: Vec<f32>| -> Vec<f32> {
        match via_device {
            Some(DType::F16) => x.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            Some(DType::Bf16) => x
                .iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect(),
            _ => x,
        }
    };
    let steps = 2 * ps + 3;
    for step in 0..steps {
        // All sequences but, every third step, the last one.
        let batch: Vec<SeqId> = if step % 3 == 2 {
            ids[..3].to_vec()
        } else {
            ids.clone()
        };
        let k: Vec<f32> = exact_in(
            syn.normals(batch.len() * hkv * d)
                .iter()
                .map(|x| x * 2.0 - 0.25)
                .collect(),
        );
        let v = exact_in(syn.normals(batch.len() * hkv * d));
        for (b, id) in batch.iter().enumerate() {
            let r = b * hkv * d..(b + 1) * hkv * d;
            host.append(*id, &k[r.clone()], &v[r], ChunkLayout::TokenMajor)
                .unwrap();
        }
        append(&mut dev, &batch, &k, &v);
    }
    assert_same(&host, &dev, &format!("after {steps} appends, {what}"));
    // Release one sequence, add a new one on both sides, append to it.
    host.release(ids[1]).unwrap();
    dev.release(ids[1]).unwrap();
    let nh = host.add_sequence();
    let nd = dev.add_sequence().unwrap();
    assert_eq!(nh, nd);
    for _ in 0..ps + 2 {
        let k = exact_in(syn.normals(hkv * d));
        let v = exact_in(syn.normals(hkv * d));
        host.append(nh, &k, &v, ChunkLayout::TokenMajor).unwrap();
        append(&mut dev, &[nd], &k, &v);
    }
    assert_same(&host, &dev, &format!("after release/add, {what}"));
    dev.stream().sync().unwrap();
    drop(on_device);
    drop(on_device16);
}

#[test]
fn device_appends_match_host_appends() {
    if common::gpu_or_skip("device_appends_match_host_appends").is_none() {
        return;
    }
    let mut seed = 7;
    for kv in [DType::F16, DType::Bf16, DType::F32] {
        for stats in [StatsDType::Kv, StatsDType::F32] {
            for (ps, bits, d) in [(16, 4, 64), (7, 3, 64), (16, 0, 128), (1, 8, 64)] {
                seed += 1;
                check_appends(kv, stats, ps, bits, d, seed, None);
            }
        }
    }
}

/// The same appends with K/V from device memory (`append_device`, for engines; in f32, f16
/// or bf16 by `append_device_as`): the same bytes as the host cache, with no host wait
/// between the appends.
#[test]
fn device_pointer_appends_match_host_appends() {
    if common::gpu_or_skip("device_pointer_appends_match_host_appends").is_none() {
        return;
    }
    let mut seed = 70;
    for kv in [DType::F16, DType::Bf16, DType::F32] {
        for (stats, ps, bits, d) in [(StatsDType::Kv, 16, 4, 64), (StatsDType::F32, 7, 3, 128)] {
            // f32 sources, and the f16 / bf16 tensors engines keep (`append_device_as`).
            for src in [DType::F32, DType::F16, DType::Bf16] {
                seed += 1;
                check_appends(kv, stats, ps, bits, d, seed, Some(src));
            }
        }
    }
}

#[test]
fn device_pointer_append_rejects_bad_arguments_without_changes() {
    if common::gpu_or_skip("device_pointer_append_rejects_bad_arguments_without_changes").is_none()
    {
        return;
    }
    let cfg = CacheConfig::new(1, 64, 2).with_page_size(4);
    let mut host = PagedKvCache::new(cfg).unwrap();
    let id = host.add_sequence();
    let mut dev = DeviceKvCache::upload(&host, DeviceCacheOptions::default()).unwrap();
    let ok = common::DevF32::new(&[0.5f32; 64]);
    assert!(matches!(
        unsafe { dev.append_device(&[SeqId(99)], ok.ptr, ok.ptr) },
        Err(Error::UnknownSequence { .. })
    ));
    assert!(matches!(
        unsafe { dev.append_device(&[id], 0, ok.ptr) },
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        unsafe { dev.append_device(&[], ok.ptr, ok.ptr) },
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        unsafe { dev.append_device(&[id, id], ok.ptr, ok.ptr) },
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(dev.seq_len(id).unwrap(), 0);
    for _ in 0..8 {
        unsafe { dev.append_device(&[id], ok.ptr, ok.ptr) }.unwrap();
    }
    assert!(matches!(
        unsafe { dev.append_device(&[id], ok.ptr, ok.ptr) },
        Err(Error::OutOfPages { .. })
    ));
    assert_eq!(dev.seq_len(id).unwrap(), 8);
    assert_eq!(dev.download_len(id).unwrap(), 8);
}

#[test]
fn append_rejects_bad_input_without_changes() {
    if common::gpu_or_skip("append_rejects_bad_input_without_changes").is_none() {
        return;
    }
    let cfg = CacheConfig::new(1, 64, 2).with_page_size(4);
    let mut host = PagedKvCache::new(cfg).unwrap();
    let id = host.add_sequence();
    let mut dev = DeviceKvCache::upload(&host, DeviceCacheOptions::default()).unwrap();
    let ok = vec![0.5f32; 64];
    let mut bad = ok.clone();
    bad[3] = f32::NAN;
    assert!(matches!(
        dev.append(&[id], &bad, &ok),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        dev.append(&[id], &ok[..63], &ok),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        dev.append(&[SeqId(99)], &ok, &ok),
        Err(Error::UnknownSequence { .. })
    ));
    assert_eq!(dev.seq_len(id).unwrap(), 0);
    for _ in 0..8 {
        dev.append(&[id], &ok, &ok).unwrap();
    }
    // Two pages of 4 tokens are the whole pool.
    assert!(matches!(
        dev.append(&[id], &ok, &ok),
        Err(Error::OutOfPages { .. })
    ));
    assert_eq!(dev.seq_len(id).unwrap(), 8);
    assert_eq!(dev.download_len(id).unwrap(), 8);
}

#[test]
fn unsupported_head_dim_is_a_typed_error() {
    if common::gpu_or_skip("unsupported_head_dim_is_a_typed_error").is_none() {
        return;
    }
    let host = PagedKvCache::new(CacheConfig::new(1, 12, 4)).unwrap();
    assert!(matches!(
        DeviceKvCache::upload(&host, DeviceCacheOptions::default()),
        Err(Error::Unsupported { .. })
    ));
}

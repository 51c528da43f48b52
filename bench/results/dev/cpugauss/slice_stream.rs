// Reads 61% of 2 KiB slices of 16 KiB page blocks (8 slices), in union order; measures time.
use std::arch::x86_64::*;
use std::time::Instant;
const SL: usize = 2048;
fn rnd(s: &mut u64) -> u64 { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; *s }
#[inline(always)]
unsafe fn sum_slice(p: *const u8, desc: bool, pf: *const u8) -> __m256i {
    let mut acc = _mm256_setzero_si256();
    for k in 0..(SL / 64) {
        let i = if desc { SL / 64 - 1 - k } else { k };
        if !pf.is_null() { _mm_prefetch::<_MM_HINT_T1>(pf.add(i * 64) as *const i8); }
        let v = _mm256_loadu_si256(p.add(i * 64) as *const __m256i);
        let w = _mm256_loadu_si256(p.add(i * 64 + 32) as *const __m256i);
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, _mm256_setzero_si256()));
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(w, _mm256_setzero_si256()));
        // a little compute per line, like the score kernel (~30 cycles per 128 B row)
        for _ in 0..4 { acc = _mm256_add_epi64(acc, _mm256_srli_epi64::<1>(acc)); }
    }
    acc
}
fn main() { unsafe { main2() } }
unsafe fn main2() {
    let args: Vec<String> = std::env::args().collect();
    let density: f64 = args.get(1).map_or(0.61, |s| s.parse().unwrap());
    let pages = 8192usize; let kv = 8usize;
    let mut buf = vec![1u8; pages * kv * SL];
    let mut seed = 0x9e3779b97f4a7c15u64;
    for x in buf.iter_mut().step_by(64) { *x = (rnd(&mut seed) & 0xff) as u8; }
    // random page order in the pool (like the cache's page table): identity here
    let mask: Vec<u8> = (0..pages).map(|_| { let mut m = 0u8; for k in 0..kv { if (rnd(&mut seed) % 1000) as f64 / 1000.0 < density { m |= 1 << k; } } m }).collect();
    let slices: Vec<(usize, bool)> = (0..pages).flat_map(|p| { let m = mask[p]; (0..kv).filter(move |&k| m >> k & 1 == 1).map(move |k| { let a_only = k % 2 == 0 && (m >> (k + 1)) & 1 == 0; (p * kv * SL + k * SL, a_only) }) }).collect();
    let n = slices.len();
    let bytes = n * SL;
    for round in 0..3 {
        for variant in ["asc-pf", "desc-pf", "asc-nopf", "desc-nopf", "all-pf"] {
            let (desc, pf) = (variant.starts_with("desc"), variant.ends_with("-pf"));
            let t = Instant::now();
            let mut tot = _mm256_setzero_si256();
            // two threads, halves of the list like the blocks
            let base = buf.as_ptr() as usize;
            let list: Vec<(usize, bool)> = if variant == "all-pf" { (0..pages * kv).map(|i| (i * SL, false)).collect() } else { slices.clone() };
            let ahead = 8;
            std::thread::scope(|s| {
                let hs: Vec<_> = list.chunks(list.len().div_ceil(2)).map(|part| s.spawn(move || unsafe {
                    let mut acc = _mm256_setzero_si256();
                    for (j, &(off, a_only)) in part.iter().enumerate() {
                        let pfp = if pf { part.get(j + ahead).map_or(std::ptr::null(), |&(o, _)| (base + o) as *const u8) } else { std::ptr::null() };
                        acc = _mm256_add_epi64(acc, sum_slice((base + off) as *const u8, desc && a_only, pfp));
                    }
                    _mm256_extract_epi64::<0>(acc) as u64
                })).collect();
                for h in hs { let x = h.join().unwrap(); tot = _mm256_add_epi64(tot, _mm256_set1_epi64x(x as i64)); }
            });
            let dt = t.elapsed().as_secs_f64();
            let b = if variant == "all-pf" { pages * kv * SL } else { bytes };
            println!("round {round} {variant:10} {:.2} ms  {:.1} GB/s (of {} MB)  chk {}", dt * 1e3, b as f64 / dt / 1e9, b >> 20, _mm256_extract_epi64::<0>(tot) & 0xff);
        }
    }
}

//! Planned workspaces: buffers sized when a step is planned and reused by every step.

/// Lengthens `v` to at least `n` elements (new ones `T::default()`); never shortens it, so a
/// buffer sized for the largest shape is not reallocated by smaller ones.
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// A zeroed vector of `n` elements whose memory the kernel is asked to back with transparent
/// huge pages (Linux, `madvise(MADV_HUGEPAGE)` before any of it is touched), for the cache's
/// large arrays: the decode passes stream K, V, sketch and statistics rows page by page, and
/// with 4 KiB pages every 4 KiB of them is another TLB entry. The allocation is zeroed by the
/// allocator (lazily committed, as `vec![0; n]` is). Advisory only: elsewhere, or where the
/// kernel declines, it is a plain zeroed vector.
pub fn huge_zeroed<T: bytemuck::Zeroable + Clone>(n: usize) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    if bytes < 2 * HUGE {
        return vec![T::zeroed(); n];
    }
    let layout = std::alloc::Layout::array::<T>(n).expect("capacity overflow");
    // SAFETY: the layout has a nonzero size (at least 4 MiB).
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    #[cfg(target_os = "linux")]
    {
        let start = (p as usize).div_ceil(HUGE) * HUGE;
        let end = (p as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside this allocation; the advice changes no contents
            // and its failure is harmless.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    // SAFETY: allocated by the global allocator with the layout of a `Vec<T>` of capacity
    // `n`; all-zero bytes are a valid `T` (`Zeroable`), so all `n` elements are initialised.
    unsafe { Vec::from_raw_parts(p, n, n) }
}

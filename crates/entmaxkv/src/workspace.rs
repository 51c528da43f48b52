//! Planned workspaces: buffers sized when a step is planned and reused by every step.

/// Lengthens `v` to at least `n` elements (new ones `T::default()`); never shortens it, so a
/// buffer sized for the largest shape is not reallocated by smaller ones.
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

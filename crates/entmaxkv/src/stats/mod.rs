//! stats stage (see crate docs).

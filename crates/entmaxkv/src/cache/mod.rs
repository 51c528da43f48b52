//! cache stage (see crate docs).

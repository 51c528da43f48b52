//! certificate stage (see crate docs).

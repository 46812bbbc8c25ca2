//! Where outputs and dead letters go.

pub mod kafka;

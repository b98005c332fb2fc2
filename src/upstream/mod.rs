//! The upstream room: per-generation snapshots and the pinned connector.

mod connector;

pub use connector::*;

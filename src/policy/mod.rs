//! The policy room: host names, pins, the pinset file and what it allows.

pub mod host;
pub mod load;
pub mod pin;

pub use load::*;

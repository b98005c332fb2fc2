//! The control plane: reloads, the admin listener, metrics, the drift view.

pub mod admin;
pub mod drift;
pub mod metrics;
pub mod reload;

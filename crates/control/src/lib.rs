//! The control plane: reloads, the admin listener, metrics, the drift view,
//! and what verdicts teach: key continuity, learned chains, failure reports.

#![forbid(unsafe_code)]

pub mod admin;
pub mod continuity;
pub mod drift;
pub mod learn;
pub mod live;
pub mod logs;
pub mod metrics;
pub mod readiness;
pub mod reload;
pub mod reports;
pub mod telemetry;

pub use live::Live;
pub use readiness::Readiness;
pub use reload::Reloader;

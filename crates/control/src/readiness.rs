//! What `/readyz` reports: the pinset is loaded (a [`Readiness`] only
//! exists once it is), the proxy listener serves, the pod CA is written
//! for the app, and no shutdown has begun.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    ca_written: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    pub fn set_ca_written(&self) {
        self.ca_written.store(true, Ordering::Release);
    }

    /// Shutdown began: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.ca_written.load(Ordering::Acquire)
            && !self.is_draining()
    }
}

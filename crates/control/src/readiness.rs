//! What `/readyz` reports: a pinset is in force, the proxy listener
//! serves, the pod CA is written for the app, and no shutdown has begun.
//!
//! Without `--pinset-key` a [`Readiness`] only exists once the pinset is
//! loaded. With a key, the sidecar starts with nothing in force and waits
//! for a validly signed pinset; meanwhile it is not ready and says why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    ca_written: AtomicBool,
    draining: AtomicBool,
    /// Why no pinset is in force yet; `None` once one is.
    waiting: Mutex<Option<String>>,
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

    /// No pinset is in force, for the reason given (replacing the last).
    pub fn wait_for_pinset(&self, why: String) {
        *self.lock() = Some(why);
    }

    /// A pinset is in force (it stays so: later failures keep it).
    pub fn pinset_in_force(&self) {
        *self.lock() = None;
    }

    /// Why no pinset is in force, if none is.
    pub fn waiting_for_pinset(&self) -> Option<String> {
        self.lock().clone()
    }

    pub fn is_ready(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.ca_written.load(Ordering::Acquire)
            && !self.is_draining()
            && self.lock().is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

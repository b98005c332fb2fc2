//! The TLS room: the pin verifier, probes, certificate summaries, the pod CA.

#![forbid(unsafe_code)]

pub mod ca;
pub mod cert;
pub mod ct;
pub mod keyfile;
pub mod probe;
pub mod verdict;
pub mod verify;

//! The TLS room: the pin verifier, probes, certificate summaries, the pod CA.

pub mod ca;
pub mod cert;
pub mod keyfile;
pub mod probe;
pub mod verdict;
pub mod verify;

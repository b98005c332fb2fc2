//! Certificate Transparency and stapled OCSP for pinproxy — a pure room:
//! functions and types over DER bytes, a log list and a clock value the
//! caller passes in. No I/O, no sockets, no async, no metrics.
//!
//! ```text
//!  leaf DER ──► Leaf ─┬─► verify::check_embedded ─┐
//!  issuer  ──► Issuer ┤   (precert TBS rebuilt)    │
//!  TLS SCT list ──────┼─► verify::check_delivered ─┼─► policy::evaluate ─► CtReport
//!  OCSP staple ─► ocsp::check_staple ─► StapleReport ──(sct_list)───┘      (Verdict)
//!                                        (StapleVerdict, Refusal)
//!  log_list.json ─► LogList (or LogList::builtin())
//! ```
//!
//! - [`loglist`]: Chrome's v3 log list — logs, keys, operators, states,
//!   staleness (70 days).
//! - [`sct`]: the TLS encoding of SCT lists and what a log signs.
//! - [`cert`]: the leaf and its issuer (`x509-cert`), the precertificate
//!   TBS, must-staple.
//! - [`verify`]: each SCT against its log's key.
//! - [`policy`]: Chrome's CT policy over the verified SCTs; the verdicts.
//! - [`ocsp`]: stapled OCSP responses (`x509-ocsp`).
//! - [`key`]: keys and signatures (`ring`).
//!
//! A caller with a validated path (leaf, its issuer) and the handshake's
//! stapled OCSP bytes does:
//!
//! ```no_run
//! # fn f(leaf_der: &[u8], issuer_der: &[u8], ocsp: &[u8], now: rustls_pki_types::UnixTime)
//! #   -> Result<(), pinproxy_ct::cert::CertError> {
//! use pinproxy_ct::{cert::{Issuer, Leaf}, ocsp, policy, LogList};
//! let leaf = Leaf::parse(leaf_der)?;
//! let issuer = Issuer::from_cert_der(issuer_der)?;
//! let staple = ocsp::check_staple(&leaf, &issuer, Some(ocsp), now);
//! let delivered = policy::Delivered { tls: None, ocsp: staple.sct_list() };
//! let ct = policy::check(LogList::builtin(), &leaf, &issuer, delivered, now);
//! println!("CT: {ct}; OCSP: {staple}; refuse: {:?}", staple.refusal(leaf.must_staple()));
//! # Ok(()) }
//! ```
//!
//! Note on the built-in list: Google's log list page says Chrome's lists
//! "may not be used to facilitate CT enforcement in TLS clients other than
//! Chrome without explicit written permission from Chrome's CT team". The
//! format is used here; which list a deployment enforces with is its
//! operator's choice.

#![forbid(unsafe_code)]

mod builtin;
pub mod cert;
pub mod key;
pub mod loglist;
pub mod ocsp;
mod oid;
pub mod policy;
pub mod sct;
mod time;
pub mod verify;

pub use builtin::{BUILTIN_TIMESTAMP, BUILTIN_VERSION};
pub use loglist::{LogId, LogList, LogListError};
pub use policy::{CtReport, Verdict};
pub use time::{Instant, CLOCK_SKEW};

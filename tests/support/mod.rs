//! Test support: a PKI made with rcgen, real TLS upstreams on 127.0.0.1,
//! the proxy started in-process, and a small HTTP client that talks to it.
#![allow(dead_code)]

pub mod alpn;
mod binary;
mod client;
mod hostile;
pub mod netns;
mod pki;
pub mod pod;
pub mod proxy;
pub mod udp;
mod upstream;
mod volume;

// Each test binary uses a part of what these export.
#[allow(unused_imports)]
pub use binary::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use hostile::*;
#[allow(unused_imports)]
pub use pki::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use upstream::*;
#[allow(unused_imports)]
pub use volume::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};

use pinproxy::control::drift::Drift;
use pinproxy::control::metrics::Metrics;
use pinproxy::control::{Live, Reloader};
use pinproxy::policy::pin::Pin;
use pinproxy::tls::ca::Intercept;

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

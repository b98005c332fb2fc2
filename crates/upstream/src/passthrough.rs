//! Dialing passthrough traffic (docs/reference.md, "Passthrough"): plain TCP to
//! the address the request names, no TLS of ours. A name that passes by a
//! `passthrough:` pattern may go to any address it resolves to; one admitted by
//! a CIDR only to the addresses within it. pinproxy's own listeners are never a
//! target (loop guard); the private-address rule does not apply (reaching
//! in-cluster services is the point). The same plain connector dials unlisted
//! hosts' `http://` URLs, under the unlisted egress rules.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin as StdPin;
use std::task::{Context, Poll};

use super::budget::Socket;
use super::connector::Connector;
use super::dns::Share;
use super::error::{Failure, UpstreamError};
use http::Uri;
use hyper_util::rt::TokioIo;
use pinproxy_policy::host::Host;

/// The pools' connector for plain HTTP: passthrough traffic (exempt from
/// the private-address rule), or unlisted hosts' `http://` URLs (subject to
/// it, as every unlisted connection is).
#[derive(Clone, Debug)]
pub struct Plain {
    pub(super) connector: Connector,
    pub(super) unlisted: bool,
}

impl Connector {
    /// A plain TCP connection for passthrough traffic to `host:port`:
    /// `addrs` are the addresses admission already resolved (CIDR
    /// passthrough), else the host is resolved here.
    pub async fn dial_passthrough(
        &self,
        host: &Host,
        port: u16,
        addrs: Option<Vec<SocketAddr>>,
    ) -> Result<Socket, UpstreamError> {
        let addrs = match addrs {
            Some(a) => a,
            None => self.passthrough_addresses(host, port).await?,
        };
        let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| !self.is_own(a)).collect();
        if allowed.is_empty() {
            return Err(UpstreamError::new(
                Failure::PrivateAddress,
                host,
                "is pinproxy's own listener",
            ));
        }
        self.dial(host, &allowed).await
    }

    /// Whether a transparent connection whose first bytes name passthrough
    /// host `host` (the SNI: the app's claim) may be spliced to `orig`
    /// (where the app dialed: the fact). Only when `orig` lies in a
    /// `passthrough:` CIDR, or `host` resolves to `orig`'s address; else
    /// the name would open a raw tunnel to any address and port.
    /// `Err` says why not (a failed lookup included).
    pub async fn passthrough_destination(
        &self,
        host: &Host,
        orig: SocketAddr,
    ) -> Result<(), String> {
        let ip = orig.ip().to_canonical();
        if self.policy.passthrough.is_kept_out(ip) {
            return Err(format!(
                "passthrough host {host} was dialed at {orig}, the address of a pinned entry"
            ));
        }
        if self.policy.passthrough.by_address(ip).is_some() {
            return Ok(());
        }
        // A name the pinset lists: a lookup slot is held for it.
        let addrs = self
            .resolve(host, orig.port(), Share::Listed)
            .await
            .map_err(|e| e.detail)?;
        if addrs.iter().any(|a| a.ip().to_canonical() == ip) {
            return Ok(());
        }
        Err(format!(
            "passthrough host {host} was dialed at {orig}, which it does not resolve to and \
             no passthrough CIDR covers"
        ))
    }

    /// Where passthrough traffic to `host` may go: every resolved address
    /// when a name pattern (or an IP literal) admits it, else only those in
    /// a passthrough CIDR.
    async fn passthrough_addresses(
        &self,
        host: &Host,
        port: u16,
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        // Listed by name, it may take a reserved lookup slot; admitted by
        // the CIDR its addresses fall in, it is an unlisted name.
        let named = self.policy.passthrough.by_host(host).is_some();
        let share = if named {
            Share::Listed
        } else {
            Share::Unlisted
        };
        let mut addrs = self.resolve(host, port, share).await?;
        if named {
            // Never to a pinned entry's address, by any name.
            addrs.retain(|a| !self.policy.passthrough.is_kept_out(a.ip()));
            if addrs.is_empty() {
                return Err(UpstreamError::new(
                    Failure::PrivateAddress,
                    host,
                    "resolves only to the address of a pinned entry, which is reached pinned, by its name",
                ));
            }
            return Ok(addrs);
        }
        let inside: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.policy.passthrough.by_address(a.ip()).is_some())
            .collect();
        if inside.is_empty() {
            return Err(UpstreamError::new(
                Failure::PrivateAddress,
                host,
                "no longer resolves into a passthrough CIDR",
            ));
        }
        Ok(inside)
    }
}

impl tower_service::Service<Uri> for Plain {
    type Response = TokioIo<Socket>;
    type Error = UpstreamError;
    type Future = StdPin<Box<dyn Future<Output = Result<Self::Response, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (this, unlisted) = (self.connector.clone(), self.unlisted);
        Box::pin(async move {
            let raw = uri.host().unwrap_or_default();
            let host = Host::parse(raw).map_err(|e| UpstreamError {
                failure: Failure::Unreachable,
                host: raw.to_string(),
                detail: e.to_string(),
            })?;
            let port = uri.port_u16().unwrap_or(80);
            let tcp = if unlisted {
                this.dial_unlisted_plain(&host, port).await?
            } else {
                this.dial_passthrough(&host, port, None).await?
            };
            Ok(TokioIo::new(tcp))
        })
    }
}

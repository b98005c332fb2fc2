//! What the upstream room reports, through traits it owns. The control
//! plane implements them (metrics, the drift view, key continuity, learned
//! chains, failure reports), so this room names none of those — the same
//! wall [`Observer`] keeps one room down, between the verifier and
//! whoever listens to it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::TrustAnchor;

use pinproxy_policy::host::Host;
use pinproxy_policy::{HostPolicy, Policy};
use pinproxy_reason::Reason;
use pinproxy_tls::verify::Observer;

/// Where dials, handshakes, verdicts and requests are reported, across
/// generations.
pub trait Observe: Send + Sync + std::fmt::Debug {
    /// What generation `generation` of `policy` reports to. Called while
    /// its snapshot is built, which may never be published: nothing may
    /// be counted, set or created here.
    fn generation(
        &self,
        policy: &Arc<Policy>,
        generation: u64,
        provider: &Arc<CryptoProvider>,
        roots: &[TrustAnchor<'static>],
    ) -> Generation;

    /// A pinned handshake with `entry` (the pinset entry as written, or
    /// `unlisted`) completed after `took`.
    fn handshake_done(&self, entry: &str, took: Duration);

    /// A pinned handshake with `entry` failed for `reason`.
    fn handshake_failed(&self, entry: &str, reason: Reason);

    /// A pinned handshake with `entry` did not complete in time.
    fn handshake_timed_out(&self, entry: &str);

    /// Whether learn mode should dial `host:port` itself to see its chain
    /// (an unlisted tunnel carries TLS pinproxy cannot read). The slot is
    /// held until that probe ends.
    fn probe_due(&self, host: &Host, port: u16) -> Option<ProbeSlot>;
}

/// A learn-mode probe's place among those allowed at once: dropping it
/// frees the place.
pub type ProbeSlot = Box<dyn Send>;

/// What one generation reports to.
#[derive(Clone, Debug)]
pub struct Generation {
    /// Its verifier's verdicts and rejections.
    pub verdicts: Arc<dyn Observer>,
    /// Its requests' outcomes.
    pub requests: Arc<dyn Requests>,
}

/// Requests forwarded under one generation.
pub trait Requests: Send + Sync + std::fmt::Debug {
    /// A request under `entry` (`None`: an unlisted host) was answered.
    fn ok(&self, entry: Option<&HostPolicy>);
}

tokio::task_local! {
    /// The host and port a handshake dials: the verifier sees only the
    /// server name, and its verdict names only the pinset entry.
    static DIALING: (String, u16);
}

/// Runs the handshake `f` with `host:port` known to [`dialed`], so that
/// what observes its verdict (reports, key continuity, learned chains)
/// can name the host dialed.
pub(crate) async fn dialing<F: Future>(host: &Host, port: u16, f: F) -> F::Output {
    DIALING.scope((host.to_string(), port), f).await
}

/// The host and port being dialed, when called from within a verdict on a
/// handshake this room started.
pub fn dialed() -> Option<(String, u16)> {
    DIALING.try_with(Clone::clone).ok()
}

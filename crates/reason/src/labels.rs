//! The contract's label values besides refusal reasons (docs/reference.md,
//! "Metrics", "Failure reports"): one enum per label, each value spelled
//! once, here. `ALL` lists the values in the order the reference does, for
//! pre-creating series and for the test that holds the reference to them.
//!
//! The enums a release may extend are `#[non_exhaustive]`: a dashboard
//! must expect new values, never lose one.

use std::fmt;

use super::Reason;

macro_rules! labels {
    ($(
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$doc:meta])* $variant:ident => $label:literal, )*
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$doc])* $variant, )*
        }

        impl $name {
            /// Every value, in the reference's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

labels! {
    /// How a request or tunnel that was let through ended well:
    /// `pinproxy_requests_total{outcome}`. A refusal after admission is
    /// counted under its [`Reason`] instead ([`RequestOutcome::labels`]),
    /// only ever by the one function that counts refusals.
    pub enum RequestOutcome {
        /// Forwarded (an upstream answered).
        Ok => "ok",
        /// An unlisted host tunnelled (or spliced) as bytes.
        Tunnel => "tunnel",
        /// Relayed as it came under a `passthrough:` item.
        Passthrough => "passthrough",
        /// An unlisted host's `http://` URL relayed as plain HTTP (only
        /// listed hosts are upgraded to TLS).
        PlainHttp => "plain-http",
    }

    /// What became of one failure report: `pinproxy_reports_total{result}`.
    pub enum Delivery {
        /// The collector answered 2xx.
        Sent => "sent",
        /// Every attempt failed (or the collector refused it).
        Failed => "failed",
        /// The queue was full: the collector is slower than the failures.
        Dropped => "dropped",
        /// Over the rate limit for its host and outcome: never queued.
        Limited => "limited",
    }

    /// A place on a validated path (leaf first, trust anchor last):
    /// `pinproxy_upstream_chain_changes_total{position}`.
    pub enum Position {
        Leaf => "leaf",
        /// Every certificate between the leaf and the anchor, as one position.
        Intermediate => "intermediate",
        Anchor => "anchor",
    }

    /// How one pinset reload ended: `pinproxy_config_reloads_total{result}`.
    #[non_exhaustive]
    pub enum ReloadResult {
        /// A new generation is in force.
        Success => "success",
        /// The version on disk does not load (counted once per version), or
        /// a signed file has no valid serial.
        Failure => "failure",
        /// With `run --pinset-key`: the signature file is missing, malformed
        /// or verifies with no configured key.
        BadSignature => "bad-signature",
        /// With `run --pinset-key`: validly signed, but its serial is below
        /// the one in force (or equal, with other content).
        Rollback => "rollback",
    }

    /// What the first bytes of a redirected connection were:
    /// `pinproxy_transparent_connections_total{protocol}`.
    #[non_exhaustive]
    pub enum TransparentProtocol {
        /// A TLS ClientHello.
        Tls => "tls",
        /// A TLS ClientHello offering Encrypted Client Hello, judged by its
        /// outer SNI (pinproxy holds no ECH keys).
        TlsEch => "tls-ech",
        /// A plain HTTP request.
        Http => "http",
        /// Anything else, nothing at all, or not judged yet.
        Other => "other",
    }

    /// What became of a redirected connection:
    /// `pinproxy_transparent_connections_total{outcome}`.
    #[non_exhaustive]
    pub enum TransparentOutcome {
        /// Terminated with the pod CA and forwarded over pinned connections.
        Intercepted => "intercepted",
        /// Spliced to its original destination as bytes.
        Spliced => "spliced",
        /// Plain HTTP, served by the forward path.
        Served => "served",
        /// Refused (a TLS alert, or closed), with the refusal counted under
        /// its reason.
        Refused => "refused",
        /// Nothing within the first-byte timeout, and no `passthrough:`
        /// CIDR holds its destination: closed.
        Silent => "silent",
        /// Closed, or stalled, before it could be judged.
        Closed => "closed",
        /// Its original destination is one of pinproxy's own listeners.
        Loop => "loop",
        /// No original destination: it was not redirected by the kernel.
        NotRedirected => "not-redirected",
    }

    /// Whether an interception leaf was made or reused:
    /// `pinproxy_intercept_leaf_certificates_total{result}`.
    pub enum LeafResult {
        Minted => "minted",
        Cached => "cached",
    }

    /// The `type` of a failure report.
    #[non_exhaustive]
    pub enum ReportType {
        /// A refused or report-mode handshake failure.
        PinFailure => "pin-failure",
    }
}

// === impl RequestOutcome ===

impl RequestOutcome {
    /// Every `outcome` label: the ones above, then the refusal reasons
    /// counted after admission. For pre-creating and forgetting series.
    pub fn labels() -> impl Iterator<Item = &'static str> {
        Self::ALL
            .iter()
            .map(|o| o.as_str())
            .chain(Reason::outcomes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No value is spelled twice within one label, and no request outcome
    /// shares a spelling with a reason (they are one label's values).
    #[test]
    fn values_are_distinct_per_label() {
        fn distinct(values: Vec<&str>) {
            let mut sorted = values.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), values.len(), "{values:?}");
        }
        distinct(RequestOutcome::labels().collect());
        distinct(Delivery::ALL.iter().map(|v| v.as_str()).collect());
        distinct(Position::ALL.iter().map(|v| v.as_str()).collect());
        distinct(ReloadResult::ALL.iter().map(|v| v.as_str()).collect());
        distinct(
            TransparentProtocol::ALL
                .iter()
                .map(|v| v.as_str())
                .collect(),
        );
        distinct(TransparentOutcome::ALL.iter().map(|v| v.as_str()).collect());
        distinct(LeafResult::ALL.iter().map(|v| v.as_str()).collect());
        assert_eq!(ReportType::PinFailure.to_string(), "pin-failure");
    }
}

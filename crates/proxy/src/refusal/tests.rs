//! Every reason, refused on every path, moves exactly the counters its row
//! of the `Reason` table declares — and nothing else in the registry.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

use super::{refuse, Refused, ERROR_HEADER};
use crate::tunnel::HANDSHAKE_FAILURE_ALERT;
use crate::{Body, Context, Limits};
use pinproxy_control::metrics::Metrics;
use pinproxy_control::telemetry::Telemetry;
use pinproxy_control::Live;
use pinproxy_reason::Reason;
use pinproxy_tls::ca::Intercept;
use pinproxy_upstream::{Options, Shared, Snapshot, Timeouts};

fn context() -> Arc<Context> {
    let metrics = Metrics::new();
    let telemetry = Telemetry::new(metrics.clone());
    let shared = Shared::new(Arc::new(telemetry.clone()), Options::default(), Vec::new());
    let yaml = "version: 1\ndefaults:\n  unlisted: allow\nhosts: {}\n";
    let now = time::OffsetDateTime::now_utc();
    let policy = pinproxy_policy::parse(yaml.as_bytes(), Path::new("."), now).unwrap();
    let snapshot = Snapshot::build(
        policy,
        pinproxy_tls::ct::LogListInForce::builtin(),
        1,
        &shared,
    )
    .unwrap();
    let (live, _publisher) = Live::new(snapshot, &telemetry);
    let provider = pinproxy_tls::provider();
    Arc::new(Context {
        live,
        metrics: metrics.clone(),
        limits: Limits::default(),
        timeouts: Timeouts::default(),
        intercept: Arc::new(
            Intercept::generate(provider.clone(), metrics.minted_leaves.clone(), 1).unwrap(),
        ),
        provider,
        refusal_logs: pinproxy_control::logs::LogLimiter::new(Duration::from_secs(10), 5),
        connections: Context::connection_slots(&Limits::default()),
        overload: Default::default(),
    })
}

/// The series that changed between two samplings, with how much.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// The four paths a client's connection takes, and how each answers a
/// refusal.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Absolute-form requests (`HTTP_PROXY`): an HTTP response.
    Forward,
    /// CONNECT: an HTTP response; a TLS alert (by rustls, or written into
    /// the byte tunnel) for a mismatched SNI.
    Connect,
    /// A redirected TLS connection: a TLS alert.
    TransparentTls,
    /// A redirected plain HTTP connection: an HTTP response.
    TransparentHttp,
}

const WAYS: [Way; 4] = [
    Way::Forward,
    Way::Connect,
    Way::TransparentTls,
    Way::TransparentHttp,
];

/// Answers `refused` the way `way` does, and checks what the client got.
async fn answer(way: Way, refused: Refused) {
    let reason = refused.reason();
    let http = |refused: Refused| async move {
        let resp: Response<Body> = refused.into();
        assert_eq!(Some(resp.status()), reason.status(), "{reason:?}");
        let header = resp
            .headers()
            .get(ERROR_HEADER)
            .map(|v| v.to_str().unwrap());
        assert_eq!(header, Some(reason.as_str()));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.starts_with(b"pinproxy: "), "{body:?}");
    };
    match way {
        Way::Connect if reason.status().is_none() => refused.close(),
        Way::TransparentTls => {
            let (mut app, mut ours) = tokio::io::duplex(64);
            refused.alert(&mut ours).await;
            let mut got = Vec::new();
            app.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, HANDSHAKE_FAILURE_ALERT, "{reason:?}");
        }
        Way::Forward | Way::Connect | Way::TransparentHttp => http(refused).await,
    }
}

/// Every reason a client can be refused with (an HTTP status, or a TLS
/// alert), on every path, before admission (where it can be) and after
/// admission under an entry: exactly the table's counters move, each by
/// one — `denied_total{reason}` if it declares `denied`,
/// `requests_total{host,outcome=reason}` if it declares `outcome` and the
/// request was admitted — and nothing else does (`tls_verify_failures`
/// included).
#[tokio::test]
async fn every_reason_on_every_path_moves_exactly_the_declared_counters() {
    let refusals: Vec<Reason> = Reason::ALL
        .iter()
        .copied()
        .filter(|r| r.status().is_some() || *r == Reason::SniMismatch)
        .collect();
    assert!(refusals.len() >= 13, "{refusals:?}");
    let mut walked = 0;
    for way in WAYS {
        for reason in &refusals {
            let counted = reason.counted();
            // The `tls` column (`pin-mismatch`'s too) is counted where a
            // handshake fails (`Metrics::handshake_failed`, walked in
            // control's tests), never by the refusal that follows: a
            // failed handshake is counted once however many requests it
            // refuses.
            for admitted in [None, Some("api.test")] {
                // A reason counted only under its entry is refused only
                // after admission.
                if admitted.is_none() && !counted.denied {
                    continue;
                }
                if *reason == Reason::SniMismatch
                    && !matches!(way, Way::Connect | Way::TransparentTls)
                {
                    continue;
                }
                let ctx = context();
                let before = ctx.metrics.samples();
                let refused = refuse(&ctx, *reason, admitted, "api.test", "why");
                answer(way, refused).await;
                let r = reason.as_str();
                let mut want = Vec::new();
                if counted.denied {
                    want.push((format!("pinproxy_denied_total{{reason={r:?}}}"), 1.0));
                }
                if let (true, Some(host)) = (counted.outcome, admitted) {
                    want.push((
                        format!("pinproxy_requests_total{{host={host:?},outcome={r:?}}}"),
                        1.0,
                    ));
                }
                assert!(!want.is_empty(), "{reason:?} on {way:?} counted nowhere");
                assert_eq!(
                    moved(&before, &ctx.metrics.samples()),
                    want,
                    "{reason:?} on {way:?}, admitted as {admitted:?}"
                );
                walked += 1;
            }
        }
    }
    assert!(walked > 4 * 13, "{walked}");
}

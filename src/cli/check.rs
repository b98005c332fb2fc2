//! `pinproxy check`: validate a pinset file (the loader the proxy uses);
//! `--live` also dials every exact host and judges its chain with the
//! proxy's own verdict function.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{small_runtime, Error};
use crate::policy::host::Host;
use crate::policy::pin::Pin;
use crate::policy::{self, CtMode, HostPolicy, Trust};
use crate::reason::Position;
use crate::tls::ct::{LogListInForce, PathChecks, Verdict as CtVerdict};
use crate::tls::probe;
use crate::tls::verdict::{judge, Outcome};

/// The loader's size limits, as `run` takes them (and the same
/// variables), so `check` and `sign` judge a file as the proxy will.
#[derive(Args, Debug, Clone, Copy)]
pub struct LoadCaps {
    /// As `run --max-pinset-bytes`.
    #[arg(long, env = "PINPROXY_MAX_PINSET_BYTES", default_value_t = policy::load::DEFAULT_MAX_BYTES)]
    pub max_pinset_bytes: u64,
    /// As `run --max-file-bytes`.
    #[arg(long, env = "PINPROXY_MAX_FILE_BYTES", default_value_t = policy::load::DEFAULT_MAX_FILE_BYTES)]
    pub max_file_bytes: u64,
    /// As `run --max-crl-entries`.
    #[arg(long, env = "PINPROXY_MAX_CRL_ENTRIES", default_value_t = policy::load::DEFAULT_MAX_CRL_ENTRIES)]
    pub max_crl_entries: usize,
}

impl LoadCaps {
    pub fn caps(self) -> policy::load::Caps {
        policy::load::Caps {
            pinset: self.max_pinset_bytes,
            file: self.max_file_bytes,
            crl_entries: self.max_crl_entries,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The pinset file.
    pub path: PathBuf,
    /// Also dial every exact host and report which pins its live chain
    /// matches, each labelled leaf, intermediate or anchor.
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub caps: LoadCaps,
    /// As `run --ct-log-list`: the CT log list `--live` judges SCTs with
    /// (default: the built-in one).
    #[arg(long, env = "PINPROXY_CT_LOG_LIST", value_name = "FILE")]
    pub ct_log_list: Option<PathBuf>,
    /// Also verify PATH.sig with this public key, as `run --pinset-key`
    /// does (repeatable or comma-separated: any one may verify), and
    /// require a valid serial.
    #[arg(long, value_name = "PUB", value_delimiter = ',')]
    pub key: Vec<PathBuf>,
}

pub fn check(args: &CheckArgs) -> Result<(), Error> {
    let caps = args.caps.caps();
    let policy = match load(args, caps) {
        Ok(p) => p,
        Err(Unusable::Signature(why)) => {
            outln!("{}: error: {why}", args.path.display());
            return Err(Error::Reported);
        }
        Err(Unusable::Load(e)) => return Err(reported(e)),
    };
    for w in &policy.warnings {
        outln!("{}: warning: {w}", args.path.display());
    }
    let n = policy.hosts.len();
    let hosts = if n == 1 { "host" } else { "hosts" };
    outln!("{}: ok ({n} {hosts})", args.path.display());
    if !args.live {
        return Ok(());
    }
    let list = match &args.ct_log_list {
        Some(path) => std::sync::Arc::new(
            LogListInForce::read(path, args.caps.max_file_bytes).map_err(Error::failed)?,
        ),
        None => LogListInForce::builtin(),
    };
    if policy.hosts.iter().any(|h| h.ct != CtMode::Off) {
        let now = rustls::pki_types::UnixTime::now();
        outln!("CT log list: {}", list.describe(now));
    }
    let rt = small_runtime()?;
    let now = time::OffsetDateTime::now_utc();
    let mut bad = 0;
    for entry in &policy.hosts {
        if !rt.block_on(live(entry, now, &list)) {
            bad += 1;
        }
    }
    if bad > 0 {
        Err(Error::Reported)
    } else {
        Ok(())
    }
}

/// Reads the file (with `--key`, and its signature from the same
/// version, verified first) and validates it.
fn load(args: &CheckArgs, caps: policy::load::Caps) -> Result<policy::Policy, Unusable> {
    let signed = !args.key.is_empty();
    let mut source = policy::load::read(&args.path, caps, signed).map_err(Unusable::Load)?;
    if signed {
        verify(args, &mut source).map_err(Unusable::Signature)?;
    }
    policy::load::load_source(&source, caps).map_err(Unusable::Load)
}

/// A load error as `check` reports it: each problem of an invalid file on
/// stdout, `PATH: error: …` ([`Error::Reported`]); a file not read at all
/// (missing, unreadable, over the size cap) fails the command, on stderr as
/// `pinproxy: …`. `sign` refuses with the same words.
pub(super) fn reported(e: policy::Error) -> Error {
    match e {
        policy::Error::Invalid { path, problems } => {
            for p in &problems {
                outln!("{}: error: {p}", path.display());
            }
            Error::Reported
        }
        e => Error::failed(e),
    }
}

/// Why `check` refuses a file.
enum Unusable {
    Load(policy::Error),
    /// With `--key`: the reason, `bad-signature: …` or `failure: …`.
    Signature(String),
}

/// Checks the signature and serial as the proxy would with no pinset in
/// force yet (a rollback needs the floor of a running sidecar).
fn verify(args: &CheckArgs, source: &mut policy::load::Source) -> Result<(), String> {
    let keys = crate::sign::read_keys(&args.key).map_err(|e| e.to_string())?;
    let accepted = crate::control::reload::check_signed(&keys, source, None)
        .map_err(|r| format!("{}: {r}", r.result_label()))?;
    outln!(
        "{}: signature ok (serial {}, key {}, sha256 {})",
        args.path.display(),
        accepted.serial(),
        accepted.key(),
        accepted.sha256()
    );
    Ok(())
}

/// Dials one entry and prints its verdict; `false` if something enforced
/// would break now.
async fn live(
    entry: &HostPolicy,
    now: time::OffsetDateTime,
    list: &std::sync::Arc<LogListInForce>,
) -> bool {
    if entry.name.starts_with('*') {
        outln!(
            "{}: skipped (a wildcard names no single server)",
            entry.name
        );
        return true;
    }
    let Ok(host) = Host::parse(&entry.name) else {
        return true;
    };
    let port = entry.ports.first().copied().unwrap_or(443);
    let anchors = match &entry.trust {
        Trust::WebPki => Some(crate::tls::verify::webpki_roots()),
        Trust::Bundle { anchors, .. } => Some(anchors.clone()),
        Trust::PinOnly => None,
    };
    let expect = probe::Expect {
        names: &entry.names,
        crls: entry.crls.clone(),
        client_cert: entry.client_cert.as_ref().map(|c| c.certified.clone()),
        ct: Some((list.clone(), entry.ct)),
    };
    let seen = match probe::probe_with(
        &host,
        port,
        entry.address,
        &host,
        anchors,
        expect,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            outln!("{}: UNREACHABLE: {e}", entry.name);
            return false;
        }
    };
    if let Some(e) = &seen.error {
        outln!("{}: UNTRUSTED: {e}", entry.name);
        return false;
    }
    let mut ok = true;
    // The verdict the proxy would reach on this chain (same function).
    let j = judge(Some(entry), now, &seen.paths);
    let validated = placed(&seen.paths);
    // The configured pins the live chain carries, leaf first, each with
    // its place on the path.
    let on_path = |set: &[Pin]| -> Vec<String> {
        validated
            .iter()
            .filter(|(p, _)| set.contains(p))
            .map(|(p, at)| format!("{p} ({})", at.as_str()))
            .collect()
    };
    let matching = on_path(&entry.pins);
    let verdict = match j.outcome {
        Outcome::Pass => format!("ok, matches {}", matching.join(", ")),
        Outcome::PassPinsExpired if !matching.is_empty() => {
            format!("ok, matches {}", matching.join(", "))
        }
        Outcome::PassPinsExpired => "MISMATCH (pins expired: not enforced)".into(),
        Outcome::ReportedMismatch => "MISMATCH (report mode: would be counted, not blocked)".into(),
        Outcome::Mismatch | Outcome::ExpiredPinOnly => {
            ok = false;
            "MISMATCH: requests would be refused".into()
        }
        Outcome::PassUnpinned => "ok (unpinned)".into(),
    };
    if !matching.is_empty() {
        outln!("{}: {verdict}", entry.name);
    } else {
        let live: Vec<String> = validated
            .iter()
            .map(|(p, at)| format!("{p} ({})", at.as_str()))
            .collect();
        outln!(
            "{}: {verdict}; live chain pins: {}",
            entry.name,
            live.join(", ")
        );
    }
    match j.next_pins_matched {
        None => {}
        Some(false) => outln!(
            "{}: next_pins: MISMATCH — the live chain carries none of next_pins",
            entry.name
        ),
        Some(true) => outln!(
            "{}: next_pins: ok, matches {}",
            entry.name,
            on_path(&entry.next_pins).join(", ")
        ),
    }
    for line in rotation(entry, j.next_pins_matched) {
        outln!("{}: rotation: {line}", entry.name);
    }
    if let Some((line, fine)) = client_auth(entry, &seen.client_auth) {
        outln!("{}: client certificate: {line}", entry.name);
        ok &= fine;
    }
    if let Some(checks) = &seen.checks {
        for (line, fine) in transparency(checks) {
            outln!("{}: {line}", entry.name);
            ok &= fine;
        }
    }
    ok
}

/// The `CT:` line (unless `ct: off`) and, when the server stapled an OCSP
/// response or the leaf is must-staple, the `OCSP:` line — each with what
/// the proxy would do; `false`: requests would be refused.
fn transparency(c: &PathChecks) -> Vec<(String, bool)> {
    let refusal = c.refusal();
    let refuses = |r: crate::reason::Reason| refusal.as_ref().is_some_and(|x| x.reason() == r);
    let mut out = Vec::new();
    if let Some(verdict) = c.ct_verdict() {
        let line = format!("CT: {}", c.ct_line());
        out.push(match (c.mode, verdict) {
            (_, CtVerdict::Ok) => (line, true),
            (CtMode::Enforce, _) if refuses(crate::reason::Reason::CtPolicy) => (
                format!("{line} — ct: enforce: requests would be refused (ct-policy)"),
                false,
            ),
            (CtMode::Enforce, _) => (format!("{line} — ct: enforce acts as report"), true),
            _ => (format!("{line} (ct: report: counted, not refused)"), true),
        });
    }
    if c.stapled || c.must_staple {
        let must = if c.must_staple {
            " (must-staple leaf)"
        } else {
            ""
        };
        let line = format!("OCSP: {}{must}", c.staple_line());
        out.push(match &refusal {
            Some(r) if r.reason() != crate::reason::Reason::CtPolicy => (
                format!("{line} — requests would be refused ({})", r.reason()),
                false,
            ),
            _ => (line, true),
        });
    }
    out
}

/// Every pin on the validated paths (leaf first) with its place: the leaf,
/// an intermediate, the trust anchor; ordered leaf, intermediates, anchors,
/// each once. Under pin-only the one path is the leaf alone. A server that
/// sends its root along gets a path with the root twice, as presented and
/// as the anchor (same key): it is the anchor, not an intermediate.
fn placed(paths: &[Vec<Pin>]) -> Vec<(Pin, Position)> {
    let paths: Vec<Vec<Pin>> = paths
        .iter()
        .map(|path| {
            let mut path = path.clone();
            path.dedup();
            path
        })
        .collect();
    let mut out: Vec<(Pin, Position)> = Vec::new();
    for want in Position::ALL {
        for path in &paths {
            let last = path.len().saturating_sub(1);
            for (i, pin) in path.iter().enumerate() {
                let at = match i {
                    0 => Position::Leaf,
                    i if i == last => Position::Anchor,
                    _ => Position::Intermediate,
                };
                if at == *want && !out.iter().any(|(p, _)| p == pin) {
                    out.push((*pin, at));
                }
            }
        }
    }
    out
}

/// Whether the server asked for a client certificate and how the handshake
/// with the entry's (or without one) ended; `None` when nobody asked and
/// none is configured. `false`: requests would fail.
fn client_auth(entry: &HostPolicy, seen: &probe::ClientAuth) -> Option<(String, bool)> {
    let mine = entry
        .client_cert
        .as_ref()
        .map(|c| format!("{} ({})", c.subject, c.pin));
    Some(match (seen.requested, &mine, &seen.refused) {
        (false, None, _) => return None,
        (false, Some(_), _) => (
            "configured, but the server did not ask for one (not presented)".into(),
            true,
        ),
        (true, Some(me), None) => (
            format!("the server asked for one; the handshake presenting {me} succeeded"),
            true,
        ),
        (true, Some(me), Some(why)) => (
            format!("REFUSED — the server asked for one and refused {me}: {why}"),
            false,
        ),
        (true, None, None) => (
            "the server asked for one and accepted the connection without (none configured)".into(),
            true,
        ),
        (true, None, Some(why)) => (
            format!(
                "REQUIRED — the server asked for one and refused the connection without: {why}; \
                 add client_cert to this entry"
            ),
            false,
        ),
    })
}

/// The two questions of a key rotation, answered for one entry with
/// `next_pins` (none without): may `next_pins` replace `pins` now, and may
/// the server move to its next key now. The order that cannot break is:
/// new key into `pins` (beside the old), server switches, old key out.
fn rotation(entry: &HostPolicy, next_matched: Option<bool>) -> Vec<String> {
    let Some(next_matched) = next_matched else {
        return Vec::new();
    };
    let promote = if next_matched {
        "safe to promote next_pins now: yes — the live chain carries one of them".to_string()
    } else {
        "safe to promote next_pins now: no — the live chain carries none of them, so \
         promoting would refuse this host; wait until the server presents the next key"
            .to_string()
    };
    let missing: Vec<String> = entry
        .next_pins
        .iter()
        .filter(|p| !entry.pins.contains(p))
        .map(|p| p.to_string())
        .collect();
    let switch = if missing.is_empty() {
        "safe to switch the server to its next key: yes — every next_pin is already in pins"
            .to_string()
    } else {
        format!(
            "safe to switch the server to its next key: no — add {} to pins (beside the \
             current ones) first, or the switch refuses this host",
            missing.join(", ")
        )
    };
    vec![promote, switch]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_pins_are_labelled_and_ordered_leaf_to_anchor() {
        let pin = |b: u8| Pin::from_bytes([b; 32]);
        // Two paths (a cross-signed intermediate): the leaf once, both
        // intermediates, both anchors.
        let paths = vec![
            vec![pin(1), pin(2), pin(3)],
            vec![pin(1), pin(4), pin(5), pin(6)],
        ];
        let got: Vec<(u8, &str)> = placed(&paths)
            .iter()
            .map(|(p, at)| {
                let n = (1..=6).find(|n| pin(*n) == *p).unwrap();
                (n, at.as_str())
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "leaf"),
                (2, "intermediate"),
                (4, "intermediate"),
                (5, "intermediate"),
                (3, "anchor"),
                (6, "anchor"),
            ]
        );
        assert_eq!(placed(&[vec![pin(9)]]), vec![(pin(9), Position::Leaf)]);
    }

    #[test]
    fn a_root_the_server_sends_along_is_the_anchor() {
        // webpki's path for a server sending leaf + its root: the root as
        // presented, then the same root (same key) as the trust anchor.
        let pin = |b: u8| Pin::from_bytes([b; 32]);
        assert_eq!(
            placed(&[vec![pin(1), pin(3), pin(3)]]),
            vec![(pin(1), Position::Leaf), (pin(3), Position::Anchor)]
        );
        assert_eq!(
            placed(&[vec![pin(1), pin(2), pin(3), pin(3)]]),
            vec![
                (pin(1), Position::Leaf),
                (pin(2), Position::Intermediate),
                (pin(3), Position::Anchor)
            ]
        );
    }
}

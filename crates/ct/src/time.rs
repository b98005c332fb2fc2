//! Instants as this crate compares them: milliseconds since the Unix
//! epoch (an SCT's own unit), made from `rustls_pki_types::UnixTime` (what
//! a rustls verifier is handed) or from RFC 3339 text (the log list).

use std::fmt;
use std::time::Duration;

use rustls_pki_types::UnixTime;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Clock skew tolerated for a time that should not be in the future: an
/// SCT's timestamp, an OCSP response's thisUpdate. Five minutes, as
/// OpenSSL uses for both (`SCT_CLOCK_DRIFT_TOLERANCE`, and the default
/// `-validity_period` of `OCSP_check_validity`).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

// === impl Instant ===

impl Instant {
    pub fn from_unix(t: UnixTime) -> Self {
        Instant(t.as_secs().saturating_mul(1000))
    }

    pub fn from_unix_duration(d: Duration) -> Self {
        Instant(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// RFC 3339 text (the log list's timestamps). Instants before 1970 are
    /// refused: nothing in CT predates it.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        u64::try_from(ms).ok().map(Instant)
    }

    pub fn plus(self, d: Duration) -> Self {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Whole days from `self` to `later` (0 if `later` is earlier).
    pub fn days_until(self, later: Instant) -> u64 {
        later.0.saturating_sub(self.0) / 86_400_000
    }

    pub fn as_unix(self) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_millis(self.0))
    }
}

/// RFC 3339, UTC, to the second (`2025-05-05T12:54:12Z`).
impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = i64::try_from(self.0 / 1000).unwrap_or(i64::MAX);
        match OffsetDateTime::from_unix_timestamp(secs) {
            Ok(t) => {
                let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
                let (hh, mm, ss) = (t.hour(), t.minute(), t.second());
                write!(f, "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
            }
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_refusals() {
        let t = Instant::parse_rfc3339("2025-05-05T12:54:12Z").expect("parses");
        assert_eq!(t, Instant(1_746_449_652_000));
        assert_eq!(t.to_string(), "2025-05-05T12:54:12Z");
        assert_eq!(
            Instant::parse_rfc3339("2025-05-05T12:54:12.5+00:00"),
            Some(Instant(1_746_449_652_500))
        );
        assert_eq!(Instant::parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(Instant::parse_rfc3339("yesterday"), None);
        assert_eq!(
            t.days_until(t.plus(Duration::from_secs(70 * 86_400 - 1))),
            69
        );
        assert_eq!(t.plus(Duration::from_secs(1)).days_until(t), 0);
    }
}

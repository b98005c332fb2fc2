//! Host names as pinproxy compares them.
//!
//! Every spelling of a host that reaches the policy — a pinset key, an
//! absolute-form URL, a CONNECT target, a TLS SNI — goes through [`Host::parse`]
//! first, so `API.example.com.` and `api.example.com` are one entry and
//! ambiguous spellings (`0x7f.1`, `2130706433`, non-ASCII dots) are refused
//! instead of silently missing the pinset (curl CVE-2022-30115, -42916).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A normalized host: a lowercase DNS name without trailing dot, or an IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("empty host name")]
    Empty,
    #[error("host name contains non-ASCII characters; write IDNs as A-labels (xn--…)")]
    NonAscii,
    #[error("host name contains an invalid character {0:?}")]
    InvalidChar(char),
    #[error("host name has an empty label")]
    EmptyLabel,
    #[error("host name label longer than 63 bytes")]
    LabelTooLong,
    #[error("host name longer than 253 bytes")]
    TooLong,
    #[error("ambiguous numeric host {0:?}: write IPv4 addresses as four decimal octets")]
    NonCanonicalIp(String),
    #[error("invalid IPv6 literal")]
    InvalidIpv6,
}

// === impl Host ===

impl Host {
    /// Parses a host as it appears in a URL authority, a CONNECT target or
    /// a pinset key: `[v6]` literals, dotted-quad IPv4, or a DNS name.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::Empty);
        }
        if !raw.is_ascii() {
            return Err(Error::NonAscii);
        }
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(Error::InvalidIpv6)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::from_ip(IpAddr::V6(ip)))
                .map_err(|_| Error::InvalidIpv6);
        }
        if raw.contains(':') {
            // A bare IPv6 (as in a pinset key or SNI-less literal).
            return raw
                .parse::<Ipv6Addr>()
                .map(|ip| Host::from_ip(IpAddr::V6(ip)))
                .map_err(|_| Error::InvalidChar(':'));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw);
        if name.is_empty() {
            return Err(Error::Empty);
        }
        if name.len() > 253 {
            return Err(Error::TooLong);
        }
        let lower = name.to_ascii_lowercase();
        for label in lower.split('.') {
            if label.is_empty() {
                return Err(Error::EmptyLabel);
            }
            if label.len() > 63 {
                return Err(Error::LabelTooLong);
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(Error::InvalidChar(c));
            }
        }
        // WHATWG URL rules: a host whose last label is numeric is an IPv4
        // address. Only the canonical dotted-quad form is accepted; forms
        // such as `127.1`, `0x7f.0.0.1` or `2130706433` are refused, since
        // resolvers disagree about them.
        let last = lower.rsplit('.').next().unwrap_or_default();
        if is_numeric_label(last) {
            return match lower.parse::<Ipv4Addr>() {
                Ok(ip) if ip.to_string() == lower => Ok(Host::Ip(IpAddr::V4(ip))),
                _ => Err(Error::NonCanonicalIp(raw.to_string())),
            };
        }
        Ok(Host::Name(lower))
    }

    /// An IP host in canonical form: `::ffff:a.b.c.d` *is* `a.b.c.d` (the
    /// kernel connects one to the other), so both spell one entry.
    pub fn from_ip(ip: IpAddr) -> Self {
        Host::Ip(ip.to_canonical())
    }

    /// The form used in a URL authority (`[::1]` for IPv6).
    pub fn authority_form(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }
}

fn is_numeric_label(label: &str) -> bool {
    if let Some(hex) = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        return hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    !label.is_empty() && label.chars().all(|c| c.is_ascii_digit())
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    #[test]
    fn case_and_trailing_dot_normalize() {
        assert_eq!(
            Host::parse("API.Example.COM.").unwrap(),
            name("api.example.com")
        );
        assert_eq!(
            Host::parse("api.example.com").unwrap(),
            name("api.example.com")
        );
        assert_eq!(Host::parse("a.b.").unwrap(), Host::parse("A.B").unwrap());
        // Only one trailing dot is ignored.
        assert_eq!(Host::parse("a.b.."), Err(Error::EmptyLabel));
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            Host::parse("127.0.0.1").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("[::1]").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("::1").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        for bad in [
            "2130706433",
            "0x7f.1",
            "127.1",
            "0x7f000001",
            "127.000.0.1",
            "1.2.3.4.5",
        ] {
            assert!(
                matches!(Host::parse(bad), Err(Error::NonCanonicalIp(_))),
                "{bad} must be refused"
            );
        }
        assert_eq!(Host::parse("[::1"), Err(Error::InvalidIpv6));
        assert_eq!(
            Host::parse("[::ffff:203.0.113.7]").unwrap(),
            Host::parse("203.0.113.7").unwrap()
        );
    }

    #[test]
    fn refuses_bad_characters() {
        assert_eq!(Host::parse("a\u{3002}b"), Err(Error::NonAscii));
        assert_eq!(Host::parse("exa mple.com"), Err(Error::InvalidChar(' ')));
        assert_eq!(Host::parse("a@b.com"), Err(Error::InvalidChar('@')));
        assert_eq!(Host::parse("."), Err(Error::Empty));
        assert_eq!(Host::parse(""), Err(Error::Empty));
        assert_eq!(Host::parse("a..b"), Err(Error::EmptyLabel));
    }
}

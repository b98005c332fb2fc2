//! `names:` (docs/reference.md, "Host fields"): the SANs a server's certificate
//! must carry instead of the host name — DNS names, URI SANs, SPIFFE IDs exact
//! or by prefix — parsed and normalized.

use std::fmt;

use super::Host;

/// One of `names:`: a SAN the server's certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// A DNS name, matched with the certificate's own wildcard rules (a
    /// certificate for `*.svc.example` carries `api.svc.example`).
    Dns(String),
    /// A URI SAN, exactly (scheme and authority compared case-insensitively).
    Uri(String),
    /// `…/*`: a URI SAN starting with this prefix (which ends in `/`) and
    /// going on — `spiffe://example.org/*` is any workload of the trust
    /// domain `example.org`, never `spiffe://example.org.evil/…`.
    UriPrefix(String),
}

/// Why a `names:` item was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("{0:?} is neither a DNS name nor a URI (scheme://…)")]
    Neither(String),
    #[error(
        "{0:?}: names are matched against the certificate, whose own wildcard rules apply; \
         write a concrete name"
    )]
    Wildcard(String),
    #[error("{0:?}: IP addresses are not supported in names (the host itself is checked without names:)")]
    Ip(String),
    #[error("{0:?}: a `*` may only end a URI, as `/*` (a prefix of whole path segments)")]
    UriWildcard(String),
    #[error("{0:?} is not a valid SPIFFE ID: {1}")]
    Spiffe(String, &'static str),
}

impl Name {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        if raw.contains("://") {
            return uri_name(raw);
        }
        if raw.contains('*') {
            return Err(NameError::Wildcard(raw.into()));
        }
        match Host::parse(raw) {
            Ok(Host::Name(n)) if rustls_pki_types::DnsName::try_from(n.as_str()).is_ok() => {
                Ok(Name::Dns(n))
            }
            Ok(Host::Ip(_)) => Err(NameError::Ip(raw.into())),
            _ => Err(NameError::Neither(raw.into())),
        }
    }

    /// Whether a URI SAN the certificate presents is this name.
    pub fn matches_uri(&self, presented: &str) -> bool {
        let Some(presented) = normalize_uri(presented) else {
            return false;
        };
        match self {
            Name::Dns(_) => false,
            Name::Uri(u) => presented == *u,
            Name::UriPrefix(p) => presented.len() > p.len() && presented.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Dns(n) | Name::Uri(n) => f.write_str(n),
            Name::UriPrefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A URI name: `scheme://authority/path`, exact or ending in `/*`.
fn uri_name(raw: &str) -> Result<Name, NameError> {
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NameError::Neither(raw.into()));
    }
    let (body, prefix) = match raw.strip_suffix('*') {
        Some(body) if body.ends_with('/') => (body, true),
        Some(_) => return Err(NameError::UriWildcard(raw.into())),
        None => (raw, false),
    };
    if body.contains('*') {
        return Err(NameError::UriWildcard(raw.into()));
    }
    let Some(uri) = normalize_uri(body) else {
        return Err(NameError::Neither(raw.into()));
    };
    if uri.starts_with("spiffe://") {
        spiffe(&uri, prefix).map_err(|why| NameError::Spiffe(raw.into(), why))?;
    }
    Ok(if prefix {
        Name::UriPrefix(uri)
    } else {
        Name::Uri(uri)
    })
}

/// The SPIFFE ID rules (spiffe.io, "SPIFFE-ID"): a lowercase trust domain
/// of `[a-z0-9.-_]`, a path of non-empty segments of `[A-Za-z0-9.-_]`, no
/// `.`/`..` segment, no query, fragment, port or userinfo. `prefix`: `id`
/// ends in the `/` before a `*`.
fn spiffe(id: &str, prefix: bool) -> Result<(), &'static str> {
    let rest = &id["spiffe://".len()..];
    let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
    if td.is_empty() {
        return Err("the trust domain is empty");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err("a trust domain is lowercase letters, digits, '-', '.' and '_' only");
    }
    let path = if prefix {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if path.is_empty() {
        return if prefix {
            Ok(())
        } else {
            Err("a workload's ID has a path; write spiffe://<trust-domain>/* for any workload of the trust domain")
        };
    }
    for seg in path.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("a path segment is empty, '.' or '..'");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err("a path segment is letters, digits, '-', '.' and '_' only");
        }
    }
    Ok(())
}

/// `scheme://authority…` with scheme and authority lowercased (RFC 3986
/// §6.2.2.1: they are case-insensitive; the path is not). `None` if it is
/// not of that shape.
pub fn normalize_uri(raw: &str) -> Option<String> {
    let (scheme, rest) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some(format!(
        "{}://{}{tail}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    ))
}

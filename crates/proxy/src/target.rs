//! Request targets as clients send them: absolute-form URLs
//! (`http://host[:port]/path`, through `HTTP_PROXY`) and CONNECT authorities
//! (`host:port`). Each is parsed once per request into a [`Target`]; the
//! URL's authority decides the host, never `Host` (RFC 9112 §3.2.2), and
//! userinfo is refused rather than allowed to change it.

use http::uri::{Authority, Scheme};
use http::{Request, Uri};

use pinproxy_policy::host::{self, Host};
use pinproxy_policy::Target;

/// Why a request target was refused (400 `bad-request`).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("request target must be in absolute form (http://host/path): send requests through HTTP_PROXY")]
    NotAbsolute,
    #[error("unsupported scheme {0:?}")]
    Scheme(String),
    #[error("absolute-form URL has no host")]
    NoHost,
    #[error("CONNECT target must be host:port")]
    NotAuthority,
    #[error("CONNECT target needs a port (host:port)")]
    NoPort,
    #[error("userinfo (user@host) is not allowed in the request target")]
    Userinfo,
    #[error("invalid host {raw:?}: {source}")]
    Host { raw: String, source: host::Error },
    #[error("empty port")]
    EmptyPort,
    #[error("port 0")]
    PortZero,
    #[error("invalid request target: {0}")]
    Invalid(#[source] http::Error),
}

impl From<http::uri::InvalidUri> for TargetError {
    fn from(e: http::uri::InvalidUri) -> Self {
        TargetError::Invalid(e.into())
    }
}

/// Validates an absolute-form request target (`http://host[:port]/path`).
pub fn parse_absolute(uri: &Uri) -> Result<Target, TargetError> {
    let scheme = uri.scheme().ok_or(TargetError::NotAbsolute)?;
    // Plain-HTTP URLs are upgraded: pinproxy always speaks TLS upstream.
    if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
        return Err(TargetError::Scheme(scheme.to_string()));
    }
    let default_port = 443;
    let authority = uri.authority().ok_or(TargetError::NoHost)?;
    let (host, port) = split_authority(authority)?;
    // Plain-HTTP clients say port 80: pinproxy upgrades to TLS on 443.
    let port = match port {
        None => default_port,
        Some(80) if *scheme == Scheme::HTTP => 443,
        Some(p) => p,
    };
    Ok(Target { host, port })
}

/// Splits and validates an authority: no userinfo, a valid host, a port in
/// range if present.
pub fn split_authority(authority: &Authority) -> Result<(Host, Option<u16>), TargetError> {
    let raw = authority.as_str();
    if raw.contains('@') {
        return Err(TargetError::Userinfo);
    }
    let host = Host::parse(authority.host()).map_err(|source| TargetError::Host {
        raw: authority.host().to_string(),
        source,
    })?;
    let port = match authority.port() {
        None => {
            if raw.ends_with(':') {
                return Err(TargetError::EmptyPort);
            }
            None
        }
        Some(p) => match p.as_u16() {
            0 => return Err(TargetError::PortZero),
            n => Some(n),
        },
    };
    Ok((host, port))
}

/// Validates a CONNECT target: authority form `host:port`, nothing else.
pub fn parse_connect<B>(req: &Request<B>) -> Result<Target, TargetError> {
    let uri = req.uri();
    if uri.scheme().is_some()
        || uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(TargetError::NotAuthority);
    }
    let authority = uri.authority().ok_or(TargetError::NotAuthority)?;
    let (host, port) = split_authority(authority)?;
    let port = port.ok_or(TargetError::NoPort)?;
    Ok(Target { host, port })
}

/// `HOST[:PORT]` as an operator types it (`pin --connect`), port 443 by default.
pub fn parse_host_port(s: &str) -> Result<(Host, u16), TargetError> {
    let uri: Uri = format!("https://{s}/").parse()?;
    let authority = uri.authority().ok_or(TargetError::NoHost)?;
    let (host, port) = split_authority(authority)?;
    Ok((host, port.unwrap_or(443)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Result<(String, u16), TargetError> {
        parse_absolute(&s.parse::<Uri>().unwrap()).map(|t| (t.host.to_string(), t.port))
    }

    #[test]
    fn absolute_form_targets() {
        assert_eq!(
            target("http://API.Example.com./x").unwrap(),
            ("api.example.com".into(), 443)
        );
        assert_eq!(
            target("http://api.example.com:80/x").unwrap(),
            ("api.example.com".into(), 443)
        );
        assert_eq!(
            target("http://api.example.com:8443/x").unwrap(),
            ("api.example.com".into(), 8443)
        );
        assert_eq!(
            target("https://api.example.com/x").unwrap(),
            ("api.example.com".into(), 443)
        );
        assert_eq!(target("http://[::1]:8443/").unwrap(), ("::1".into(), 8443));
        assert!(target("/relative").is_err());
        assert!(target("http://user@api.example.com/").is_err());
        assert!(target("http://0x7f.1/").is_err());
        assert!(target("http://2130706433/").is_err());
        assert!(target("ftp://api.example.com/").is_err());
    }
}

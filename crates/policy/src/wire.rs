//! The pinset file's YAML shape. `deny_unknown_fields` everywhere: a typo
//! such as `report_onyl` is a load error, never a silently ignored key.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::Deserialize;

use super::identity::CrlPolicy;
use super::{CtMode, Mode, Unlisted, UpstreamProtocol};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWire {
    pub(super) version: u32,
    /// docs/reference.md, "Top level": required in a signed pinset.
    #[serde(default)]
    pub(super) serial: Option<u64>,
    #[serde(default)]
    pub(super) defaults: DefaultsWire,
    /// `None`: no `hosts:` key at all — an error, never an empty pinset
    /// (with `unlisted: allow` that would silently drop every pin).
    /// `hosts:` with no value or `hosts: {}` is an explicit empty pinset.
    #[serde(default, deserialize_with = "present")]
    pub(super) hosts: Option<HostsWire>,
    #[serde(default)]
    pub(super) passthrough: Option<Vec<String>>,
}

/// A key that is present, even with a null value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HostsWire>, D::Error> {
    HostsWire::deserialize(d).map(Some)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsWire {
    pub(super) unlisted: Option<Unlisted>,
    pub(super) mode: Option<Mode>,
    pub(super) trust: Option<String>,
    pub(super) ports: Option<Vec<u16>>,
    pub(super) allow_private: Option<bool>,
    pub(super) report_uri: Option<String>,
    /// Certificate Transparency for unlisted hosts and `trust: webpki`
    /// entries without their own.
    pub(super) ct: Option<CtMode>,
    /// The HTTP version forwarded requests go upstream in.
    pub(super) upstream_protocol: Option<UpstreamProtocol>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HostWire {
    pub(super) pins: Option<Vec<String>>,
    pub(super) mode: Option<Mode>,
    pub(super) expires: Option<String>,
    pub(super) ports: Option<Vec<u16>>,
    pub(super) trust: Option<String>,
    pub(super) address: Option<String>,
    pub(super) next_pins: Option<Vec<String>>,
    pub(super) report_uri: Option<String>,
    /// docs/reference.md, "Host fields": present this identity upstream (mTLS).
    pub(super) client_cert: Option<ClientCertWire>,
    /// SANs (DNS or URI) the certificate must carry instead of the host name.
    pub(super) names: Option<Vec<String>>,
    /// CRL files checked on the validated path.
    pub(super) crls: Option<Vec<String>>,
    /// What an expired CRL does.
    pub(super) crl_policy: Option<CrlPolicy>,
    /// Certificate Transparency on the validated path.
    pub(super) ct: Option<CtMode>,
    /// The HTTP version forwarded requests go upstream in.
    pub(super) upstream_protocol: Option<UpstreamProtocol>,
}

/// `client_cert: {cert, key}`: paths relative to the pinset file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientCertWire {
    pub(super) cert: String,
    pub(super) key: String,
}

/// `hosts:` keeps its entries in file order and keeps duplicates, so that
/// validation can report them (a plain map would silently keep the last).
#[derive(Default)]
pub(super) struct HostsWire(pub(super) Vec<(String, HostWire)>);

impl<'de> Deserialize<'de> for HostsWire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostsWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of host name to host entry")
            }
            fn visit_unit<E>(self) -> Result<HostsWire, E> {
                Ok(HostsWire::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HostsWire, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Option<HostWire>>()? {
                    out.push((k, v.unwrap_or_default()));
                }
                Ok(HostsWire(out))
            }
        }
        d.deserialize_any(V)
    }
}

//! `passthrough:` — traffic pinproxy relays as it came (docs/reference.md,
//! "Passthrough"): in-cluster services reached by name or by address, never
//! pinned, never upgraded to TLS, exempt from the private-address rule.
//!
//! Items are host patterns ([`Pattern`]: exact, `*.`, `**.`) matched on the
//! requested name, and CIDRs matched on an IP literal or, for a name no
//! entry covers, on the addresses it resolves to — so a short name such as
//! `orders` passes when its Service CIDR is listed.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::host::Host;
use super::pattern::{Pattern, PatternError, Patterns};

/// The compiled `passthrough:` list.
#[derive(Clone, Debug, Default)]
pub struct Passthrough {
    names: Patterns<Arc<str>>,
    cidrs: Vec<(IpNet, Arc<str>)>,
    /// The items as written, in file order.
    items: Vec<String>,
    /// Addresses pinned entries dial (`address:`): no CIDR holds them.
    pinned: Vec<IpAddr>,
}

/// One `passthrough:` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Name(Pattern),
    Cidr(IpNet),
}

/// Why a `passthrough:` item was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemError {
    #[error("{0:?} is not a CIDR (e.g. 10.96.0.0/12 or fd00::/8)")]
    Cidr(String),
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

impl Item {
    pub fn parse(raw: &str) -> Result<Self, ItemError> {
        if raw.contains('/') {
            return raw
                .parse::<IpNet>()
                .map(|n| Item::Cidr(n.trunc()))
                .map_err(|_| ItemError::Cidr(raw.to_string()));
        }
        Ok(Item::Name(Pattern::parse(raw)?))
    }
}

// === impl Passthrough ===

impl Passthrough {
    /// Adds an item (validated by the caller) written as `raw`.
    pub(super) fn push(&mut self, item: Item, raw: &str) {
        let label: Arc<str> = raw.into();
        match item {
            Item::Name(p) => {
                self.names.insert(p, label);
            }
            Item::Cidr(n) => self.cidrs.push((n, label)),
        }
        self.items.push(raw.to_string());
    }

    /// The items as written.
    pub fn items(&self) -> &[String] {
        &self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether any item is a CIDR (then unlisted names are resolved
    /// before they are judged).
    pub(crate) fn has_cidrs(&self) -> bool {
        !self.cidrs.is_empty()
    }

    /// The item a requested host passes through by (a name pattern, or a
    /// CIDR holding an IP literal): its label as written.
    pub fn by_host(&self, host: &Host) -> Option<&str> {
        if let Some(label) = self.names.get(host) {
            return Some(label);
        }
        match host {
            Host::Ip(ip) => self.by_address(*ip),
            Host::Name(_) => None,
        }
    }

    /// Keeps `ip`, the `address:` of a pinned entry, out of every CIDR: it
    /// is reached by that entry's name, pinned, and never relayed because
    /// it lies in a CIDR — by IP literal, or by another name resolving to
    /// it (the fifth review: `CONNECT <the entry's address>` or a short
    /// alias got a raw tunnel to the pinned service). Returns the CIDR it
    /// lay in, if any, for the load warning.
    pub(crate) fn keep_out(&mut self, ip: IpAddr) -> Option<Arc<str>> {
        let ip = ip.to_canonical();
        let label = self.by_address(ip).map(Arc::from)?;
        self.pinned.push(ip);
        Some(label)
    }

    /// Whether `ip` is the `address:` of a pinned entry that lies in a CIDR
    /// ([`Passthrough::keep_out`]): not dialed for a passthrough name
    /// either.
    pub fn is_kept_out(&self, ip: IpAddr) -> bool {
        self.pinned.contains(&ip.to_canonical())
    }

    /// The CIDR item holding `ip`, as written; never for the address of a
    /// pinned entry ([`Passthrough::keep_out`]).
    pub fn by_address(&self, ip: IpAddr) -> Option<&str> {
        let ip = ip.to_canonical();
        if self.pinned.contains(&ip) {
            return None;
        }
        self.cidrs
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, label)| label.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Passthrough {
        let mut p = Passthrough::default();
        for raw in items {
            p.push(Item::parse(raw).unwrap(), raw);
        }
        p
    }

    #[test]
    fn names_literals_and_cidrs() {
        let p = list(&["**.svc.cluster.local", "orders", "10.96.0.0/12", "fd00::/8"]);
        let host = |s: &str| Host::parse(s).unwrap();
        assert_eq!(
            p.by_host(&host("a.b.svc.cluster.local")),
            Some("**.svc.cluster.local")
        );
        assert_eq!(p.by_host(&host("orders")), Some("orders"));
        assert_eq!(p.by_host(&host("10.100.1.2")), Some("10.96.0.0/12"));
        assert_eq!(
            p.by_host(&host("[::ffff:10.100.1.2]")),
            Some("10.96.0.0/12")
        );
        assert_eq!(p.by_host(&host("fd00::5")), Some("fd00::/8"));
        assert_eq!(p.by_host(&host("10.112.0.1")), None);
        assert_eq!(p.by_host(&host("orders.shop")), None);
        assert_eq!(
            p.by_address("10.96.0.1".parse().unwrap()),
            Some("10.96.0.0/12")
        );
        assert!(p.has_cidrs());
        assert!(Item::parse("10.0.0.0/33").is_err());
        assert!(Item::parse("**.com").is_err());
    }
}

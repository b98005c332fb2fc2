//! The environment every app container gets: the proxy variables, the trust
//! variables (docs/reference.md, "Kubernetes interface"), and the settings of
//! runtimes that ignore
//! `HTTP_PROXY` — Node.js (`NODE_USE_ENV_PROXY`) and Java (system properties
//! appended to `JAVA_TOOL_OPTIONS`, with `NO_PROXY` translated to
//! `http.nonProxyHosts`).

use std::net::{IpAddr, Ipv4Addr};

use serde_yaml::Value;

use super::InjectOptions;

/// Hosts the app reaches directly: loopback, in-cluster Services and the
/// Kubernetes API (by name and, through kubelet's `$(VAR)` expansion of the
/// service env var, by the IP that in-cluster clients dial).
const DEFAULT_NO_PROXY: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    ".svc",
    ".svc.cluster.local",
    ".cluster.local",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "$(KUBERNETES_SERVICE_HOST)",
];

/// The proxy variables an app may already set to some other proxy.
pub(super) const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];

pub(super) const JAVA_TOOL_OPTIONS: &str = "JAVA_TOOL_OPTIONS";

/// What transparent mode without proxy variables leaves out.
const STALE_IN_TRANSPARENT: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "NODE_USE_ENV_PROXY",
];

/// The JVM reads the properties in order and the last one wins, so ours
/// are appended; this is how our block starts, and it is always
/// [`JAVA_TOKENS`] whitespace-separated tokens long.
const JAVA_MARK: &str = "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort=";
const JAVA_TOKENS: usize = 5;
/// Properties by which a JVM is sent to some proxy.
const JAVA_PROXY_HOSTS: &[&str] = &["-Dhttp.proxyHost=", "-Dhttps.proxyHost="];

// === impl InjectOptions ===

impl InjectOptions {
    fn ca_file(&self) -> String {
        format!("{}/ca.crt", self.ca_dir.trim_end_matches('/'))
    }

    fn ca_bundle_file(&self) -> String {
        format!("{}/ca-bundle.crt", self.ca_dir.trim_end_matches('/'))
    }

    /// What the proxy variables are set to.
    pub(super) fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    fn no_proxy_entries(&self) -> Vec<&str> {
        let mut all: Vec<&str> = DEFAULT_NO_PROXY.to_vec();
        for extra in &self.no_proxy {
            let extra = extra.trim();
            if !extra.is_empty() && !all.contains(&extra) {
                all.push(extra);
            }
        }
        all
    }

    /// Whether app containers are pointed at the proxy listener: always,
    /// except in transparent mode unless asked.
    pub(super) fn sets_proxy_env(&self) -> bool {
        !self.transparent || self.redirect.proxy_env
    }

    /// The env vars every app container gets, in order (`JAVA_TOOL_OPTIONS`
    /// aside: it is merged with the app's own, see [`merge_java_tool_options`]).
    /// In transparent mode without proxy variables, only the trust ones:
    /// the kernel sends the app to pinproxy, and intercepted TLS still
    /// presents the pod CA.
    pub(super) fn app_env(&self) -> Vec<(&'static str, String)> {
        let proxy = self.proxy_url();
        let no_proxy = self.no_proxy_entries().join(",");
        let bundle = self.ca_bundle_file();
        let mut env = Vec::new();
        if self.sets_proxy_env() {
            env.extend([
                ("HTTP_PROXY", proxy.clone()),
                ("HTTPS_PROXY", proxy.clone()),
                // curl and others read only the lowercase forms (http_proxy in
                // particular, for CGI safety), Go and Python read both.
                ("http_proxy", proxy.clone()),
                ("https_proxy", proxy),
                ("NO_PROXY", no_proxy.clone()),
                ("no_proxy", no_proxy),
                // Node.js >= 24 honours the variables above only when asked to.
                ("NODE_USE_ENV_PROXY", "1".into()),
            ]);
        }
        env.extend([
            // These *replace* the default trust store, so they name the
            // bundle (pod CA + Mozilla roots + extra CAs): direct NO_PROXY
            // TLS and unlisted tunnels still verify. OpenSSL, Go and Ruby;
            // Python requests; curl (its compiled-in bundle would win over
            // SSL_CERT_FILE).
            ("SSL_CERT_FILE", bundle.clone()),
            ("REQUESTS_CA_BUNDLE", bundle.clone()),
            ("CURL_CA_BUNDLE", bundle),
            // Node *adds* these to its own roots: the pod CA alone.
            ("NODE_EXTRA_CA_CERTS", self.ca_file()),
        ]);
        env
    }

    /// Variables an earlier injection may have set that this one does not
    /// (proxy mode switched to transparent): taken out of app containers.
    pub(super) fn stale_app_env(&self) -> &'static [&'static str] {
        if self.sets_proxy_env() {
            &[]
        } else {
            STALE_IN_TRANSPARENT
        }
    }

    /// The JVM system properties that send it through the proxy.
    pub(super) fn java_proxy_properties(&self) -> String {
        let port = self.proxy_port;
        let non_proxy = java_non_proxy_hosts(&self.no_proxy_entries());
        let block = format!(
            "{JAVA_MARK}{port} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={port} \
             -Dhttp.nonProxyHosts={non_proxy}"
        );
        debug_assert_eq!(block.split_whitespace().count(), JAVA_TOKENS);
        block
    }
}

/// An env entry's literal `value` as text; `None` when it has none.
pub(super) fn env_value(var: &Value) -> Option<String> {
    match var.get("value")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

// === JAVA_TOOL_OPTIONS ===

/// The app's `JAVA_TOOL_OPTIONS` with our properties appended once: a block
/// an earlier injection appended is taken out first, so re-running
/// injection replaces it instead of adding a second.
pub(super) fn merge_java_tool_options(existing: Option<&str>, ours: &str) -> String {
    let theirs = existing.map(without_our_block).unwrap_or_default();
    let theirs = theirs.trim_end();
    if ours.is_empty() {
        theirs.to_string()
    } else if theirs.trim().is_empty() {
        ours.to_string()
    } else {
        format!("{theirs} {ours}")
    }
}

/// A proxy host the app's own `JAVA_TOOL_OPTIONS` sends the JVM to, other
/// than ours: `-Dhttps.proxyHost=corp-proxy`.
pub(super) fn foreign_java_proxy(existing: &str) -> Option<String> {
    without_our_block(existing)
        .split_whitespace()
        .find(|t| {
            JAVA_PROXY_HOSTS
                .iter()
                .any(|p| t.strip_prefix(p).is_some_and(|host| host != "127.0.0.1"))
        })
        .map(str::to_string)
}

/// `value` without the block [`InjectOptions::java_proxy_properties`]
/// appended, the rest byte for byte.
fn without_our_block(value: &str) -> String {
    let Some(start) = value.find(JAVA_MARK) else {
        return value.to_string();
    };
    // The end of our block's last token.
    let mut end = start;
    let mut tokens = 0;
    let bytes = value.as_bytes();
    while end < value.len() && tokens < JAVA_TOKENS {
        while end < value.len() && bytes[end].is_ascii_whitespace() {
            end += 1;
        }
        while end < value.len() && !bytes[end].is_ascii_whitespace() {
            end += 1;
        }
        tokens += 1;
    }
    let before = value[..start].trim_end();
    let after = value[end..].trim_start();
    match (before.is_empty(), after.is_empty()) {
        (_, true) => before.to_string(),
        (true, false) => after.to_string(),
        (false, false) => format!("{before} {after}"),
    }
}

/// `NO_PROXY` entries as Java's `http.nonProxyHosts`: `|`-separated
/// patterns with a leading `*` wildcard. Entries mean what they mean to
/// curl and Go: `name` is that name and every name below it, `.name` only
/// the names below it, IPv4 CIDRs are every address in the block (written
/// as octet wildcards); IPv6 literals are bracketed as in URLs. Java cannot
/// express an IPv6 block: such entries are left out.
pub(super) fn java_non_proxy_hosts(entries: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: String| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            push("*".into());
        } else if let Some((addr, prefix)) = entry.split_once('/') {
            for p in ipv4_block_patterns(addr, prefix) {
                push(p);
            }
        } else if let Ok(IpAddr::V6(v6)) = entry.parse::<IpAddr>() {
            push(format!("[{v6}]"));
        } else if entry.parse::<IpAddr>().is_ok() || entry.starts_with("$(") {
            push(entry.to_string());
        } else if let Some(suffix) = entry.strip_prefix('.') {
            push(format!("*.{suffix}"));
        } else {
            push(entry.to_string());
            push(format!("*.{entry}"));
        }
    }
    out.join("|")
}

/// An IPv4 block as octet wildcards: `10.0.0.0/8` is `10.*`, `10.96.0.0/12`
/// is `10.96.*` … `10.111.*`. Empty for anything else.
fn ipv4_block_patterns(addr: &str, prefix: &str) -> Vec<String> {
    let (Ok(addr), Ok(prefix)) = (addr.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return Vec::new();
    };
    if prefix > 32 {
        return Vec::new();
    }
    if prefix == 0 {
        return vec!["*".into()];
    }
    // Widen the block's prefix to a whole octet: at most 2^7 patterns.
    let octets = prefix.div_ceil(8);
    let mask = u32::MAX << (32 - prefix);
    let base = u32::from(addr) & mask;
    let step = 1u32 << (32 - octets * 8);
    let count = 1u32 << (octets * 8 - prefix);
    (0..count)
        .map(|i| {
            let net = Ipv4Addr::from(base + i * step);
            let kept: Vec<String> = net.octets()[..octets as usize]
                .iter()
                .map(u8::to_string)
                .collect();
            if octets == 4 {
                kept.join(".")
            } else {
                format!("{}.*", kept.join("."))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_translates_to_java_patterns() {
        assert_eq!(
            java_non_proxy_hosts(DEFAULT_NO_PROXY),
            "localhost|*.localhost|127.0.0.1|[::1]|*.svc|*.svc.cluster.local|*.cluster.local|\
             kubernetes|*.kubernetes|kubernetes.default|*.kubernetes.default|\
             kubernetes.default.svc|*.kubernetes.default.svc|$(KUBERNETES_SERVICE_HOST)"
        );
        assert_eq!(java_non_proxy_hosts(&["10.0.0.0/8"]), "10.*");
        assert_eq!(java_non_proxy_hosts(&["192.168.1.7/32"]), "192.168.1.7");
        assert_eq!(
            java_non_proxy_hosts(&["172.16.0.0/12"]).split('|').count(),
            16
        );
        assert!(java_non_proxy_hosts(&["172.16.0.0/12"]).starts_with("172.16.*|172.17.*|"));
        assert!(java_non_proxy_hosts(&["172.16.0.0/12"]).ends_with("|172.31.*"));
        let block: Vec<String> = (0..16).map(|o| format!("10.96.{o}.*")).collect();
        assert_eq!(java_non_proxy_hosts(&["10.96.0.0/20"]), block.join("|"));
        assert_eq!(java_non_proxy_hosts(&["0.0.0.0/0", "*"]), "*");
        assert_eq!(java_non_proxy_hosts(&["fd00::/8", "fd00::1"]), "[fd00::1]");
    }

    #[test]
    fn our_block_is_appended_once_and_replaced_on_rerun() {
        let ours = InjectOptions::default().java_proxy_properties();
        assert_eq!(merge_java_tool_options(None, &ours), ours);
        let first = merge_java_tool_options(Some("-Xmx512m  -Dfoo=\"a  b\""), &ours);
        assert_eq!(first, format!("-Xmx512m  -Dfoo=\"a  b\" {ours}"));
        assert_eq!(merge_java_tool_options(Some(&first), &ours), first);
        let moved = InjectOptions {
            proxy_port: 3129,
            ..InjectOptions::default()
        }
        .java_proxy_properties();
        assert_eq!(
            merge_java_tool_options(Some(&first), &moved),
            format!("-Xmx512m  -Dfoo=\"a  b\" {moved}")
        );
        // Options the app added after ours stay.
        let later = format!("{first} -Xss1m");
        assert_eq!(
            merge_java_tool_options(Some(&later), &ours),
            format!("-Xmx512m  -Dfoo=\"a  b\" -Xss1m {ours}")
        );
    }

    #[test]
    fn a_foreign_java_proxy_is_found() {
        let ours = InjectOptions::default().java_proxy_properties();
        assert_eq!(foreign_java_proxy(&ours), None);
        assert_eq!(foreign_java_proxy("-Xmx1g"), None);
        assert_eq!(
            foreign_java_proxy("-Xmx1g -Dhttps.proxyHost=corp-proxy -Dhttps.proxyPort=8080"),
            Some("-Dhttps.proxyHost=corp-proxy".into())
        );
    }
}

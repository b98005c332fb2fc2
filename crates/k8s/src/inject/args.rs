//! The command-line options of `pinproxy inject` and the sidecar options
//! `pinproxy webhook` shares with it.

use std::path::PathBuf;

use super::{default_image, default_init_image, ExtraCa, InjectOptions, Transparent};

/// Sidecar options shared by `pinproxy inject` and `pinproxy webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// Sidecar image.
    #[arg(long, env = "PINPROXY_INJECT_IMAGE", default_value_t = default_image())]
    pub image: String,
    /// imagePullPolicy of the sidecar (Always, IfNotPresent, Never).
    #[arg(long, env = "PINPROXY_INJECT_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// Secret with the `pins.yaml` key, in the workload's namespace.
    #[arg(
        long = "secret",
        env = "PINPROXY_INJECT_SECRET",
        default_value = "pinproxy-pins"
    )]
    pub secret: String,
    /// Proxy port, bound on 127.0.0.1 inside the pod.
    #[arg(long, env = "PINPROXY_INJECT_PROXY_PORT", default_value_t = 3128)]
    pub proxy_port: u16,
    /// Admin port (/metrics, /healthz, /readyz), bound on 0.0.0.0.
    #[arg(long, env = "PINPROXY_INJECT_ADMIN_PORT", default_value_t = 9901)]
    pub admin_port: u16,
    /// CPU request of the sidecar (a Kubernetes quantity).
    #[arg(long, env = "PINPROXY_INJECT_CPU_REQUEST", default_value = "50m")]
    pub cpu_request: String,
    /// Memory request of the sidecar (a Kubernetes quantity).
    #[arg(long, env = "PINPROXY_INJECT_MEMORY_REQUEST", default_value = "32Mi")]
    pub memory_request: String,
    /// CPU limit; an empty string sets none.
    #[arg(long, env = "PINPROXY_INJECT_CPU_LIMIT", default_value = "500m")]
    pub cpu_limit: String,
    /// Memory limit; an empty string sets none.
    #[arg(long, env = "PINPROXY_INJECT_MEMORY_LIMIT", default_value = "128Mi")]
    pub memory_limit: String,
    /// Mount point of the pins Secret (a directory: never subPath).
    #[arg(
        long,
        env = "PINPROXY_INJECT_PINS_DIR",
        default_value = "/etc/pinproxy"
    )]
    pub pins_dir: String,
    /// Shared emptyDir where the sidecar writes ca.crt and ca-bundle.crt for the app.
    #[arg(
        long,
        env = "PINPROXY_INJECT_CA_DIR",
        default_value = "/var/run/pinproxy"
    )]
    pub ca_dir: String,
    /// Add pinproxy as a regular container (Kubernetes < 1.29) instead of a
    /// native sidecar, moving an existing native one. The app may then start
    /// before the proxy is ready.
    #[arg(long, env = "PINPROXY_INJECT_LEGACY_SIDECAR")]
    pub legacy_sidecar: bool,
    /// Make an existing regular pinproxy container a native sidecar. Without
    /// this or --legacy-sidecar, a pinproxy container already in a template
    /// keeps its layout and new ones are native sidecars.
    #[arg(
        long,
        env = "PINPROXY_INJECT_NATIVE_SIDECAR",
        conflicts_with = "legacy_sidecar"
    )]
    pub native_sidecar: bool,
    /// Replace the proxy an app container already sets (HTTP_PROXY,
    /// HTTPS_PROXY, http_proxy, https_proxy, -Dhttp(s).proxyHost in
    /// JAVA_TOOL_OPTIONS) instead of refusing to inject it.
    #[arg(long, env = "PINPROXY_INJECT_OVERRIDE_PROXY")]
    pub override_proxy: bool,
    /// A PEM CA the proxy adds to ca-bundle.crt, the app's trust store:
    /// configmap/NAME[:KEY] or secret/NAME[:KEY] in the workload's
    /// namespace (KEY defaults to ca.crt), e.g. configmap/kube-root-ca.crt.
    /// Repeatable or comma-separated.
    #[arg(
        long,
        env = "PINPROXY_INJECT_CA_BUNDLE_EXTRA_FROM",
        value_delimiter = ',',
        value_name = "KIND/NAME[:KEY]"
    )]
    pub ca_bundle_extra_from: Vec<ExtraCa>,
    /// Extra NO_PROXY entry (repeatable or comma-separated), e.g. a pod CIDR.
    #[arg(long, env = "PINPROXY_INJECT_NO_PROXY", value_delimiter = ',')]
    pub no_proxy: Vec<String>,
    /// Transparent mode (docs/reference.md): an init container installs kernel
    /// rules that send every outbound TCP connection of the app to
    /// pinproxy, so apps that ignore HTTP_PROXY are pinned too. The init
    /// container holds NET_ADMIN and NET_RAW (Pod Security level
    /// `privileged`). The app gets the CA trust variables but no proxy
    /// variables unless --transparent-proxy-env. A pod annotation
    /// pinproxy.io/transparent: "true" or "false" overrides this per pod.
    #[arg(long, env = "PINPROXY_INJECT_TRANSPARENT")]
    pub transparent: bool,
    /// Port of the transparent listener on the pod's loopback.
    #[arg(
        long,
        env = "PINPROXY_INJECT_TRANSPARENT_PORT",
        default_value_t = 15001
    )]
    pub transparent_port: u16,
    /// UID the sidecar runs as in transparent mode; the rules exempt it so
    /// pinproxy's own connections are not redirected. No app container may
    /// run as it (injection refuses one that says so).
    #[arg(long, env = "PINPROXY_INJECT_TRANSPARENT_UID", default_value_t = 1337)]
    pub transparent_uid: u32,
    /// Image of the init container that installs the rules (`pinproxy
    /// redirect` plus iptables: the Dockerfile's `init` target).
    #[arg(long, env = "PINPROXY_INJECT_INIT_IMAGE", default_value_t = default_init_image())]
    pub init_image: String,
    /// Redirect only these destination ports (comma-separated); default all TCP.
    #[arg(
        long,
        env = "PINPROXY_INJECT_TRANSPARENT_PORTS",
        value_delimiter = ',',
        value_name = "PORT,…"
    )]
    pub transparent_ports: Vec<u16>,
    /// Destinations never redirected (repeatable or comma-separated), e.g.
    /// the Service CIDR so databases and the Kubernetes API are reached directly.
    #[arg(
        long,
        env = "PINPROXY_INJECT_TRANSPARENT_EXCLUDE_CIDR",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub transparent_exclude_cidr: Vec<String>,
    /// Also reject (TCP reset) outbound connections that are not
    /// redirected, e.g. to ports outside --transparent-ports: a bypass fails
    /// loudly; and lock the rest, default-deny: DNS to the pod's resolvers
    /// passes, UDP 443 (QUIC) is rejected so clients fall back to TCP,
    /// every other protocol is dropped (`redirect --lock`). Excluded CIDRs
    /// stay reachable.
    #[arg(long, env = "PINPROXY_INJECT_TRANSPARENT_LOCK")]
    pub transparent_lock: bool,
    /// UDP destinations the lock lets through besides DNS (CIDR:PORT,
    /// repeatable or comma-separated), e.g. 10.0.0.0/8:123 for NTP.
    #[arg(
        long,
        env = "PINPROXY_INJECT_TRANSPARENT_ALLOW_UDP",
        value_delimiter = ',',
        value_name = "CIDR:PORT"
    )]
    pub transparent_allow_udp: Vec<String>,
    /// Log what the lock refuses (rate-limited LOG rules, kernel log
    /// prefix `pinproxy-lock: `).
    #[arg(long, env = "PINPROXY_INJECT_TRANSPARENT_LOG_DROPS")]
    pub transparent_log_drops: bool,
    /// In transparent mode, set the proxy variables as well (apps that
    /// honour them use the proxy listener; the rest are redirected).
    #[arg(long, env = "PINPROXY_INJECT_TRANSPARENT_PROXY_ENV")]
    pub transparent_proxy_env: bool,
    /// A Secret holding a client certificate and key for mTLS upstream
    /// (cert-manager's tls.crt/tls.key, a SPIFFE helper's files), mounted
    /// read-only into the pinproxy container only, at
    /// /etc/pinproxy-identity/NAME/; the pinset's client_cert names the
    /// files there. Repeatable or comma-separated; a pod annotation
    /// pinproxy.io/identity-secrets adds more.
    #[arg(
        long = "identity-secret",
        env = "PINPROXY_INJECT_IDENTITY_SECRETS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub identity_secrets: Vec<String>,
    /// The sidecar's `run --learn-file`: with `defaults.unlisted: learn`,
    /// what was learned survives container restarts. Its directory becomes
    /// an emptyDir of its own, mounted into the sidecar only, e.g.
    /// /var/lib/pinproxy/learned.json.
    #[arg(long, env = "PINPROXY_INJECT_LEARN_FILE", value_name = "PATH")]
    pub learn_file: Option<String>,
    /// A public key the pinset must be signed with: configmap/NAME[:KEY] or
    /// secret/NAME[:KEY] in the workload's namespace (KEY defaults to
    /// cosign.pub), never the pins Secret. Whoever can edit that object
    /// can replace the key: prefer --pinset-key-inline. Repeatable (old and new key
    /// during a rotation). The sidecar gets `--pinset-key` for each and
    /// `--state-dir` on an emptyDir, so a restart keeps the rollback floor.
    #[arg(
        long,
        env = "PINPROXY_INJECT_PINSET_KEY_FROM",
        value_delimiter = ',',
        value_name = "KIND/NAME[:KEY]"
    )]
    pub pinset_key_from: Vec<super::PinsetKey>,
    /// A PEM public key file the pinset must be signed with, read now (at
    /// inject time; the webhook at its start) and given to the sidecar in
    /// its env (`PINPROXY_PINSET_KEY_PEM`, `run --pinset-key-pem`): in the
    /// pod spec, which nobody can change once the pod exists, so no object
    /// in the workload's namespace can replace the key. Repeatable or
    /// comma-separated (old and new key during a rotation). The sidecar
    /// also gets `--state-dir` on an emptyDir. Not with --pinset-key-from.
    #[arg(
        long,
        env = "PINPROXY_INJECT_PINSET_KEY_INLINE",
        value_delimiter = ',',
        value_name = "FILE",
        value_parser = super::InlineKey::parse_arg
    )]
    pub pinset_key_inline: Vec<super::InlineKey>,
    /// With --pinset-key-inline or --pinset-key-from: the sidecar's
    /// `--pinset-min-serial`, the lowest pinset serial it applies (its --state-dir floor is lost with
    /// the pod; this one is in the pod's arguments, which the pins
    /// Secret's writer cannot change). With the webhook's --pinset-key,
    /// `POST /validate` also denies a pinset object below it. Raise it when
    /// retiring a pinned key: to the serial of the first
    /// pinset without it.
    #[arg(long, env = "PINPROXY_INJECT_PINSET_MIN_SERIAL", value_name = "N")]
    pub pinset_min_serial: Option<pinproxy_sign::Serial>,
    /// Log format of the sidecar (its `run --log-format`).
    #[arg(long = "sidecar-log-format", env = "PINPROXY_INJECT_LOG_FORMAT", default_value = "json",
          value_parser = ["text", "json"])]
    pub log_format: String,
}

/// `pinproxy inject [-f FILE|-] [options]`.
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// Manifest file to read; `-` (the default) reads stdin. Output goes to stdout.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: PathBuf,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

// === impl InjectOptions ===

impl From<&SidecarArgs> for InjectOptions {
    fn from(a: &SidecarArgs) -> Self {
        let opt = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        Self {
            image: a.image.clone(),
            image_pull_policy: a.image_pull_policy.clone(),
            pins_secret: a.secret.clone(),
            proxy_port: a.proxy_port,
            admin_port: a.admin_port,
            cpu_request: a.cpu_request.clone(),
            memory_request: a.memory_request.clone(),
            cpu_limit: opt(&a.cpu_limit),
            memory_limit: opt(&a.memory_limit),
            pins_dir: a.pins_dir.clone(),
            ca_dir: a.ca_dir.clone(),
            native_sidecar: !a.legacy_sidecar,
            keep_layout: !(a.legacy_sidecar || a.native_sidecar),
            override_proxy: a.override_proxy,
            ca_bundle_extra: a.ca_bundle_extra_from.clone(),
            no_proxy: a.no_proxy.clone(),
            log_format: a.log_format.clone(),
            run_as_user: InjectOptions::default().run_as_user,
            transparent: a.transparent,
            redirect: Transparent {
                port: a.transparent_port,
                uid: a.transparent_uid,
                init_image: a.init_image.clone(),
                ports: a.transparent_ports.clone(),
                exclude_cidr: a.transparent_exclude_cidr.clone(),
                lock: a.transparent_lock,
                allow_udp: a.transparent_allow_udp.clone(),
                log_drops: a.transparent_log_drops,
                proxy_env: a.transparent_proxy_env,
            },
            identity_secrets: a.identity_secrets.clone(),
            learn_file: a.learn_file.clone().filter(|f| !f.trim().is_empty()),
            pinset_key_from: a.pinset_key_from.clone(),
            pinset_key_inline: a.pinset_key_inline.iter().map(|k| k.key.clone()).collect(),
            pinset_min_serial: a.pinset_min_serial,
        }
    }
}

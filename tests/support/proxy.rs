//! `TestProxy::builder()`: the proxy started in-process the way `pinproxy
//! run` assembles it ([`App::build`]), with only what a test changes set —
//! linkerd2-proxy's `proxy::new().outbound(srv).run()` is the model:
//!
//! ```ignore
//! let p = TestProxy::builder()
//!     .pinset(&pinset(HOST, &[pki.int.pin()], "", up.addr))
//!     .file("ca.pem", pki.root.pem())
//!     .resolver(resolver)
//!     .run()
//!     .await;
//! ```
//!
//! What is not set is what every in-process proxy of the suite has: both
//! listeners on 127.0.0.1:0, a generated pod CA written to `DIR/ca-out`
//! (outside the pinset's directory, so writing it is no reload), no
//! watcher, no SIGHUP handler, reports from an unnamed pod, and
//! otherwise [`Config::default()`] (what `pinproxy run` does without
//! flags). `spawn()` runs the built binary instead, with CLI flags and
//! environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pinproxy::app::{App, Config};
use pinproxy::control::reports;
use pinproxy::proxy::Limits;
use pinproxy::upstream::{Options, Resolve, Timeouts};
use tokio::sync::watch;

use super::*;

/// The in-process proxy a test talks to: a [`Proxy`] under the name the
/// builder is entered by.
pub type TestProxy = Proxy;

type Tune = Box<dyn FnOnce(&mut Config) + Send>;

/// What a test sets; see the module documentation for the rest.
#[derive(Default)]
#[must_use = "a builder does nothing until .run() or .spawn()"]
pub struct Builder {
    pinset: Option<String>,
    files: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
    pins_path: Option<PathBuf>,
    watch: bool,
    tunes: Vec<Tune>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stderr_uncaptured: bool,
}

impl Proxy {
    /// A proxy with nothing set yet: give it a pinset (`pinset` or
    /// `pins_path`), then `.run()`.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// The pinset's YAML, written as `DIR/pins.yaml` (relative paths in it
    /// resolve in `DIR`, where `file` writes).
    pub fn pinset(mut self, yaml: &str) -> Self {
        self.pinset = Some(yaml.to_string());
        self
    }

    /// A file beside the pinset (a CA bundle, a client key, a CRL).
    pub fn file(mut self, name: &str, contents: impl Into<String>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    /// Files beside the pinset, as `(name, contents)`.
    pub fn files(mut self, files: &[(&str, String)]) -> Self {
        for (name, contents) in files {
            self = self.file(name, contents.clone());
        }
        self
    }

    /// The directory the pinset, its files and `ca-out/` live in, kept
    /// as long as the proxy (default: a fresh temporary one).
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// A pinset file that is already there (e.g. a [`super::SecretVolume`]'s
    /// `pins.yaml`), instead of `pinset`.
    pub fn pins_path(mut self, path: PathBuf) -> Self {
        self.pins_path = Some(path);
        self
    }

    /// Runs the directory watcher, as `pinproxy run` does without
    /// `--no-watch`.
    pub fn watch(mut self) -> Self {
        self.watch = true;
        self
    }

    /// Anything else in the configuration.
    pub fn config(mut self, tune: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tunes.push(Box::new(tune));
        self
    }

    /// The proxy listener's address (default 127.0.0.1:0).
    pub fn listen(self, addr: SocketAddr) -> Self {
        self.config(move |c| c.listen = addr)
    }

    /// The admin listener's address (default 127.0.0.1:0).
    pub fn admin(self, addr: SocketAddr) -> Self {
        self.config(move |c| c.admin = addr)
    }

    /// Transparent listeners (`--transparent`).
    pub fn transparent(self, addrs: &[SocketAddr]) -> Self {
        let addrs = addrs.to_vec();
        self.config(move |c| c.transparent = addrs)
    }

    /// `--learn-file`.
    pub fn learn_file(self, path: PathBuf) -> Self {
        self.config(move |c| c.learn_file = Some(path))
    }

    /// Who answers name lookups (so no name reaches DNS).
    pub fn resolver(self, resolver: Arc<dyn Resolve>) -> Self {
        self.config(move |c| c.upstream.resolver = resolver)
    }

    /// Upstream connect, handshake and response timeouts.
    pub fn timeouts(self, tune: impl FnOnce(&mut Timeouts) + Send + 'static) -> Self {
        self.config(move |c| tune(&mut c.upstream.timeouts))
    }

    /// How upstreams are reached (resolver and timeouts together).
    pub fn upstream(self, tune: impl FnOnce(&mut Options) + Send + 'static) -> Self {
        self.config(move |c| tune(&mut c.upstream))
    }

    /// Client-side limits: connections, header and idle timeouts, grace.
    pub fn limits(self, tune: impl FnOnce(&mut Limits) + Send + 'static) -> Self {
        self.config(move |c| tune(&mut c.limits))
    }

    /// How failure reports are queued, limited and delivered.
    pub fn reports(self, tune: impl FnOnce(&mut reports::Options) + Send + 'static) -> Self {
        self.config(move |c| tune(&mut c.reports))
    }

    /// A flag for the built binary (`spawn` only).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Flags for the built binary (`spawn` only).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for the built binary (`spawn` only).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Leaves the binary's stderr on the test's own instead of a pipe
    /// (`spawn` only): for a child that runs long and is never asked for
    /// its lines, whose unread pipe would otherwise fill and block it.
    /// `Run::until` and `Run::more` then panic.
    pub fn stderr_uncaptured(mut self) -> Self {
        self.stderr_uncaptured = true;
        self
    }

    /// Writes the pinset and its files; the directory and the pinset path.
    fn prepare(&mut self) -> (tempfile::TempDir, PathBuf) {
        let dir = self
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        for (name, contents) in &self.files {
            if let Some(parent) = std::path::Path::new(name).parent() {
                std::fs::create_dir_all(dir.path().join(parent)).unwrap();
            }
            write(dir.path(), name, contents);
        }
        let pins = match (self.pinset.take(), self.pins_path.take()) {
            (Some(yaml), None) => write(dir.path(), "pins.yaml", &yaml),
            (None, Some(path)) => path,
            (None, None) => panic!("TestProxy::builder(): no .pinset() or .pins_path()"),
            (Some(_), Some(_)) => panic!("TestProxy::builder(): both .pinset() and .pins_path()"),
        };
        (dir, pins)
    }

    /// Builds and serves the proxy in-process; it stops when dropped.
    pub async fn run(mut self) -> Proxy {
        assert!(
            self.args.is_empty() && self.env.is_empty() && !self.stderr_uncaptured,
            "CLI flags, environment variables and stderr are the binary's only: .spawn()"
        );
        let (dir, pins) = self.prepare();
        let mut config = Config {
            pins: pins.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            // Outside the pins directory, so writing it doesn't look like a reload.
            ca_out: Some(dir.path().join("ca-out")),
            leaf_cache: 16,
            watch: self.watch,
            sighup: false,
            reports: reports::Options {
                pod: Default::default(),
                ..Default::default()
            },
            ..Config::default()
        };
        for tune in self.tunes {
            tune(&mut config);
        }
        start(config, dir, pins).await
    }

    /// Runs the built binary on free loopback ports (or the `listen` and
    /// `admin` given) with the flags and environment variables set, its
    /// stderr read line by line (unless `stderr_uncaptured`); returns once
    /// it listens.
    pub async fn spawn(mut self) -> Spawned {
        let (dir, pins) = self.prepare();
        let mut config = Config {
            listen: free(),
            admin: free(),
            ..Config::default()
        };
        for tune in std::mem::take(&mut self.tunes) {
            tune(&mut config);
        }
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinproxy"))
            .args(["run", "--pins", pins.to_str().unwrap()])
            .args(["--listen", &config.listen.to_string()])
            .args(["--admin", &config.admin.to_string()])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(if self.stderr_uncaptured {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::piped()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = child
            .stderr
            .take()
            .map(|stderr| tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr)));
        super::wait_listening(config.listen).await;
        Spawned {
            run: Run {
                child,
                lines,
                listen: config.listen,
                admin: config.admin,
            },
            dir,
            pins_path: pins,
        }
    }
}

/// The built binary, running: a [`Run`] that keeps its pinset directory.
pub struct Spawned {
    pub run: Run,
    pub dir: tempfile::TempDir,
    pub pins_path: PathBuf,
}

impl std::ops::Deref for Spawned {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Run {
        &mut self.run
    }
}

/// A loopback address nothing listens on, for a proxy to bind later, and
/// never one this test process handed out before: the port is free only
/// until someone binds it, and two tests running at once were once given
/// the same one (the second proxy then failed with "Address already in
/// use").
pub fn free() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// Builds the proxy from `config` and serves it until the [`Proxy`] is
/// dropped; `dir` (its pinset directory) lives as long as it.
pub(super) async fn start(config: Config, dir: tempfile::TempDir, pins_path: PathBuf) -> Proxy {
    let app = App::build(config).await.unwrap_or_else(|e| panic!("{e}"));
    let (stop, mut rx) = watch::channel(false);
    let p = Proxy {
        addr: app.proxy_addr(),
        admin: app.admin_addr(),
        live: app.live().clone(),
        reloader: app.reloader().clone(),
        drift: app.drift().clone(),
        metrics: app.metrics().clone(),
        intercept: app.intercept().clone(),
        dir,
        pins_path,
        stop,
    };
    tokio::spawn(app.serve(async move {
        let _ = rx.wait_for(|v| *v).await;
    }));
    p
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub live: Arc<Live>,
    pub reloader: Arc<Reloader>,
    pub drift: Arc<Drift>,
    pub metrics: Arc<Metrics>,
    pub intercept: Arc<Intercept>,
    pub dir: tempfile::TempDir,
    pub pins_path: PathBuf,
    stop: watch::Sender<bool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Proxy {
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca-out/ca.crt")
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Reply {
        get_with(self.admin, &format!("http://{}{path}", self.admin), &[]).await
    }

    pub fn mismatches(&self, host: &str, mode: &str) -> u64 {
        self.metrics
            .pin_mismatch
            .with_label_values(&[host, mode])
            .get()
    }

    pub fn denied(&self, reason: &str) -> u64 {
        self.metrics.denied_count(reason)
    }

    pub fn requests(&self, host: &str, outcome: &str) -> u64 {
        self.metrics.requests_count(host, outcome)
    }

    pub fn tls_failures(&self, host: &str, reason: &str) -> u64 {
        self.metrics.tls_failures_count(host, reason)
    }
}

/// The usual fixture: a PKI for `host`, an upstream serving its chain, and
/// a proxy pinning its intermediate.
pub async fn pinned(host: &str) -> (Pki, Upstream, Proxy) {
    let pki = Pki::new(&[host]);
    let up = upstream(pki.chain(), pki.leaf.key_der(), UpstreamOpts::new("real")).await;
    let p = TestProxy::builder()
        .pinset(&pinset(host, &[pki.int.pin()], "", up.addr))
        .file("ca.pem", pki.root.pem())
        .run()
        .await;
    (pki, up, p)
}

/// A pinset with one host entry.
pub fn pinset(host: &str, pins: &[Pin], extra: &str, addr: SocketAddr) -> String {
    let pins: Vec<String> = pins.iter().map(|p| p.to_string()).collect();
    format!(
        "version: 1\nhosts:\n  {host:?}:\n    pins: [{}]\n    trust: ca.pem\n    address: {addr}\n{extra}",
        pins.join(", ")
    )
}

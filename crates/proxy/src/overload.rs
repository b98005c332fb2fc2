//! The memory guard (`run --max-memory`), one action of Envoy's overload
//! manager: past a limit on the process's resident memory, new work is
//! refused `503 overloaded` instead of the container being OOM-killed and
//! the pod's egress going down with it.
//!
//! Every per-connection bound multiplies by `--max-connections` and
//! `--max-upstream-connections`, so a client that opens many connections
//! or streams and does not read can hold more than the container's limit
//! (the ninth review's F1–F3). [`guard`] samples the resident set a few
//! times a second (one read of `/proc/self/statm`); above the limit the
//! proxy is *overloaded*: the accept loop answers new client connections
//! as it does past `--max-connections`, and [`crate::admit`] refuses every
//! new request, stream, CONNECT and redirected connection — one relaxed
//! load of [`Overload::is_on`], nothing else on the request path. A woken
//! connection's head is charged to the headroom first ([`reserve`]). Work
//! already admitted runs on: the guard bounds new work, not old. It asks
//! the allocator to give freed memory back at once when it trips, and
//! clears with hysteresis, below [`CLEAR_PERCENT`] of the limit, so it
//! does not flap at the edge.
//!
//! What is judged is the whole resident set (`statm`'s second field): the
//! anonymous memory that cannot be reclaimed, plus the binary's own pages
//! (a constant few MiB, charged to the container too). Not the cgroup's
//! `memory.current`: it includes page cache the kernel reclaims only under
//! pressure, which near 90 % may never come, so a guard on it could stay
//! tripped. Kernel socket buffers are charged to the container but are in
//! no figure of the process: with `auto` on cgroup v2 the guard adds the
//! `sock` line of its cgroup's `memory.stat` (a stalled reader can hold
//! megabytes there, the tenth review's F6); v1 states it per cgroup only
//! with kmem accounting on, so there they, and what admitted work still
//! grows by, are what the default's 10 % below the container's limit is
//! for.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinproxy_control::metrics::Metrics;

use super::memory;
use cgroup::Cgroup;
use stuck::{Reload, Stuck};

mod cgroup;
pub mod reserve;
mod stuck;

/// How often the resident set is read.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The guard clears once the resident set is below this share of the
/// limit, in percent.
pub const CLEAR_PERCENT: u64 = 90;

/// `--overloaded-unhealthy-after`'s default: long enough for admitted
/// work to finish and release what tripped the guard (a burst of
/// unfinished heads ends within `--header-timeout`, 30 s), short enough
/// that a guard that cannot clear is restarted within minutes (plus the
/// probe's own 3 × 10 s).
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(120);

/// `--max-memory auto`: this share of the container's memory limit, in
/// percent.
pub const AUTO_PERCENT: u64 = 90;

/// The root under which `auto` reads `/proc/self` and `/sys/fs/cgroup`.
pub const FS_ROOT: &str = "/";

/// The refusal's detail, in its log line and body: which limit it was.
pub const REFUSAL: &str = "memory over --max-memory: new connections and requests are refused \
                           until it falls back";

/// Whether the proxy is overloaded now, and the headroom the last sample
/// left for woken connections' heads ([`reserve`]): written by [`guard`]
/// alone, read on every request and every wake. `Default`: no guard.
#[derive(Debug)]
pub struct Overload {
    on: AtomicBool,
    /// The limit minus the resident set, 0 while on; [`reserve::UNGUARDED`]
    /// without a guard.
    headroom: AtomicU64,
    reserved: AtomicU64,
}

// === impl Overload ===

impl Overload {
    /// One relaxed load: a request admitted a sample late is harmless,
    /// and nothing else is ordered by it.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
}

/// `--max-memory`: bytes, `auto` (from the container's limit) or off (0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxMemory {
    Off,
    Auto,
    Bytes(u64),
}

/// Why a `--max-memory` value could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a size: bytes, or a number with Ki, Mi or Gi (128Mi), auto, or 0 for off")]
pub struct BadSize(String);

// === impl MaxMemory ===

impl FromStr for MaxMemory {
    type Err = BadSize;

    fn from_str(s: &str) -> Result<Self, BadSize> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let (digits, unit) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
            .into_iter()
            .find_map(|(suffix, unit)| s.strip_suffix(suffix).map(|d| (d, unit)))
            .unwrap_or((s, 1));
        let bad = || BadSize(s.to_string());
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        match n.checked_mul(unit).ok_or_else(bad)? {
            0 => Ok(Self::Off),
            bytes => Ok(Self::Bytes(bytes)),
        }
    }
}

impl fmt::Display for MaxMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("0"),
            Self::Auto => f.write_str("auto"),
            Self::Bytes(b) => write!(f, "{b}"),
        }
    }
}

/// What `--max-memory` came to at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// No guard; why.
    Off(String),
    /// The guard refuses new work above `limit` bytes; `from` says where
    /// the figure came from. `sock`: the cgroup v2 `memory.stat` whose
    /// socket buffers count too (`auto` from a v2 cgroup only: the kernel
    /// charges them against that limit).
    On {
        limit: u64,
        from: String,
        sock: Option<PathBuf>,
    },
}

impl MaxMemory {
    /// The limit in force: as given, or (`auto`) [`AUTO_PERCENT`] of the
    /// memory limit of the process's cgroup as seen under `root` ([`FS_ROOT`]
    /// but in tests): the smallest from its own cgroup up to the mount.
    pub fn resolve(self, root: &Path) -> Resolved {
        match self {
            Self::Off => Resolved::Off("--max-memory 0".into()),
            Self::Bytes(limit) => Resolved::On {
                limit,
                from: "--max-memory".into(),
                sock: None,
            },
            Self::Auto => match cgroup::limit(root) {
                Cgroup::Limit { bytes, path } => Resolved::On {
                    limit: bytes / 100 * AUTO_PERCENT + bytes % 100 * AUTO_PERCENT / 100,
                    sock: path
                        .ends_with("memory.max")
                        .then(|| cgroup::memory_stat(root))
                        .flatten(),
                    from: format!(
                        "--max-memory auto: {AUTO_PERCENT} % of the container's memory limit \
                         ({bytes} bytes, {})",
                        path.display()
                    ),
                },
                Cgroup::Unlimited { path } => Resolved::Off(format!(
                    "--max-memory auto: the container has no memory limit ({} says so)",
                    path.display()
                )),
                Cgroup::Unknown => Resolved::Off(format!(
                    "--max-memory auto: no cgroup memory limit found under {}",
                    root.join("sys/fs/cgroup").display()
                )),
            },
        }
    }
}

/// The process's resident set, bytes: `/proc/self/statm`'s second field
/// (pages). A procfs read of counters the kernel keeps, no disk: cheap
/// enough to do on the runtime thread a few times a second.
pub fn resident() -> io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/self/statm"))?;
    Ok(pages.saturating_mul(rustix::param::page_size() as u64))
}

/// What the guard judges against, and what it reports to.
pub struct Guard {
    pub overload: Arc<Overload>,
    /// `--max-memory` in force, bytes.
    pub limit: u64,
    /// `--overloaded-unhealthy-after` (`None`: `/healthz` never fails).
    pub unhealthy_after: Option<Duration>,
    pub metrics: Arc<Metrics>,
    /// A cgroup v2 `memory.stat` whose `sock` figure (kernel socket
    /// buffers, charged to the container but in no figure of the process)
    /// is added to the resident set.
    pub sock: Option<PathBuf>,
    /// The pinset generation in force: a reload is judged by the memory
    /// it leaves.
    pub generation: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Samples the resident set every [`INTERVAL`] and turns `overload` on
/// above `limit` and off below [`CLEAR_PERCENT`] of it, logging each
/// change and keeping the gauges; runs until dropped.
pub async fn guard(guard: Guard) {
    guard_with(guard, resident, memory::trim_now).await
}

async fn guard_with(g: Guard, read: fn() -> io::Result<u64>, trim: fn()) {
    let (overload, limit, metrics) = (&g.overload, g.limit, &g.metrics);
    metrics.watch_memory(limit);
    let clear = limit / 100 * CLEAR_PERCENT;
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    let mut stuck = Stuck::default();
    let mut reload = Reload::new((g.generation)());
    loop {
        tick.tick().await;
        let resident = match read() {
            Ok(r) => r.saturating_add(g.sock.as_deref().and_then(cgroup::sock).unwrap_or(0)),
            Err(e) => {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(error = %e, "memory guard: cannot read the resident set; not judging");
                }
                continue;
            }
        };
        let was = overload.is_on();
        let now = if was {
            resident >= clear
        } else {
            resident > limit
        };
        if now {
            // Freed memory counts only once the allocator hands it back:
            // at once when tripping, then at every sample until clear.
            trim();
        }
        overload.set_headroom(if now { 0 } else { limit - resident });
        if now != was {
            overload.on.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    resident,
                    limit,
                    "overloaded: resident memory over --max-memory; refusing new connections \
                     and requests (503 overloaded) until it is below {CLEAR_PERCENT} % of the limit"
                );
            } else {
                tracing::info!(
                    resident,
                    limit,
                    "no longer overloaded: resident memory below {CLEAR_PERCENT} % of \
                     --max-memory; serving new work"
                );
            }
        }
        stuck.judge(now, resident, clear, g.unhealthy_after, metrics);
        reload.judge((g.generation)(), now, resident, clear);
        metrics.memory_sampled(resident, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_the_flag_documents() {
        let ok = |s: &str| s.parse::<MaxMemory>().unwrap();
        assert_eq!(ok("auto"), MaxMemory::Auto);
        assert_eq!(ok("0"), MaxMemory::Off);
        assert_eq!(ok("0Mi"), MaxMemory::Off);
        assert_eq!(ok("1000"), MaxMemory::Bytes(1000));
        assert_eq!(ok("512Ki"), MaxMemory::Bytes(512 << 10));
        assert_eq!(ok("110Mi"), MaxMemory::Bytes(110 << 20));
        assert_eq!(ok("2Gi"), MaxMemory::Bytes(2 << 30));
        for bad in [
            "",
            "Mi",
            "-1",
            "1.5Gi",
            "128M",
            "128MB",
            "1Ti",
            " 1",
            "99999999999Gi",
        ] {
            assert!(bad.parse::<MaxMemory>().is_err(), "{bad:?} parsed");
        }
    }

    fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn auto_takes_ninety_percent_of_the_cgroup_limit_v2_then_v1() {
        let v2 = root(&[("sys/fs/cgroup/memory.max", "134217728\n")]);
        let Resolved::On { limit, from, .. } = MaxMemory::Auto.resolve(v2.path()) else {
            panic!("v2 limit not found");
        };
        assert_eq!(limit, 134217728 / 10 * 9 + 134217728 % 10 * 9 / 10);
        assert_eq!(limit, 120795955);
        assert!(
            from.contains("memory.max") && from.contains("134217728"),
            "{from}"
        );

        // v2 wins over v1 where both are (a hybrid mount).
        let both = root(&[
            ("sys/fs/cgroup/memory.max", "1048576\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "2097152\n"),
        ]);
        assert!(matches!(
            MaxMemory::Auto.resolve(both.path()),
            Resolved::On { limit: 943718, .. }
        ));

        let v1 = root(&[("sys/fs/cgroup/memory/memory.limit_in_bytes", "268435456\n")]);
        let Resolved::On { limit, from, .. } = MaxMemory::Auto.resolve(v1.path()) else {
            panic!("v1 limit not found");
        };
        assert_eq!(limit, 241591910);
        assert!(from.contains("memory.limit_in_bytes"), "{from}");
    }

    #[test]
    fn no_limit_or_no_cgroup_is_off() {
        let max = root(&[("sys/fs/cgroup/memory.max", "max\n")]);
        assert!(
            matches!(MaxMemory::Auto.resolve(max.path()), Resolved::Off(why) if why.contains("no memory limit"))
        );
        let v1 = root(&[(
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        )]);
        assert!(
            matches!(MaxMemory::Auto.resolve(v1.path()), Resolved::Off(why) if why.contains("no memory limit"))
        );
        let none = root(&[]);
        assert!(
            matches!(MaxMemory::Auto.resolve(none.path()), Resolved::Off(why) if why.contains("no cgroup"))
        );
        let garbage = root(&[("sys/fs/cgroup/memory.max", "lots\n")]);
        assert!(matches!(
            MaxMemory::Auto.resolve(garbage.path()),
            Resolved::Off(_)
        ));
        // Explicit values never look at the cgroup.
        assert_eq!(
            MaxMemory::Bytes(5).resolve(none.path()),
            Resolved::On {
                limit: 5,
                from: "--max-memory".into(),
                sock: None,
            }
        );
        assert!(matches!(
            MaxMemory::Off.resolve(max.path()),
            Resolved::Off(_)
        ));
    }

    #[test]
    fn the_resident_set_is_read() {
        let r = resident().unwrap();
        assert!(r > 1 << 20, "{r}");
    }

    static FIGURE: AtomicU64 = AtomicU64::new(0);
    static TRIMS: AtomicU64 = AtomicU64::new(0);

    fn figure() -> io::Result<u64> {
        Ok(FIGURE.load(Ordering::SeqCst))
    }

    fn count_trim() {
        TRIMS.fetch_add(1, Ordering::SeqCst);
    }

    fn gauge(metrics: &Metrics, name: &str) -> Option<f64> {
        metrics.samples().get(&format!("{name}{{}}")).copied()
    }

    /// A guard of `limit` bytes with no liveness bound, no socket figure
    /// and one pinset generation: what each test then changes.
    fn judged(overload: &Arc<Overload>, metrics: &Arc<Metrics>, limit: u64) -> Guard {
        Guard {
            overload: overload.clone(),
            limit,
            unhealthy_after: None,
            metrics: metrics.clone(),
            sock: None,
            generation: Box::new(|| 1),
        }
    }

    /// In virtual time: on above the limit (trimming at once), still on
    /// between 90 % and the limit, off below 90 %; the gauges follow.
    #[tokio::test(start_paused = true)]
    async fn trips_above_the_limit_and_clears_below_ninety_percent() {
        let metrics = Metrics::new();
        let overload = Arc::new(Overload::default());
        assert_eq!(gauge(&metrics, "pinproxy_memory_limit_bytes"), None);
        FIGURE.store(500, Ordering::SeqCst);
        let task = tokio::spawn(guard_with(
            judged(&overload, &metrics, 1000),
            figure,
            count_trim,
        ));
        let sample = || async {
            tokio::time::sleep(INTERVAL).await;
            tokio::task::yield_now().await;
        };
        sample().await;
        assert!(!overload.is_on());
        assert_eq!(gauge(&metrics, "pinproxy_memory_limit_bytes"), Some(1000.0));
        assert_eq!(
            gauge(&metrics, "pinproxy_memory_resident_bytes"),
            Some(500.0)
        );
        assert_eq!(gauge(&metrics, "pinproxy_overloaded"), Some(0.0));

        FIGURE.store(1000, Ordering::SeqCst);
        sample().await;
        assert!(!overload.is_on(), "at the limit is not over it");
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0);

        FIGURE.store(1001, Ordering::SeqCst);
        sample().await;
        assert!(overload.is_on());
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1, "trimmed when it tripped");
        assert_eq!(gauge(&metrics, "pinproxy_overloaded"), Some(1.0));
        assert_eq!(
            gauge(&metrics, "pinproxy_memory_resident_bytes"),
            Some(1001.0)
        );

        FIGURE.store(900, Ordering::SeqCst);
        sample().await;
        assert!(overload.is_on(), "cleared above 90 % of the limit");

        FIGURE.store(899, Ordering::SeqCst);
        sample().await;
        assert!(!overload.is_on());
        assert_eq!(gauge(&metrics, "pinproxy_overloaded"), Some(0.0));
        let trims = TRIMS.load(Ordering::SeqCst);
        sample().await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), trims, "trimmed while clear");
        task.abort();
    }

    static STUCK_FIGURE: AtomicU64 = AtomicU64::new(0);

    fn stuck_figure() -> io::Result<u64> {
        Ok(STUCK_FIGURE.load(Ordering::SeqCst))
    }

    /// In virtual time: a guard on for `unhealthy_after` without a break
    /// fails `/healthz` (the metrics' reason), one that clears before
    /// does not, and clearing makes it healthy again.
    #[tokio::test(start_paused = true)]
    async fn a_guard_on_too_long_fails_liveness_until_it_clears() {
        let metrics = Metrics::new();
        let overload = Arc::new(Overload::default());
        STUCK_FIGURE.store(2000, Ordering::SeqCst);
        let task = tokio::spawn(guard_with(
            Guard {
                unhealthy_after: Some(Duration::from_secs(120)),
                ..judged(&overload, &metrics, 1000)
            },
            stuck_figure,
            || {},
        ));
        let wait = |secs| async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            tokio::task::yield_now().await;
        };
        wait(60).await;
        assert!(overload.is_on());
        // A break resets the clock.
        STUCK_FIGURE.store(100, Ordering::SeqCst);
        wait(1).await;
        assert!(!overload.is_on());
        STUCK_FIGURE.store(2000, Ordering::SeqCst);
        wait(100).await;
        assert!(overload.is_on());
        assert_eq!(metrics.unhealthy(), None, "on for 100 s only");
        wait(21).await;
        let why = metrics.unhealthy().expect("unhealthy after 120 s on");
        assert!(why.starts_with("overloaded for 120s"), "{why}");
        assert!(why.contains("2000 bytes"), "{why}");

        STUCK_FIGURE.store(100, Ordering::SeqCst);
        wait(1).await;
        assert!(!overload.is_on());
        assert_eq!(metrics.unhealthy(), None, "healthy again once clear");
        task.abort();
    }

    /// `None` (`--overloaded-unhealthy-after 0`): never unhealthy.
    #[tokio::test(start_paused = true)]
    async fn without_a_bound_liveness_never_fails() {
        let metrics = Metrics::new();
        let task = tokio::spawn(guard_with(
            judged(&Arc::default(), &metrics, 0),
            resident,
            || {},
        ));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(metrics.unhealthy(), None);
        task.abort();
    }

    static SOCK_FIGURE: AtomicU64 = AtomicU64::new(0);

    fn sock_figure() -> io::Result<u64> {
        Ok(SOCK_FIGURE.load(Ordering::SeqCst))
    }

    /// Socket buffers the kernel charges to the cgroup (v2 `memory.stat`
    /// `sock`) count: 600 resident + 500 of sockets is over 1000.
    #[tokio::test(start_paused = true)]
    async fn cgroup_socket_buffers_count_toward_the_limit() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let stat = dir.path().join("memory.stat");
        std::fs::write(&stat, "anon 600\nsock 500\n").expect("write memory.stat");
        let metrics = Metrics::new();
        let overload = Arc::new(Overload::default());
        SOCK_FIGURE.store(600, Ordering::SeqCst);
        let task = tokio::spawn(guard_with(
            Guard {
                sock: Some(stat.clone()),
                ..judged(&overload, &metrics, 1000)
            },
            sock_figure,
            || {},
        ));
        tokio::time::sleep(INTERVAL).await;
        tokio::task::yield_now().await;
        assert!(overload.is_on(), "600 resident + 500 sock is over 1000");
        assert_eq!(
            gauge(&metrics, "pinproxy_memory_resident_bytes"),
            Some(1100.0)
        );
        std::fs::write(&stat, "anon 600\nsock 0\n").expect("write memory.stat");
        tokio::time::sleep(INTERVAL).await;
        tokio::task::yield_now().await;
        assert!(!overload.is_on(), "the sockets drained");
        task.abort();
    }
}

//! File descriptors for `pinproxy run`: the soft `RLIMIT_NOFILE` raised to
//! the hard one at start, and a budget that keeps a reserve free.
//!
//! Every client connection costs a descriptor, every upstream socket one
//! more (counted by the upstream connection budget,
//! `--max-upstream-connections`, idle pooled connections included), the
//! admin listener at most its connection cap, and the rest of the process
//! needs some to live: a reload opens the pinset, its
//! CA bundles, CRLs and certificate files and the watcher its inotify
//! descriptor; the learn file, failure reports and learn probes open
//! their own. If `--max-connections` clients could take every descriptor,
//! `accept` would fail with EMFILE on every listener and the next reload
//! with "Too many open files" — the starvation issue 21 found. So
//! `--max-connections` is lowered, with a warning, to half of what the
//! limit leaves after [`RESERVE`] and the admin cap, and
//! `--max-upstream-connections` (by default the same number) to what the
//! client connections leave of that: clients + upstreams + admin +
//! reserve never exceed the limit.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for everything but client connections: reloads, the
/// watcher, the learn file, reports, probes, the runtime, and the
/// refusals answered past the connection limit.
pub const RESERVE: u64 = 128 + crate::proxy::MAX_REFUSALS_IN_FLIGHT as u64;

/// Raises the soft descriptor limit to the hard one (a container's default
/// soft limit is often 1024 under a far higher hard one); returns the soft
/// limit in force, `None` when unlimited.
pub fn raise_nofile() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => return Some(maximum),
                Err(e) => {
                    tracing::warn!(soft = current, hard = maximum, error = %e, "cannot raise the open-files limit")
                }
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The descriptors `nofile` leaves for client connections and upstream
/// sockets together, after the reserve and `admin` admin connections.
fn spare(nofile: u64, admin: usize) -> u64 {
    nofile.saturating_sub(RESERVE + admin as u64)
}

/// The client connections `nofile` descriptors can carry, two each (its
/// own, and an upstream socket's share), after the reserve and `admin`
/// admin connections.
pub fn connection_budget(nofile: u64, admin: usize) -> usize {
    usize::try_from(spare(nofile, admin) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The upstream sockets `nofile` descriptors can carry beside `clients`
/// client connections (at most [`connection_budget`]), after the reserve
/// and `admin` admin connections.
pub fn upstream_budget(nofile: u64, admin: usize, clients: usize) -> usize {
    let left = spare(nofile, admin).saturating_sub(clients as u64);
    usize::try_from(left).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_the_reserve_and_the_admin_cap() {
        assert_eq!(connection_budget(1024, 32), (1024 - 192 - 32) / 2);
        assert_eq!(connection_budget(1 << 20, 32), ((1 << 20) - 224) / 2);
        assert_eq!(connection_budget(100, 32), 1, "never zero");
    }

    #[test]
    fn clients_upstreams_admin_and_reserve_fit_the_limit() {
        for nofile in [300u64, 1024, 65536] {
            let clients = connection_budget(nofile, 32);
            let upstreams = upstream_budget(nofile, 32, clients);
            assert!(upstreams >= clients, "the default (= clients) always fits");
            let used = (clients + upstreams) as u64 + RESERVE + 32;
            assert!(used <= nofile, "{nofile}: {used}");
        }
        // Fewer clients leave the rest to upstreams.
        assert_eq!(upstream_budget(1024, 32, 100), 1024 - 192 - 32 - 100);
        assert_eq!(upstream_budget(100, 32, 1), 1, "never zero");
    }
}

//! `--max-memory` at start: what the memory guard's limit comes to, and
//! whether it can work at all (a limit at or below what the process
//! already holds would refuse everything from the first sample on).

use std::path::PathBuf;

use crate::proxy::overload::{self, MaxMemory, Resolved};

/// The guard's limit, bytes, and the cgroup v2 `memory.stat` whose
/// socket buffers it counts.
pub(super) struct Limit {
    pub bytes: u64,
    pub sock: Option<PathBuf>,
}

/// What `--max-memory` comes to (`auto`: from the container's cgroup),
/// logged with where it came from: the guard's limit, or `None` when off.
/// A limit at or below `resident` (what the process holds at start) would
/// refuse everything for good: as given on the command line it is an
/// error (`(limit, resident)`, which the caller names); from `auto` (a container limit that small) the guard is off,
/// with a warning. Below twice `resident`, a warning: the first loads alone
/// add a few MiB (docs/benchmarks.md, "RSS after each load run").
pub(super) fn guard_limit(
    max: MaxMemory,
    resident: Option<u64>,
) -> Result<Option<Limit>, (u64, u64)> {
    match max.resolve(std::path::Path::new(overload::FS_ROOT)) {
        Resolved::On { limit, from, sock } => {
            if let Some(resident) = resident.filter(|&r| limit <= r) {
                if matches!(max, MaxMemory::Auto) {
                    tracing::warn!(
                        max_memory = limit,
                        resident,
                        from = %from,
                        "memory guard off: its limit is not above what pinproxy holds at start"
                    );
                    return Ok(None);
                }
                return Err((limit, resident));
            }
            if let Some(resident) = resident.filter(|&r| limit / 2 < r) {
                tracing::warn!(
                    max_memory = limit,
                    resident,
                    "--max-memory is less than twice what pinproxy holds at start: a few \
                     loads may trip it with no client misbehaving"
                );
            }
            tracing::info!(
                max_memory = limit,
                from = %from,
                sock = ?sock,
                "memory guard on: past it new connections and requests are refused overloaded"
            );
            Ok(Some(Limit { bytes: limit, sock }))
        }
        Resolved::Off(why) => {
            tracing::info!(why = %why, "memory guard off");
            Ok(None)
        }
    }
}

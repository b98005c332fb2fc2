use std::process::ExitCode;

use clap::Parser;

use pinproxy::cli::{self, Cli};

/// mimalloc instead of the platform's malloc: less CPU per request, and
/// much less than musl's in the static image (docs/benchmarks.md, "Memory").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pinproxy::proxy::memory::install_trim(trim);
    pinproxy::control::metrics::install_heap_stats(heap_stats);
    match Cli::try_parse() {
        Ok(c) => cli::main(c),
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Hands the runtime thread's free mimalloc pages back to the kernel (see
/// `pinproxy::proxy::memory`). Forced: without it mimalloc keeps the pages
/// of closed connections in the thread's caches (5,000 closed connections
/// that never spoke left RSS 6.3 MiB above fresh; forced, within 0.1 MiB),
/// and parked connections cost the same either way (1.8 KiB each, measured
/// with bench/idle10k.py; docs/benchmarks.md, "Memory").
fn trim() {
    // SAFETY: mi_collect takes no pointers; it only walks mimalloc's own
    // structures for the calling thread and the shared arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc's own figures, for `/metrics` (`pinproxy_allocator_…`): what
/// RSS is made of (docs/reference.md, "Metrics"). On Linux "committed" is
/// what mimalloc holds mapped read/write; its peak is since start.
fn heap_stats() -> pinproxy::control::metrics::HeapStats {
    let (mut committed, mut peak) = (0usize, 0usize);
    let null = std::ptr::null_mut();
    // SAFETY: every out-parameter is nullable; the two given point at
    // live locals, which mimalloc only writes one usize each to.
    unsafe {
        libmimalloc_sys::mi_process_info(
            null,
            null,
            null,
            null,
            null,
            &mut committed,
            &mut peak,
            null,
        )
    };
    pinproxy::control::metrics::HeapStats {
        committed: committed as u64,
        committed_peak: peak as u64,
    }
}

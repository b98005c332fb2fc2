use std::process::ExitCode;

use clap::Parser;

use pinproxy::cli::{self, Cli};

fn main() -> ExitCode {
    pinproxy::proxy::memory::install_trim(trim);
    match Cli::try_parse() {
        Ok(c) => cli::main(c),
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// glibc's `malloc_trim(0)`: every whole free page of every heap back to
/// the kernel (see `pinproxy::proxy::memory`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::os::raw::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks
    // each arena in turn).
    unsafe {
        malloc_trim(0);
    }
}

/// Other allocators (musl's) give memory back by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

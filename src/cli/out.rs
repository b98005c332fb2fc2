//! A command's output on stdout, for `out!` and `outln!` (this module's
//! parent): `print!` and `println!` panic when stdout is a pipe whose reader
//! has gone (`pinproxy version | head -1`: "failed printing to stdout: Broken
//! pipe", a backtrace, exit 101), because Rust ignores SIGPIPE. Here the
//! command ends as a tool killed by SIGPIPE would look to a shell: exit
//! status 141, nothing on stderr. SIGPIPE itself stays ignored, so a pipe to
//! a child (`redirect` feeding `iptables-restore`) still fails with an error
//! the command reports.

use std::io::{self, Write as _};
use std::process;

/// What a shell reports for a command killed by SIGPIPE (128 + 13).
pub const READER_GONE: i32 = 141;

/// Writes `args` to stdout; ends the process if it cannot.
pub fn write(args: std::fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        cannot_write(&e);
    }
}

/// Ends the command as [`write`] does when `e` says the reader has gone.
fn end_if_reader_gone(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        process::exit(READER_GONE);
    }
}

/// Locked stdout for a command that writes its output itself
/// (`redirect`, `inject`): a broken pipe ends the command as [`write`] does; other
/// errors go back to the caller.
pub struct Stdout(io::StdoutLock<'static>);

impl Stdout {
    pub fn lock() -> Self {
        Self(io::stdout().lock())
    }
}

impl io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf);
        if let Err(e) = &n {
            end_if_reader_gone(e);
        }
        n
    }

    fn flush(&mut self) -> io::Result<()> {
        let done = self.0.flush();
        if let Err(e) = &done {
            end_if_reader_gone(e);
        }
        done
    }
}

fn cannot_write(e: &io::Error) -> ! {
    end_if_reader_gone(e);
    eprintln!("pinproxy: cannot write the output: {e}");
    process::exit(1)
}

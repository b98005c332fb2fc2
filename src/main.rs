use std::process::ExitCode;

use clap::Parser;

use pinproxy::cli::{self, Cli};

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(c) => cli::main(c),
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

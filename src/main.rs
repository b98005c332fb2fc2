use std::process::ExitCode;

use clap::Parser;

use pinproxy::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let code = match cli.command {
        Command::Run(args) => pinproxy::cli::cmd::run(args),
        Command::Pin(args) => pinproxy::cli::cmd::pin(args),
        Command::Check(args) => pinproxy::cli::cmd::check(args),
        Command::Inject(args) => pinproxy::cli::cmd::inject(&args),
        Command::Webhook(args) => pinproxy::cli::cmd::webhook(&args),
        Command::Redirect(args) => pinproxy::cli::redirect::run(&args),
    };
    ExitCode::from(code)
}

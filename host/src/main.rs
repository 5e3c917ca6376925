use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = stowage::cli::Cli::parse();
    stowage::cli::init_tracing(cli.verbose);
    match stowage::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, kubectl-style.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

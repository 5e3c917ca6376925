use std::process::ExitCode;

use clap::Parser;

/// Counts the heap each thread grows, so a Rhai extension's call is held to its `memoryLimit`.
#[global_allocator]
static ALLOCATOR: stowage_runtime::heap::CountingAllocator = stowage_runtime::heap::CountingAllocator;

fn main() -> ExitCode {
    // One binary, several programs: called as `stowage-restore-helper` (a link, as `stowage demo`
    // makes for its simulated nodes), it is the restore helper init container.
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    if std::path::Path::new(&program).file_name().is_some_and(|n| n == "stowage-restore-helper") {
        return stowage_restore_helper::main_with(&args.collect::<Vec<_>>());
    }
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

//! `stowage-restore-helper`: the init container added to restored pods that have volume
//! backups. It waits until every restored volume holds its `.stowage/<restore-uid>` marker
//! (written by the node agent once the volume's data is back), removes the markers, and exits so
//! the pod's own containers start on complete data. With `--hold` it is the container of an
//! access pod: it does nothing until the pod is deleted.
//!
//! Deliberately dependency-free and synchronous: it runs in every restored pod.

pub mod args;
pub mod wait;

use std::process::ExitCode;

use args::{Action, Env};

/// Runs the helper with `argv` (without the program name); what `main` does.
pub fn main_with(argv: &[String]) -> ExitCode {
    match args::parse(argv, Env::from_process()) {
        Ok(Action::Help) => {
            print!("{}", args::HELP);
            ExitCode::SUCCESS
        }
        Ok(Action::Version) => {
            println!("stowage-restore-helper {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Action::Hold) => loop {
            // Stopped by the pod's deletion (SIGTERM ends the process).
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        Ok(Action::Run(args)) => match wait::run(&args, &mut wait::RealClock::start(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("error: {message}\n\nRun `stowage-restore-helper --help` for usage.");
            ExitCode::from(2)
        }
    }
}

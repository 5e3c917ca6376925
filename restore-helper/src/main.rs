//! `stowage-restore-helper`: see the library for what it does.

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    stowage_restore_helper::main_with(&argv)
}

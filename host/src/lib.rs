//! The `stowage` binary's library: the CLI, the install, CRD generation and the controllers.
//! Kept as a library so the end-to-end suites can drive it directly.

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod crdgen;
pub mod demo;
pub mod discovery;
pub mod gc;
pub mod install;
pub mod restore;
pub mod schedules;
pub mod server;

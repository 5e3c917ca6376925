//! The `stowage` binary's library: the CLI, the install, CRD generation and (later) the
//! controllers. Kept as a library so the end-to-end suites can drive it directly.

pub mod cli;
pub mod cluster;
pub mod crdgen;
pub mod install;
pub mod server;

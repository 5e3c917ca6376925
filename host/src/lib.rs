//! The `stowage` binary's library: the CLI, the install, CRD generation and the controllers.
//! Kept as a library so the end-to-end suites can drive it directly.
//!
//! Dependencies point one way: `cli` and the controllers (`server`, `schedules`, `gc`) →
//! `backup`/`restore` (the operations) → `hooks`/`podvolumes` → `context`, `locations`,
//! `extensions`, `oplog`, `podexec` and the storage and runtime crates.

pub mod access;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod context;
pub mod crdgen;
pub mod dashboard;
pub mod demo;
pub mod discovery;
pub mod extensions;
pub mod gc;
pub mod hooks;
pub mod install;
pub mod locations;
pub mod metrics;
pub mod oplog;
pub mod podexec;
pub mod podvolumes;
pub mod repositories;
pub mod restore;
pub mod schedules;
pub mod server;
pub mod velero;

//! Command-line interface: `stowage <command>`, kubectl-like.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::cluster::ClusterArgs;
use crate::commands::{backup::BackupArgs, location::LocationArgs, restore::RestoreArgs};
use crate::install::InstallArgs;
use crate::server::ServerArgs;

/// Back up and restore Kubernetes applications: objects, volume data and application-aware
/// hooks.
#[derive(Debug, Parser)]
#[command(name = "stowage", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Log more (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole job on embedded defaults: a simulated cluster, the nginx example backed up,
    /// deleted and restored.
    Demo(crate::demo::DemoArgs),
    /// Install Stowage (CRDs, RBAC, server, node agents, storage location) into a cluster.
    Install(Box<InstallArgs>),
    /// Delete what `install` created; the bucket, and unless --purge the master key and namespace, stay.
    Uninstall(crate::install::UninstallArgs),
    /// Run the Stowage server: the controllers for backups, restores, schedules and locations.
    Server(ServerArgs),
    /// Create, list, describe, read the logs of, download and delete backups.
    Backup(BackupArgs),
    /// Restore backups; list and describe restores and read their logs.
    Restore(RestoreArgs),
    /// Take backups on a schedule; list, describe, pause, unpause and delete schedules.
    Schedule(crate::commands::schedule::ScheduleArgs),
    /// Add and list the storage locations backups are kept in.
    BackupLocation(LocationArgs),
    /// Write Stowage locations and schedules from Velero's (a dry run unless --apply).
    MigrateFromVelero(crate::commands::migrate::MigrateArgs),
    /// Reach volume backup repositories with the restic CLI.
    Repo(crate::commands::repo::RepoArgs),
    /// List, describe and test the extensions loaded from ConfigMaps.
    Extension(crate::commands::extension::ExtensionArgs),
    /// Print the client version, the server version and which server replica leads.
    Version {
        /// Only the client's version: do not ask the cluster.
        #[arg(long)]
        client_only: bool,
        #[command(flatten)]
        namespace: crate::commands::InstallNamespace,
    },
    /// Print a shell completion script, e.g. `source <(stowage completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the CustomResourceDefinitions generated from the API types, one file per kind.
    #[command(hide = true)]
    Crdgen {
        /// Directory to write into (relative to the current directory).
        #[arg(long, default_value = "deploy/crds")]
        out: PathBuf,
        /// Only check that the files in the directory are up to date.
        #[arg(long)]
        check: bool,
    },
}

pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Logs go to stderr: stdout carries command output (YAML, JSON, tables).
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version { client_only, namespace } => {
            println!("Client: v{}", env!("CARGO_PKG_VERSION"));
            if client_only {
                return Ok(());
            }
            let leader = runtime()?.block_on(async {
                let client = cli.cluster.client().await?;
                crate::server::leader::holder(client, &namespace.namespace).await.map_err(anyhow::Error::from)
            });
            match leader {
                Ok(Some(holder)) => println!(
                    "Server: {}, led by {} (Lease {}/{})",
                    holder.version.map_or("version unknown".to_string(), |v| format!("v{v}")),
                    holder.identity,
                    namespace.namespace,
                    crate::server::leader::LEASE_NAME
                ),
                Ok(None) => println!("Server: no replica leads (is `stowage server` running in namespace {}?)", namespace.namespace),
                Err(e) => println!("Server: unknown ({e:#}); `--client-only` skips asking"),
            }
            Ok(())
        }
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stowage", &mut script);
            write_stdout(&script).context("writing the completion script")
        }
        Command::Crdgen { out, check } => crate::crdgen::run(&out, check),
        Command::MigrateFromVelero(args) => runtime()?.block_on(crate::commands::migrate::run(args, &cli.cluster)),
        Command::Repo(args) => runtime()?.block_on(crate::commands::repo::run(args, &cli.cluster)),
        Command::Extension(args) => runtime()?.block_on(crate::commands::extension::run(args, &cli.cluster)),
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Server(args) => runtime()?.block_on(crate::server::run(args, &cli.cluster)),
        Command::Install(args) => runtime()?.block_on(crate::install::run(*args, &cli.cluster)),
        Command::Uninstall(args) => runtime()?.block_on(crate::install::uninstall(args, &cli.cluster)),
        Command::Backup(args) => runtime()?.block_on(crate::commands::backup::run(args, &cli.cluster)),
        Command::Restore(args) => runtime()?.block_on(crate::commands::restore::run(args, &cli.cluster)),
        Command::Schedule(args) => runtime()?.block_on(crate::commands::schedule::run(args, &cli.cluster)),
        Command::BackupLocation(args) => runtime()?.block_on(crate::commands::location::run(args, &cli.cluster)),
    }
}

/// Writes command output; a closed pipe (`stowage ... | head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // Restores and `extension test` run extensions on these threads.
        .thread_stack_size(stowage_runtime::EXTENSION_STACK_SIZE)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn crdgen_is_hidden_but_parses() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("crdgen"), "{help}");
        let cli = Cli::try_parse_from(["stowage", "crdgen", "--out", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Crdgen { check: false, .. }));
    }

    #[test]
    fn completion_scripts_generate() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stowage", &mut buf);
            let script = String::from_utf8(buf).unwrap();
            assert!(script.contains("install"), "{shell}");
        }
    }
}

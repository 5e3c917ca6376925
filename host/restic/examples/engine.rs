//! The volume engine on a directory, for benchmarks (`bench/volumes.sh`); not a user tool.
//!
//! ```text
//! engine backup  --repo DIR --password-file F [--tag pvc-uid=X] PATH
//! engine restore --repo DIR --password-file F SNAPSHOT TARGET
//! ```
//! `--repo DIR` is the store root: the repository is `DIR/restic/<namespace>`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use stowage_restic::{BackupRequest, Repo, RepoConfig};
use stowage_storage::FsStore;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[arg(long, global = true, default_value = ".")]
    repo: PathBuf,
    #[arg(long, global = true, default_value = "ns")]
    namespace: String,
    #[arg(long, global = true)]
    password_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init,
    Backup {
        path: PathBuf,
        /// Parent and path identity of the volume.
        #[arg(long, default_value = "pvc-uid=bench")]
        tag: String,
    },
    Restore {
        snapshot: String,
        target: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    // As the node agent does, before the runtime's threads start.
    stowage_restic::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let password = match &cli.password_file {
        Some(f) => std::fs::read_to_string(f).context("reading the password file")?,
        None => std::env::var("RESTIC_PASSWORD").context("--password-file or RESTIC_PASSWORD")?,
    };
    let store = FsStore::new("bench", &cli.repo);
    store.create_root().await?;
    let cfg = RepoConfig {
        store: Arc::new(store),
        namespace: cli.namespace,
        password: password.trim_end_matches('\n').to_string(),
    };
    let progress = Arc::new(|_| {});
    match cli.command {
        Command::Init => {
            let (_, created) = Repo::open_or_init(cfg).await?;
            println!("{}", if created { "created" } else { "exists" });
        }
        Command::Backup { path, tag } => {
            let (repo, _) = Repo::open_or_init(cfg).await?;
            reset_peak_rss();
            let req = BackupRequest {
                path,
                tags: vec![tag.clone()],
                parent_tags: vec![tag],
                hostname: "bench".into(),
            };
            let s = repo.backup(req, progress, CancellationToken::new()).await?;
            println!(
                "snapshot {} parent {} total {} added {} new {} changed {} unmodified {}",
                s.snapshot_id,
                s.parent.as_deref().unwrap_or("-"),
                s.total_bytes,
                s.data_added,
                s.files_new,
                s.files_changed,
                s.files_unmodified
            );
        }
        Command::Restore { snapshot, target } => {
            let repo = Repo::open(cfg).await?;
            reset_peak_rss();
            let s = repo
                .restore(&snapshot, &target, progress, CancellationToken::new())
                .await?;
            println!("restored {} files, {} bytes", s.files, s.bytes);
        }
    }
    report_peak_rss();
    Ok(())
}

/// Opening with a password derives the key with scrypt (N=2^12, r=8 for the keys Stowage
/// writes: 4 MiB; repositories made by `restic init` or by earlier versions: up to 128 MiB,
/// once); the benchmark reports the operation's own peak apart from that.
/// (Resetting it also resets what `getrusage` and `time -v` report, hence both lines.)
fn reset_peak_rss() {
    if let Some(kib) = peak_rss_kib() {
        eprintln!("peak RSS of opening: {kib} KiB");
    }
    // Writing 5 to clear_refs resets the peak resident set size (VmHWM) on Linux.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn report_peak_rss() {
    if let Some(kib) = peak_rss_kib() {
        eprintln!("operation peak RSS after open: {kib} KiB");
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
            let s = repo
                .restore(&snapshot, &target, progress, CancellationToken::new())
                .await?;
            println!("restored {} files, {} bytes", s.files, s.bytes);
        }
    }
    Ok(())
}

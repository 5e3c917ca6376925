//! `stowage backup create|get|describe|logs|download|delete`.

mod create;
mod describe;
mod table;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::PostParams;
use stowage_api::labels;
use stowage_api::requests::{DeleteBackupRequest, DeleteBackupRequestSpec, DownloadTargetKind};
use stowage_api::Backup;

pub use create::{check_location, BackupSettings, CreateArgs};
pub use describe::{describe, BackupDetails};
pub use table::table;

use super::output::{self, OutputFormat};
use super::{download, selector, Context, Explain, InstallNamespace};
use crate::cluster::ClusterArgs;

const LIST_HINT: &str = "stowage backup get";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: BackupCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Back up objects (and pod volumes) now.
    Create(Box<CreateArgs>),
    /// List backups.
    Get(GetArgs),
    /// Show a backup's settings, progress and outcome.
    Describe(DescribeArgs),
    /// Print a backup's log.
    Logs(NameArg),
    /// Download a backup's archive of objects (tar.zst).
    Download(DownloadArgs),
    /// Delete backups with their stored data and volume snapshots.
    Delete(DeleteArgs),
    /// List the files of one pod volume in a backup.
    Browse(super::files::BrowseArgs),
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Backups to show [default: all].
    pub names: Vec<String>,
    /// Only backups whose labels match, e.g. stowage.io/schedule-name=nightly.
    #[arg(short = 'l', long, value_parser = selector::parse)]
    pub selector: Option<LabelSelector>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Also list the backed-up resources, the pod volume backups and the warnings and errors
    /// (fetched through the server).
    #[arg(long)]
    pub details: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    pub name: String,
    /// Where to write the archive [default: NAME-data.tar.zst].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["names", "selector", "all"])))]
pub struct DeleteArgs {
    /// Backups to delete.
    pub names: Vec<String>,
    /// Delete the backups whose labels match, e.g. stowage.io/schedule-name=nightly.
    #[arg(short = 'l', long, value_parser = selector::parse, conflicts_with = "names")]
    pub selector: Option<LabelSelector>,
    /// Delete every backup.
    #[arg(long, conflicts_with_all = ["names", "selector"])]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub confirm: bool,
}

pub async fn run(args: BackupArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    match args.command {
        BackupCommand::Create(create) => create.run(&ctx).await,
        BackupCommand::Get(get) => run_get(&ctx, get).await,
        BackupCommand::Describe(d) => run_describe(&ctx, d).await,
        BackupCommand::Logs(NameArg { name }) => run_logs(&ctx, &name).await,
        BackupCommand::Download(d) => run_download(&ctx, d).await,
        BackupCommand::Delete(d) => run_delete(&ctx, d).await,
        BackupCommand::Browse(b) => super::files::browse(&ctx, b).await,
    }
}

async fn list(ctx: &Context, names: &[String], selector: Option<&LabelSelector>) -> anyhow::Result<Vec<Backup>> {
    ctx.get_or_list("backup", names, selector, LIST_HINT).await
}

async fn run_get(ctx: &Context, args: GetArgs) -> anyhow::Result<()> {
    let backups = list(ctx, &args.names, args.selector.as_ref()).await?;
    match args.output.object_format() {
        Some(format) => output::print(&output::render_objects(&backups, args.names.len() == 1, format)?),
        None if backups.is_empty() => {
            eprintln!("No backups found in namespace {}.", ctx.namespace);
            Ok(())
        }
        None => output::print(&table(&backups, k8s_openapi::jiff::Timestamp::now())),
    }
}

async fn run_describe(ctx: &Context, args: DescribeArgs) -> anyhow::Result<()> {
    let backups = list(ctx, &args.names, None).await?;
    let mut texts = Vec::new();
    for backup in &backups {
        let details = match args.details {
            true => Some(BackupDetails::fetch(ctx, backup).await),
            false => None,
        };
        texts.push(describe(backup, details.as_ref()));
    }
    output::print(&texts.join("\n"))
}

async fn run_logs(ctx: &Context, name: &str) -> anyhow::Result<()> {
    ctx.get::<Backup>("backup", name, LIST_HINT).await?;
    let bytes = download::fetch(ctx, DownloadTargetKind::BackupLog, name).await?;
    output::print(&String::from_utf8_lossy(&download::decompress(bytes)?))
}

async fn run_download(ctx: &Context, args: DownloadArgs) -> anyhow::Result<()> {
    let path = args.output.unwrap_or_else(|| PathBuf::from(format!("{}-data.tar.zst", args.name)));
    if path.exists() && !args.force {
        anyhow::bail!("{} already exists; pass --force to overwrite it or -o to write elsewhere", path.display());
    }
    ctx.get::<Backup>("backup", &args.name, LIST_HINT).await?;
    // Into a file beside the destination, renamed over it once whole: an interrupted download
    // leaves no truncated archive under the name asked for.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let partial = tempfile::Builder::new().prefix(".stowage-download-").tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut file = tokio::fs::File::from_std(partial.reopen()?);
    download::fetch_into(ctx, DownloadTargetKind::BackupContents, &args.name, &mut download::Sink::File(&mut file)).await?;
    file.sync_all().await.with_context(|| format!("writing {}", path.display()))?;
    drop(file);
    if args.force {
        partial.persist(&path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    } else {
        partial.persist_noclobber(&path).map_err(|e| e.error).with_context(|| {
            format!("writing {} (it appeared meanwhile; pass --force to overwrite it)", path.display())
        })?;
    }
    println!("Backup {} has been successfully downloaded to {}", args.name, path.display());
    Ok(())
}

async fn run_delete(ctx: &Context, args: DeleteArgs) -> anyhow::Result<()> {
    let backups = list(ctx, &args.names, args.selector.as_ref()).await?;
    if backups.is_empty() {
        println!("No backups match; nothing to delete.");
        return Ok(());
    }
    let names: Vec<String> = backups.iter().filter_map(|b| b.metadata.name.clone()).collect();
    if !args.confirm && !confirm(&names)? {
        println!("Cancelled.");
        return Ok(());
    }
    let api = ctx.api::<DeleteBackupRequest>();
    for backup in backups {
        let name = backup.metadata.name.clone().unwrap_or_default();
        let mut request = DeleteBackupRequest::new("", DeleteBackupRequestSpec { backup_name: name.clone() });
        request.metadata.name = None;
        request.metadata.generate_name = Some(format!("{}-", name.chars().take(200).collect::<String>()));
        let mut request_labels = std::collections::BTreeMap::new();
        if name.len() <= 63 {
            request_labels.insert(labels::BACKUP_NAME.name.to_string(), name.clone());
        }
        if let Some(uid) = backup.metadata.uid {
            request_labels.insert(labels::BACKUP_UID.name.to_string(), uid);
        }
        request.metadata.labels = Some(request_labels);
        api.create(&PostParams::default(), &request)
            .await
            .explain(|| format!("requesting the deletion of backup {name:?}"), &ctx.namespace)?;
        println!(
            "Request to delete backup {name:?} submitted successfully.\nThe backup will be fully deleted after all \
             associated data (disk snapshots, backup files, restores) are removed."
        );
    }
    Ok(())
}

/// Asks on the terminal; refuses to guess when there is none.
fn confirm(names: &[String]) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing to delete without confirmation: stdin is not a terminal; pass --confirm");
    }
    eprint!("You are about to delete backup(s) {}. Are you sure you want to continue (y/N)? ", names.join(", "));
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

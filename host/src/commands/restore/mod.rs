//! `stowage restore create|get|describe|logs`.

mod create;
mod describe;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use stowage_api::requests::DownloadTargetKind;
use stowage_api::Restore;

pub use create::{parse_namespace_mappings, CreateArgs};
pub use describe::{describe, table};

use super::output::{self, OutputFormat};
use super::{download, selector, Context, InstallNamespace};
use crate::cluster::ClusterArgs;

const LIST_HINT: &str = "stowage restore get";

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: RestoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RestoreCommand {
    /// Restore a backup into this cluster.
    Create(Box<CreateArgs>),
    /// List restores.
    Get(GetArgs),
    /// Show a restore's settings, progress and outcome.
    Describe(DescribeArgs),
    /// Print a restore's log.
    Logs { name: String },
    /// Restore chosen files of a pod volume backup into a running pod, beside its live files.
    Files(Box<super::files::FilesArgs>),
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Restores to show [default: all].
    pub names: Vec<String>,
    /// Only restores whose labels match.
    #[arg(short = 'l', long, value_parser = selector::parse)]
    pub selector: Option<LabelSelector>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Also list the warnings and errors (fetched through the server).
    #[arg(long)]
    pub details: bool,
}

pub async fn run(args: RestoreArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    match args.command {
        RestoreCommand::Create(create) => create.run(&ctx).await,
        RestoreCommand::Get(get) => {
            let restores = list(&ctx, &get.names, get.selector.as_ref()).await?;
            match get.output.object_format() {
                Some(format) => output::print(&output::render_objects(&restores, get.names.len() == 1, format)?),
                None if restores.is_empty() => {
                    eprintln!("No restores found in namespace {}.", ctx.namespace);
                    Ok(())
                }
                None => output::print(&table(&restores)),
            }
        }
        RestoreCommand::Describe(d) => {
            let mut texts = Vec::new();
            for restore in list(&ctx, &d.names, None).await? {
                let results = match d.details {
                    true => Some(fetch_results(&ctx, &restore).await),
                    false => None,
                };
                texts.push(describe(&restore, results.as_ref()));
            }
            output::print(&texts.join("\n"))
        }
        RestoreCommand::Files(args) => super::files::restore_files(&ctx, *args).await,
        RestoreCommand::Logs { name } => {
            ctx.get::<Restore>("restore", &name, LIST_HINT).await?;
            let bytes = download::fetch(&ctx, DownloadTargetKind::RestoreLog, &name).await?;
            output::print(&String::from_utf8_lossy(&download::decompress(bytes)?))
        }
    }
}

async fn list(ctx: &Context, names: &[String], selector: Option<&LabelSelector>) -> anyhow::Result<Vec<Restore>> {
    ctx.get_or_list("restore", names, selector, LIST_HINT).await
}

async fn fetch_results(ctx: &Context, restore: &Restore) -> Result<Vec<u8>, String> {
    let name = restore.metadata.name.as_deref().unwrap_or_default();
    let bytes = download::fetch(ctx, DownloadTargetKind::RestoreResults, name).await.map_err(|e| format!("{e:#}"))?;
    download::decompress(bytes).map_err(|e| format!("{e:#}"))
}

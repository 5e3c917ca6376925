//! `stowage repo`: the volume repositories (`get`, with their last maintenance and size), their
//! maintenance on demand (`maintain`, run by the server), and `restic-env`: the restic CLI as a
//! first-class way into volume backups (seed 003: restore one deleted file), the environment a
//! user exports to run `restic snapshots` or `restic restore` against a namespace's repository.

use anyhow::Context as _;
use stowage_api::location::Provider;
use stowage_api::repo_keys::repository_password;
use stowage_api::{BackupRepository, BackupStorageLocation};

use super::output::{self, OutputFormat, Table};
use super::{Context, InstallNamespace};
use crate::cluster::ClusterArgs;

#[derive(Debug, clap::Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: RepoCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RepoCommand {
    /// List the restic repositories holding pod volume data, one per (location, namespace).
    Get {
        /// Only these repositories.
        names: Vec<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Print `export` lines (RESTIC_REPOSITORY, RESTIC_PASSWORD, storage credentials) for the
    /// repository holding one namespace's volume data, e.g. `eval "$(stowage repo restic-env app)"`.
    ResticEnv {
        /// The namespace whose pod volumes the repository holds.
        volume_namespace: String,
        /// The storage location (default: the default one).
        #[arg(long)]
        location: Option<String>,
    },
    /// Maintain the repository of one namespace's volume data now, through the server: remove
    /// stale locks, delete the data no snapshot uses any more, repack mostly unused packs.
    /// Backups and restores of that namespace wait while it runs.
    Maintain {
        /// The namespace whose pod volumes the repository holds.
        volume_namespace: String,
        /// The storage location (default: the default one).
        #[arg(long)]
        location: Option<String>,
        /// How long to wait for the server to run it.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        timeout: std::time::Duration,
    },
}

/// The variables for one repository; values are secrets, so they only ever go to stdout.
pub struct ResticEnv {
    pub vars: Vec<(&'static str, String)>,
}

/// Names only: the values are passwords and keys.
impl std::fmt::Debug for ResticEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.iter().map(|(k, _)| k)).finish()
    }
}

impl ResticEnv {
    pub fn render(&self) -> String {
        self.vars.iter().map(|(k, v)| format!("export {k}={}\n", shell_quote(v))).collect()
    }
}

fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// Builds the environment from a location, its credentials file and the master key.
pub fn restic_env(
    loc: &BackupStorageLocation,
    credentials_ini: Option<&str>,
    master_key: &[u8],
    volume_namespace: &str,
) -> anyhow::Result<ResticEnv> {
    let spec = &loc.spec;
    let repo = stowage_access::repository_of(loc, volume_namespace)?;
    let mut vars = vec![
        ("RESTIC_REPOSITORY", repo.restic_identifier.clone()),
        ("RESTIC_PASSWORD", repository_password(master_key, &repo.identity)?),
    ];
    if spec.provider_kind() == Some(Provider::Aws) {
        let region = spec.config.get("region").cloned().unwrap_or_else(|| "us-east-1".to_string());
        if let Some(ini) = credentials_ini {
            let profile = spec.config.get("profile").map(String::as_str).unwrap_or("default");
            let creds = stowage_storage::S3Credentials::from_ini(ini, profile)?;
            vars.push(("AWS_ACCESS_KEY_ID", creds.access_key_id.clone()));
            vars.push(("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.clone()));
            if let Some(token) = &creds.session_token {
                vars.push(("AWS_SESSION_TOKEN", token.clone()));
            }
        }
        vars.push(("AWS_DEFAULT_REGION", region));
    }
    Ok(ResticEnv { vars })
}

pub async fn run(args: RepoArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    match args.command {
        RepoCommand::Get { names, output } => {
            let repos: Vec<BackupRepository> = ctx.get_or_list("repository", &names, None, "stowage repo get").await?;
            match output.object_format() {
                Some(format) => output::print(&output::render_objects(&repos, names.len() == 1, format)?),
                None if repos.is_empty() => {
                    eprintln!(
                        "No repositories in namespace {}: they are created by the first backup of a pod volume.",
                        ctx.namespace
                    );
                    Ok(())
                }
                None => output::print(&table(&repos)),
            }
        }
        RepoCommand::ResticEnv { volume_namespace, location } => {
            let loc = location_of(&ctx, location.as_deref()).await?;
            let key = stowage_access::master_key(&ctx.client, &ctx.namespace).await?;
            let ini = stowage_access::credentials_file(&ctx.client, &ctx.namespace, &loc).await?;
            let env = restic_env(&loc, ini.as_deref(), &key, &volume_namespace)?;
            crate::cli::write_stdout(env.render().as_bytes())?;
            Ok(())
        }
        RepoCommand::Maintain { volume_namespace, location, timeout } => maintain(&ctx, &volume_namespace, location.as_deref(), timeout).await,
    }
}

/// The named storage location, or the default one.
async fn location_of(ctx: &Context, location: Option<&str>) -> anyhow::Result<BackupStorageLocation> {
    let locs = ctx.api::<BackupStorageLocation>();
    Ok(match location {
        Some(n) => locs.get_opt(n).await?.with_context(|| {
            format!("storage location {n:?} not found in namespace {}; list them with `stowage backup-location get`", ctx.namespace)
        })?,
        None => locs.list(&Default::default()).await?.items.into_iter().find(|l| l.spec.default).with_context(|| {
            format!("no default storage location in namespace {}; pass --location", ctx.namespace)
        })?,
    })
}

/// Asks the server to maintain the repository now and waits for the run's result.
async fn maintain(ctx: &Context, volume_namespace: &str, location: Option<&str>, timeout: std::time::Duration) -> anyhow::Result<()> {
    use crate::server::maintenance::REQUESTED;
    use stowage_api::repository::MaintenanceResult;
    let loc = location_of(ctx, location).await?;
    let loc_name = loc.metadata.name.clone().unwrap_or_default();
    let name = stowage_access::repository_object_name(&loc_name, volume_namespace);
    let api = ctx.api::<BackupRepository>();
    if api.get_opt(&name).await?.is_none() {
        anyhow::bail!(
            "no repository holds volume data of namespace {volume_namespace} in storage location {loc_name:?}: \
             one is created by the first backup of a pod volume there (`stowage repo get` lists them)"
        );
    }
    // As the annotation holds it (whole seconds), which the server compares runs with.
    let requested: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time = serde_json::from_value(serde_json::to_value(crate::locations::now())?)?;
    let patch = serde_json::json!({"metadata": {"annotations": {REQUESTED: requested}}});
    api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
    eprintln!("Maintenance of repository {name} requested; waiting for the server (up to {}).", humantime::format_duration(timeout));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let repo = api.get(&name).await?;
        let status = repo.status.unwrap_or_default();
        if let Some(run) = status.recent_maintenance.iter().rev().find(|r| r.start_timestamp.0 >= requested.0) {
            let line = format!("{:?}: {}", run.result, run.message);
            return match run.result {
                MaintenanceResult::Succeeded => {
                    println!("Repository {name}: {line}");
                    Ok(())
                }
                MaintenanceResult::Failed => anyhow::bail!("maintenance of repository {name} failed: {}", run.message),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            let waits = status.message.map(|m| format!(": {m}")).unwrap_or_default();
            anyhow::bail!(
                "the server has not maintained repository {name} within {}{waits}; it stays requested and runs once nothing holds the repository",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `NAME  VOLUME NAMESPACE  LOCATION  PHASE  LAST MAINTENANCE  SIZE  REPOSITORY`.
pub fn table(repos: &[BackupRepository]) -> String {
    let mut t = Table::new(&["NAME", "VOLUME NAMESPACE", "LOCATION", "PHASE", "LAST MAINTENANCE", "SIZE", "REPOSITORY"]);
    for r in repos {
        let status = r.status.clone().unwrap_or_default();
        t.row(vec![
            r.metadata.name.clone().unwrap_or_default(),
            r.spec.volume_namespace.clone(),
            r.spec.backup_storage_location.clone(),
            status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "New".into()),
            output::time(status.last_maintenance_time.as_ref()),
            status.size_bytes.map(output::human_bytes).unwrap_or_else(|| "<unknown>".into()),
            r.spec.restic_identifier.clone(),
        ]);
    }
    t.render()
}


#[cfg(test)]
mod tests {
    use super::*;

    fn location(spec: serde_json::Value) -> BackupStorageLocation {
        serde_json::from_value(serde_json::json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "stowage"}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn s3_repository_env_names_endpoint_bucket_prefix_and_credentials() {
        let loc = location(serde_json::json!({"provider": "aws", "objectStorage": {"bucket": "velero", "prefix": "/c1/"},
            "config": {"region": "minio", "s3Url": "http://minio:9000/"}}));
        let env = restic_env(&loc, Some("[default]\naws_access_key_id=AK\naws_secret_access_key=it's\n"), &[3u8; 32], "app").unwrap();
        let text = env.render();
        assert!(text.contains("export RESTIC_REPOSITORY='s3:http://minio:9000/velero/c1/restic/app'\n"), "{text}");
        assert!(text.contains("export AWS_ACCESS_KEY_ID='AK'\n"), "{text}");
        assert!(text.contains(r"export AWS_SECRET_ACCESS_KEY='it'\''s'"), "{text}");
        let expected = repository_password(&[3u8; 32], "aws:velero/c1/restic/app").unwrap();
        assert!(text.contains(&format!("export RESTIC_PASSWORD='{expected}'")), "{text}");
    }

    #[test]
    fn repositories_table_lists_namespace_location_and_phase() {
        let repo: BackupRepository = serde_json::from_value(serde_json::json!({"apiVersion": "stowage.io/v1alpha1",
            "kind": "BackupRepository", "metadata": {"name": "app-default-x1", "namespace": "stowage"},
            "spec": {"volumeNamespace": "app", "backupStorageLocation": "default",
                "resticIdentifier": "s3:http://minio:9000/velero/restic/app"},
            "status": {"phase": "Ready", "sizeBytes": 1610612736u64}}))
        .unwrap();
        let text = table(&[repo]);
        assert!(text.contains("1.5 GiB"), "{text}");
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("NAME"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row[..4], ["app-default-x1", "app", "default", "Ready"]);
        assert_eq!(row.last(), Some(&"s3:http://minio:9000/velero/restic/app"));
    }

    #[test]
    fn filesystem_repository_is_a_path() {
        let loc = location(serde_json::json!({"provider": "filesystem", "objectStorage": {"bucket": "/var/backups"}}));
        let env = restic_env(&loc, None, &[3u8; 32], "app").unwrap();
        assert_eq!(env.vars[0], ("RESTIC_REPOSITORY", "/var/backups/restic/app".to_string()));
        assert!(restic_env(&loc, None, &[3u8; 5], "app").unwrap_err().to_string().contains("master key"));
    }
}

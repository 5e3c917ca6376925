//! `stowage backup-location create|get`.

use k8s_openapi::api::core::v1::{Secret, SecretKeySelector};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use stowage_api::location::{AccessMode, ObjectStorageLocation, Provider};
use stowage_api::{BackupStorageLocation, BackupStorageLocationSpec};

use super::filters::{self, parse_key_values};
use super::output::{self, time, OutputFormat, Table};
use super::{Context, Explain, InstallNamespace};
use crate::cluster::ClusterArgs;

#[derive(Debug, clap::Args)]
pub struct LocationArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: LocationCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LocationCommand {
    /// Add a place to keep backups.
    Create(CreateArgs),
    /// List storage locations and whether they are reachable.
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stowage backup-location create minio --provider aws --bucket stowage \\
    --config region=minio,s3ForcePathStyle=true,s3Url=http://minio.minio.svc:9000 \\
    --credential cloud-credentials=cloud
  stowage backup-location create old-cluster --provider aws --bucket old --access-mode ReadOnly")]
pub struct CreateArgs {
    pub name: String,
    /// The object store: aws (S3 or S3-compatible) or filesystem.
    #[arg(long, value_parser = parse_provider)]
    pub provider: Provider,
    /// The bucket (for filesystem: an absolute directory).
    #[arg(long)]
    pub bucket: String,
    /// A path inside the bucket under which everything is kept.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Provider settings, e.g. region=minio,s3ForcePathStyle=true,s3Url=http://minio:9000.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub config: Vec<String>,
    /// The Secret key holding the credentials file, as SECRET=KEY [default: the server's].
    #[arg(long, value_parser = parse_credential, value_name = "SECRET=KEY")]
    pub credential: Option<SecretKeySelector>,
    /// Make this the default location (the current default stops being one).
    #[arg(long)]
    pub default: bool,
    /// ReadOnly locations are only restored from (e.g. another cluster's backups).
    #[arg(long, value_parser = parse_access_mode, value_name = "ReadWrite|ReadOnly")]
    pub access_mode: Option<AccessMode>,
    /// How often backups in the location are synced into the cluster (Go duration; 0s: never).
    #[arg(long, value_parser = filters::parse_duration, value_name = "DURATION")]
    pub backup_sync_period: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The location to show [default: all].
    pub name: Option<String>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

fn parse_provider(value: &str) -> Result<Provider, String> {
    Provider::parse(value)
        .ok_or_else(|| format!("unknown provider {value:?}; use aws (S3 or S3-compatible) or filesystem"))
}

fn parse_access_mode(value: &str) -> Result<AccessMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "readwrite" => Ok(AccessMode::ReadWrite),
        "readonly" => Ok(AccessMode::ReadOnly),
        _ => Err(format!("unknown access mode {value:?}; use ReadWrite or ReadOnly")),
    }
}

fn parse_credential(value: &str) -> Result<SecretKeySelector, String> {
    match value.split_once('=') {
        Some((name, key)) if !name.trim().is_empty() && !key.trim().is_empty() => {
            Ok(SecretKeySelector { name: name.trim().into(), key: key.trim().into(), optional: None })
        }
        _ => Err(format!("{value:?} is not SECRET=KEY; write e.g. --credential cloud-credentials=cloud")),
    }
}

impl CreateArgs {
    pub fn spec(&self) -> Result<BackupStorageLocationSpec, String> {
        let bucket = self.bucket.trim();
        match self.provider {
            Provider::Aws if bucket.is_empty() || bucket.contains(['/', ':']) => {
                return Err(format!("--bucket {bucket:?} is not a bucket name; pass the name only, without s3:// or a path (use --prefix for a path)"));
            }
            Provider::Filesystem if !bucket.starts_with('/') => {
                return Err(format!(
                    "--bucket must be an absolute directory with --provider filesystem, got {bucket:?}"
                ));
            }
            _ => {}
        }
        let prefix = self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
        Ok(BackupStorageLocationSpec {
            provider: self.provider.as_str().to_string(),
            object_storage: ObjectStorageLocation {
                bucket: bucket.to_string(),
                prefix: prefix.map(String::from),
                ca_cert: None,
            },
            config: parse_key_values("--config", &self.config)?,
            credential: self.credential.clone(),
            default: self.default,
            access_mode: self.access_mode,
            backup_sync_period: self.backup_sync_period.clone(),
            validation_frequency: None,
        })
    }
}

pub async fn run(args: LocationArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    match args.command {
        LocationCommand::Create(create) => run_create(&ctx, create).await,
        LocationCommand::Get(get) => {
            let names: Vec<String> = get.name.iter().cloned().collect();
            let locations: Vec<BackupStorageLocation> =
                ctx.get_or_list("storage location", &names, None, "stowage backup-location get").await?;
            match get.output.object_format() {
                Some(format) => output::print(&output::render_objects(&locations, get.name.is_some(), format)?),
                None if locations.is_empty() => {
                    eprintln!(
                        "No storage locations found in namespace {}; add one with `stowage backup-location create`.",
                        ctx.namespace
                    );
                    Ok(())
                }
                None => output::print(&table(&locations)),
            }
        }
    }
}

async fn run_create(ctx: &Context, args: CreateArgs) -> anyhow::Result<()> {
    let spec = args.spec().map_err(anyhow::Error::msg)?;
    filters::check_name("storage location name", &args.name).map_err(anyhow::Error::msg)?;
    if let Some(credential) = &spec.credential {
        warn_if_missing(ctx, credential).await;
    }
    let api = ctx.api::<BackupStorageLocation>();
    let location = BackupStorageLocation::new(&args.name, spec);
    match api.create(&PostParams::default(), &location).await {
        Err(kube::Error::Api(status)) if status.code == 409 => anyhow::bail!(
            "storage location {:?} already exists in namespace {}; see it with `stowage backup-location get {}`",
            args.name,
            ctx.namespace,
            args.name
        ),
        result => result.explain(|| format!("creating storage location {:?}", args.name), &ctx.namespace)?,
    };
    println!("Backup storage location {:?} configured successfully.", args.name);
    if args.default {
        let others =
            api.list(&ListParams::default()).await.explain(|| "listing storage locations".into(), &ctx.namespace)?;
        let patch = Patch::Merge(serde_json::json!({"spec": {"default": false}}));
        for other in others.items.iter().filter(|l| l.spec.default && l.metadata.name.as_ref() != Some(&args.name)) {
            let name = other.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &patch)
                .await
                .explain(|| format!("making storage location {name:?} no longer the default"), &ctx.namespace)?;
            println!("Backup storage location {name:?} is no longer the default.");
        }
    }
    Ok(())
}

/// A location whose credentials Secret is missing fails later on the server; say so now.
async fn warn_if_missing(ctx: &Context, credential: &SecretKeySelector) {
    let (name, key) = (&credential.name, &credential.key);
    match ctx.api::<Secret>().get_opt(name).await {
        Ok(Some(secret)) if secret.data.as_ref().is_some_and(|d| d.contains_key(key)) => {}
        Ok(Some(_)) => {
            eprintln!("warning: Secret {name:?} has no key {key:?}; the location will be Unavailable until it does")
        }
        Ok(None) => eprintln!(
            "warning: Secret {name:?} does not exist in namespace {}; create it before the location is used",
            ctx.namespace
        ),
        Err(e) => tracing::debug!("could not check Secret {name}: {e}"),
    }
}

pub fn table(locations: &[BackupStorageLocation]) -> String {
    let mut table =
        Table::new(&["NAME", "PROVIDER", "BUCKET/PREFIX", "PHASE", "LAST VALIDATED", "ACCESS MODE", "DEFAULT"]);
    for location in locations {
        let spec = &location.spec;
        let status = location.status.clone().unwrap_or_default();
        let storage = &spec.object_storage;
        let bucket = match &storage.prefix {
            Some(prefix) => format!("{}/{prefix}", storage.bucket),
            None => storage.bucket.clone(),
        };
        table.row(vec![
            location.metadata.name.clone().unwrap_or_default(),
            spec.provider.clone(),
            bucket,
            status.phase.map_or("Unknown".to_string(), |p| format!("{p:?}")),
            time(status.last_validation_time.as_ref()),
            format!("{:?}", spec.access_mode()),
            if spec.default { "true".to_string() } else { String::new() },
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use stowage_api::location::{BackupStorageLocationStatus, LocationPhase};

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn args(argv: &[&str]) -> Result<CreateArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("create").chain(argv.iter().copied())).map(|h| h.args)
    }

    #[test]
    fn velero_style_flags_make_the_spec() {
        let a = args(&[
            "minio",
            "--provider",
            "aws",
            "--bucket",
            "velero",
            "--prefix",
            "/cluster-a/",
            "--config",
            "region=minio,s3ForcePathStyle=\"true\"",
            "--credential",
            "cloud-credentials=cloud",
            "--default",
            "--access-mode",
            "ReadOnly",
            "--backup-sync-period",
            "1m",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(a.spec().unwrap()).unwrap(),
            serde_json::json!({
                "provider": "aws",
                "objectStorage": {"bucket": "velero", "prefix": "cluster-a"},
                "config": {"region": "minio", "s3ForcePathStyle": "true"},
                "credential": {"name": "cloud-credentials", "key": "cloud"},
                "default": true,
                "accessMode": "ReadOnly",
                "backupSyncPeriod": "1m0s"
            })
        );
    }

    #[test]
    fn bad_flags_say_what_to_write() {
        let err = args(&["l", "--provider", "gcp", "--bucket", "b"]).unwrap_err().to_string();
        assert!(err.contains("use aws"), "{err}");
        let err = args(&["l", "--provider", "aws", "--bucket", "b", "--access-mode", "rw"]).unwrap_err().to_string();
        assert!(err.contains("ReadWrite or ReadOnly"), "{err}");
        let err = args(&["l", "--provider", "aws", "--bucket", "b", "--credential", "x"]).unwrap_err().to_string();
        assert!(err.contains("SECRET=KEY"), "{err}");
        let a = args(&["l", "--provider", "aws", "--bucket", "s3://b/p"]).unwrap();
        assert!(a.spec().unwrap_err().contains("--prefix"));
        let a = args(&["l", "--provider", "filesystem", "--bucket", "rel/dir"]).unwrap();
        assert!(a.spec().unwrap_err().contains("absolute"));
        let a = args(&["l", "--provider", "velero.io/aws", "--bucket", "b", "--config", "region"]).unwrap();
        assert!(a.spec().unwrap_err().contains("KEY=VALUE"));
    }

    #[test]
    fn golden_table() {
        let mut a = BackupStorageLocation::new(
            "default",
            args(&["x", "--provider", "aws", "--bucket", "velero", "--prefix", "p", "--default"])
                .unwrap()
                .spec()
                .unwrap(),
        );
        a.status = Some(BackupStorageLocationStatus {
            phase: Some(LocationPhase::Available),
            last_validation_time: Some(Time("2024-05-01T10:00:00Z".parse().unwrap())),
            ..Default::default()
        });
        let b = BackupStorageLocation::new(
            "local",
            args(&["x", "--provider", "filesystem", "--bucket", "/srv/backups", "--access-mode", "readonly"])
                .unwrap()
                .spec()
                .unwrap(),
        );
        assert_eq!(
            table(&[a, b]),
            "NAME      PROVIDER     BUCKET/PREFIX   PHASE       LAST VALIDATED                  ACCESS MODE   DEFAULT\n\
             default   aws          velero/p        Available   2024-05-01 10:00:00 +0000 UTC   ReadWrite     true\n\
             local     filesystem   /srv/backups    Unknown     <n/a>                           ReadOnly\n"
        );
    }
}

//! `stowage install` flags, and their resolution into an [`InstallPlan`] (everything checked,
//! files read) before any object is built.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::ValueEnum;
use stowage_api::location::Provider;
use stowage_api::names;

use super::credentials::CredentialsFile;
use super::{location_config, InstallError};

/// The image installed when `--image` is not given.
pub const DEFAULT_IMAGE: &str = concat!("stowage/stowage:", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Example (MinIO):
  stowage install --provider aws --bucket stowage --secret-file ./credentials-minio \\
    --backup-location-config region=minio,s3ForcePathStyle=true,s3Url=http://minio.minio.svc:9000

Print the objects instead of installing them:
  stowage install ... --dry-run -o yaml > stowage.yaml")]
pub struct InstallArgs {
    /// The namespace to install into.
    #[arg(short, long, default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// The object store of the default backup location.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderArg>,

    /// The bucket backups go to (for `filesystem`: an absolute directory on the nodes).
    #[arg(long)]
    pub bucket: Option<String>,

    /// A path inside the bucket under which everything is kept.
    #[arg(long)]
    pub prefix: Option<String>,

    /// Provider settings, e.g. region=minio,s3ForcePathStyle=true,s3Url=http://minio:9000.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub backup_location_config: Vec<String>,

    /// AWS-style credentials file for the object store, stored in the Secret `cloud-credentials`.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Create no credentials Secret (the pods get credentials another way).
    #[arg(long, conflicts_with = "secret_file")]
    pub no_secret: bool,

    /// Create no BackupStorageLocation (create one later with kubectl).
    #[arg(long, conflicts_with_all = ["provider", "bucket", "prefix", "backup_location_config"])]
    pub no_default_backup_location: bool,

    /// Deploy the node agent DaemonSet, needed for pod volume backups [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub use_node_agent: Option<bool>,

    /// Do not deploy the node agent (object-only backups).
    #[arg(long, conflicts_with = "use_node_agent")]
    pub no_node_agent: bool,

    /// The kubelet's pod directory on the nodes (RancherOS, OpenShift and PKS move it).
    #[arg(long, default_value = names::DEFAULT_KUBELET_PODS_DIR, value_name = "DIR")]
    pub kubelet_pods_dir: String,

    /// How many pod volumes each node agent backs up or restores at once.
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub node_agent_concurrency: u32,

    /// The image of the server and node agents.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// The image of the init container that holds restored pods until their volume data is back.
    #[arg(long, default_value = names::DEFAULT_RESTORE_HELPER_IMAGE)]
    pub restore_helper_image: String,

    /// Back up every pod volume unless opted out, for backups that do not say.
    #[arg(long)]
    pub default_volumes_to_fs_backup: bool,

    /// The most extensions loaded from other namespaces than Stowage's may be granted, written
    /// like the `capabilities` of an extension's config.yaml, e.g.
    /// `{log: true, clock: true, kubeRead: [pods], exec: [{container: mysql}]}`.
    /// The server's default is `{log: true, clock: true}`.
    #[arg(long)]
    pub namespaced_extension_capabilities: Option<String>,

    /// How often each volume repository is maintained (stale locks removed, unused data
    /// pruned), unless its BackupRepository says otherwise (Go duration; the server's default
    /// is 168h).
    #[arg(long)]
    pub default_repo_maintain_frequency: Option<String>,

    /// Serve the read-only web dashboard from the server (no login: reach it with
    /// `kubectl -n <namespace> port-forward deploy/stowage <port>`).
    #[arg(long)]
    pub dashboard: bool,

    /// The dashboard's container port.
    #[arg(long, default_value_t = names::DASHBOARD_PORT, value_name = "PORT", requires = "dashboard",
        value_parser = clap::value_parser!(u16).range(1..))]
    pub dashboard_port: u16,

    /// Server replicas: one leads (a Lease), the others stand by to take over.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..=10))]
    pub replicas: i32,

    /// Print the objects instead of applying them (as YAML unless -o says otherwise).
    #[arg(long)]
    pub dry_run: bool,

    /// Print the objects in this format (applied as well, unless --dry-run).
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,

    /// Wait until the server and node agents are ready.
    #[arg(long)]
    pub wait: bool,

    /// How long to wait for CRDs, and with --wait for the pods (Go duration).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    stowage_api::duration::parse(value).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// S3 and S3-compatible stores (MinIO, Ceph, garage, ...).
    Aws,
    /// A directory on the nodes (single-node clusters, or a shared mount on every node).
    Filesystem,
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Provider {
        match p {
            ProviderArg::Aws => Provider::Aws,
            ProviderArg::Filesystem => Provider::Filesystem,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// A checked install: what the objects are built from.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    pub namespace: String,
    pub image: String,
    pub restore_helper_image: String,
    pub location: Option<LocationPlan>,
    pub credentials: Option<CredentialsFile>,
    pub node_agent: Option<NodeAgentPlan>,
    pub default_volumes_to_fs_backup: bool,
    /// The server's `--namespaced-extension-capabilities`, checked.
    pub namespaced_extension_capabilities: Option<String>,
    /// Server replicas (one leads).
    pub replicas: i32,
    /// The server's `--default-repo-maintain-frequency`, checked.
    pub default_repo_maintain_frequency: Option<String>,
    /// The dashboard's port, when the server serves one.
    pub dashboard_port: Option<u16>,
    /// Things the user should know, printed before installing.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LocationPlan {
    pub provider: Provider,
    pub bucket: String,
    pub prefix: Option<String>,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct NodeAgentPlan {
    pub kubelet_pods_dir: String,
    pub concurrency: u32,
}

impl InstallArgs {
    /// Checks the flags and reads the secret file.
    pub fn resolve(&self) -> Result<InstallPlan, InstallError> {
        check_namespace(&self.namespace)?;
        if self.image.trim().is_empty() {
            return Err(InstallError::EmptyImage);
        }
        let mut warnings = Vec::new();
        let location = self.resolve_location(&mut warnings)?;
        let credentials = self.resolve_credentials(&location)?;
        if location.as_ref().is_some_and(|l| l.provider == Provider::Filesystem) {
            warnings.push(
                "--provider filesystem keeps backups in a directory on the node running the server; \
                 on a cluster of several nodes it must be shared storage mounted at the same path on every node"
                    .to_string(),
            );
        }
        let node_agent = if self.no_node_agent || self.use_node_agent == Some(false) {
            None
        } else {
            if !self.kubelet_pods_dir.starts_with('/') {
                return Err(InstallError::RelativeKubeletDir(self.kubelet_pods_dir.clone()));
            }
            Some(NodeAgentPlan {
                kubelet_pods_dir: self.kubelet_pods_dir.clone(),
                concurrency: self.node_agent_concurrency,
            })
        };
        if node_agent.is_none() && self.default_volumes_to_fs_backup {
            warnings.push(
                "--default-volumes-to-fs-backup has no effect without the node agent: volume backups will fail"
                    .to_string(),
            );
        }
        let namespaced_extension_capabilities = match &self.namespaced_extension_capabilities {
            Some(text) => {
                stowage_runtime::Capabilities::from_yaml(text)
                    .map_err(|e| InstallError::ExtensionCapabilities(e.to_string()))?;
                Some(text.trim().to_string())
            }
            None => None,
        };
        let default_repo_maintain_frequency = match &self.default_repo_maintain_frequency {
            Some(f) => {
                stowage_api::duration::parse(f.trim()).map_err(|e| InstallError::MaintainFrequency(format!("{f:?}: {e}")))?;
                Some(f.trim().to_string())
            }
            None => None,
        };
        Ok(InstallPlan {
            namespace: self.namespace.clone(),
            image: self.image.trim().to_string(),
            restore_helper_image: self.restore_helper_image.trim().to_string(),
            location,
            credentials,
            node_agent,
            default_volumes_to_fs_backup: self.default_volumes_to_fs_backup,
            namespaced_extension_capabilities,
            replicas: self.replicas,
            default_repo_maintain_frequency,
            dashboard_port: self.dashboard.then_some(self.dashboard_port),
            warnings,
        })
    }

    fn resolve_location(&self, warnings: &mut Vec<String>) -> Result<Option<LocationPlan>, InstallError> {
        if self.no_default_backup_location {
            return Ok(None);
        }
        let provider: Provider = self.provider.ok_or(InstallError::MissingProvider)?.into();
        let bucket = self.bucket.as_deref().map(str::trim).filter(|b| !b.is_empty());
        let bucket = match provider {
            Provider::Aws => {
                let what = "the bucket backups go to (create it in the object store first)";
                let bucket = bucket.ok_or(InstallError::MissingBucket { provider: "aws", what })?;
                if bucket.contains('/') || bucket.contains(':') {
                    return Err(InstallError::BadBucket(bucket.to_string()));
                }
                bucket
            }
            Provider::Filesystem => {
                let what = "the absolute directory backups go to";
                let dir = bucket.ok_or(InstallError::MissingBucket { provider: "filesystem", what })?;
                if !dir.starts_with('/') {
                    return Err(InstallError::FilesystemBucketNotAbsolute(dir.to_string()));
                }
                dir
            }
        };
        let (config, config_warnings) = location_config::parse(&self.backup_location_config, Some(provider))?;
        warnings.extend(config_warnings);
        let prefix = self.prefix.as_deref().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
        Ok(Some(LocationPlan { provider, bucket: bucket.to_string(), prefix: prefix.map(String::from), config }))
    }

    fn resolve_credentials(&self, location: &Option<LocationPlan>) -> Result<Option<CredentialsFile>, InstallError> {
        let Some(path) = &self.secret_file else {
            let needs_secret = location.as_ref().is_some_and(|l| l.provider == Provider::Aws);
            if needs_secret && !self.no_secret {
                return Err(InstallError::MissingSecretFile);
            }
            return Ok(None);
        };
        let contents =
            std::fs::read(path).map_err(|error| InstallError::UnreadableSecretFile { path: path.clone(), error })?;
        let profile = location.as_ref().and_then(|l| l.config.get("profile")).map_or("default", String::as_str);
        CredentialsFile::parse(contents, profile)
            .map(Some)
            .map_err(|problem| InstallError::MalformedSecretFile { path: path.clone(), problem })
    }
}

fn check_namespace(ns: &str) -> Result<(), InstallError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InstallError::BadNamespace(ns.to_string()))
    }
}

//! `stowage backup create`: flags → checked BackupSpec → Backup CR, optionally followed.

use kube::api::PostParams;
use stowage_api::location::AccessMode;
use stowage_api::{labels, Backup, BackupSpec, BackupStorageLocation, Schedule};

use crate::commands::filters::{self, FilterArgs};
use crate::commands::output::{self, ObjectFormat};
use crate::commands::{wait, Context, Explain};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stowage backup create nginx-backup --include-namespaces nginx-example
  stowage backup create web --selector 'app in (web,api)' --ttl 72h --wait
  stowage backup create --from-schedule nightly")]
pub struct CreateArgs {
    /// The backup's name [default with --from-schedule: SCHEDULE-YYYYMMDDhhmmss].
    #[arg(required_unless_present = "from_schedule")]
    pub name: Option<String>,
    #[command(flatten)]
    pub settings: BackupSettings,
    /// Labels to put on the backup (KEY=VALUE,...).
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub labels: Vec<String>,
    /// Take the backup's settings from this schedule's template (other settings flags are
    /// not allowed with it).
    #[arg(long, value_name = "SCHEDULE")]
    pub from_schedule: Option<String>,
    /// Wait until the backup has finished, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Print the created backup.
    #[arg(short, long, value_enum)]
    pub output: Option<ObjectFormat>,
}

/// What a backup covers and how it is kept: the flags `backup create` and `schedule create`
/// share.
#[derive(Debug, clap::Args)]
pub struct BackupSettings {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// How long to keep the backup (Go duration: 720h, 72h30m) [default: 720h].
    #[arg(long, value_parser = filters::parse_duration)]
    pub ttl: Option<String>,
    /// The storage location to write to [default: the default location].
    #[arg(long, value_name = "LOCATION")]
    pub storage_location: Option<String>,
    /// Back up every pod volume unless opted out, instead of only annotated ones
    /// [default: the server's setting].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub default_volumes_to_fs_backup: Option<bool>,
    /// Also back up the data of claims no pod mounts, through short-lived access pods.
    #[arg(long)]
    pub backup_unmounted_volumes: bool,
    /// Opt-in extensions to run as well as the always-on ones, comma-separated (`name` in
    /// Stowage's namespace or `namespace/name`); the backup fails validation unless each is
    /// loaded and active.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub extensions: Vec<String>,
}

impl BackupSettings {
    /// The spec the flags ask for.
    pub fn spec(&self) -> Result<BackupSpec, String> {
        self.filters.check()?;
        crate::commands::filters::check_extension_names(&self.extensions)?;
        let f = &self.filters;
        Ok(BackupSpec {
            included_namespaces: f.include_namespaces.clone(),
            excluded_namespaces: f.exclude_namespaces.clone(),
            included_resources: f.include_resources.clone(),
            excluded_resources: f.exclude_resources.clone(),
            include_cluster_resources: f.include_cluster_resources,
            label_selector: f.selector.clone(),
            or_label_selectors: f.or_selectors(),
            ttl: self.ttl.clone().unwrap_or_else(|| BackupSpec::default().ttl),
            storage_location: self.storage_location.clone(),
            default_volumes_to_fs_backup: self.default_volumes_to_fs_backup,
            backup_unmounted_volumes: self.backup_unmounted_volumes,
            extensions: self.extensions.iter().map(|e| e.trim().to_string()).collect(),
            ..BackupSpec::default()
        })
    }

    /// Whether any setting was given.
    pub fn any(&self) -> bool {
        self.filters.any()
            || self.ttl.is_some()
            || self.storage_location.is_some()
            || self.default_volumes_to_fs_backup.is_some()
            || self.backup_unmounted_volumes
            || !self.extensions.is_empty()
    }
}

impl CreateArgs {
    /// The spec the flags ask for (everything but what a schedule provides).
    pub fn spec(&self) -> Result<BackupSpec, String> {
        self.settings.spec()
    }

    fn check_from_schedule(&self) -> Result<(), String> {
        if self.settings.any() {
            return Err("--from-schedule takes every setting from the schedule's template; drop the other \
                        flags (only NAME, --labels, --wait and -o go with it)"
                .into());
        }
        Ok(())
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<()> {
        let mut spec = self.spec().map_err(anyhow::Error::msg)?;
        let mut backup_labels = filters::parse_key_values("--labels", &self.labels).map_err(anyhow::Error::msg)?;
        let name = match &self.from_schedule {
            Some(schedule) => {
                self.check_from_schedule().map_err(anyhow::Error::msg)?;
                let schedule_obj =
                    ctx.get::<Schedule>("schedule", schedule, "kubectl get schedules.stowage.io").await?;
                spec = schedule_obj.spec.template;
                backup_labels.insert(labels::SCHEDULE_NAME.name.to_string(), schedule.clone());
                let now = k8s_openapi::jiff::Timestamp::now();
                self.name.clone().unwrap_or_else(|| filters::timestamped_name(schedule, now))
            }
            None => self.name.clone().unwrap_or_default(),
        };
        filters::check_name("backup name", &name).map_err(anyhow::Error::msg)?;
        if let Some(location) = &spec.storage_location {
            check_location(ctx, location, "backups").await?;
        }

        let mut backup = Backup::new(&name, spec);
        if !backup_labels.is_empty() {
            backup.metadata.labels = Some(backup_labels);
        }
        let created = create(ctx, &backup).await?;
        let message = format!(
            "Backup request {name:?} submitted successfully.\n\
             Run `stowage backup describe {name}` or `stowage backup logs {name}` for more details."
        );
        match self.output {
            Some(format) => {
                output::print(&output::render_objects(&[&created], true, format)?)?;
                eprintln!("{message}");
            }
            None => println!("{message}"),
        }
        if self.wait {
            let done = wait::until_done::<Backup>(ctx.client.clone(), &ctx.namespace, &name).await?;
            let verdict = wait::verdict("backup", &name, &wait::Tracked::progress(&done))?;
            println!("{verdict}");
        }
        Ok(())
    }
}

async fn create(ctx: &Context, backup: &Backup) -> anyhow::Result<Backup> {
    let name = backup.metadata.name.clone().unwrap_or_default();
    match ctx.api::<Backup>().create(&PostParams::default(), backup).await {
        Err(kube::Error::Api(status)) if status.code == 409 => anyhow::bail!(
            "backup {name:?} already exists in namespace {}; choose another name, or see it with \
             `stowage backup describe {name}`",
            ctx.namespace
        ),
        result => result.explain(|| format!("creating backup {name:?}"), &ctx.namespace),
    }
}

/// Fails early, with what to do, when the location does not exist or cannot be written.
pub async fn check_location(ctx: &Context, location: &str, what: &str) -> anyhow::Result<()> {
    let bsl = ctx.get::<BackupStorageLocation>("storage location", location, "stowage backup-location get").await?;
    if bsl.spec.access_mode() == AccessMode::ReadOnly {
        anyhow::bail!(
            "storage location {location:?} is ReadOnly: {what} cannot be written to it; choose a ReadWrite \
             location (`stowage backup-location get`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
            "nginx-backup",
            "--include-namespaces",
            "nginx-example",
            "--exclude-resources",
            "events,secrets",
            "--include-cluster-resources=false",
            "--selector",
            "app=nginx,tier in (web,db)",
            "--ttl",
            "72h",
            "--storage-location",
            "default",
            "--default-volumes-to-fs-backup",
            "--extensions",
            "mysqldump,fsfreeze",
            "--labels",
            "team=web",
        ])
        .unwrap();
        let spec = a.spec().unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "includedNamespaces": ["nginx-example"],
                "excludedResources": ["events", "secrets"],
                "includeClusterResources": false,
                "labelSelector": {
                    "matchLabels": {"app": "nginx"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "web"]}]
                },
                "ttl": "72h0m0s",
                "storageLocation": "default",
                "defaultVolumesToFsBackup": true,
                "extensions": ["mysqldump", "fsfreeze"]
            })
        );
        assert_eq!(filters::parse_key_values("--labels", &a.labels).unwrap()["team"], "web");
    }

    #[test]
    fn defaults_and_errors() {
        let spec = args(&["b"]).unwrap().spec().unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), serde_json::json!({"ttl": "720h"}), "the API default");
        assert!(args(&[]).is_err(), "NAME is required without --from-schedule");
        assert!(args(&["--from-schedule", "nightly"]).unwrap().name.is_none());
        let err = args(&["b", "--ttl", "30 days"]).unwrap_err().to_string();
        assert!(err.contains("Go duration"), "{err}");
        let err = args(&["b", "--extensions", "a,,b"]).unwrap().spec().unwrap_err();
        assert!(err.contains("is not `name` or `namespace/name`"), "{err}");
        let a = args(&["--from-schedule", "nightly", "--include-namespaces", "x"]).unwrap();
        assert!(a.check_from_schedule().unwrap_err().contains("--from-schedule"));
        let a = args(&["--from-schedule", "nightly", "--ttl", "1h"]).unwrap();
        assert!(a.check_from_schedule().is_err());
        let a = args(&["--from-schedule", "nightly", "--labels", "a=b"]).unwrap();
        assert!(a.check_from_schedule().is_ok());
    }
}

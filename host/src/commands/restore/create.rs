//! `stowage restore create`: a Restore CR from a backup (or a schedule's latest backup).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::TypedLocalObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use stowage_api::backup::BackupPhase;
use stowage_api::restore::ExistingResourcePolicy;
use stowage_api::{Backup, Restore, RestoreSpec, Schedule};

use crate::commands::filters::{self, FilterArgs};
use crate::commands::output::{self, ObjectFormat};
use crate::commands::{wait, Context, Explain};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stowage restore create --from-backup nginx-backup
  stowage restore create --from-backup nginx-backup --namespace-mappings nginx-example:nginx-copy --wait
  stowage restore create --from-schedule nightly --include-resources deployments,configmaps")]
pub struct CreateArgs {
    /// The restore's name [default: BACKUP-YYYYMMDDhhmmss].
    pub name: Option<String>,
    /// The backup to restore.
    #[arg(long, value_name = "BACKUP", required_unless_present = "from_schedule", conflicts_with = "from_schedule")]
    pub from_backup: Option<String>,
    /// Restore the latest completed backup of this schedule.
    #[arg(long, value_name = "SCHEDULE")]
    pub from_schedule: Option<String>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Restore namespaces under other names: SRC:DST,SRC2:DST2.
    #[arg(long, value_parser = parse_namespace_mappings, value_name = "SRC:DST,...")]
    pub namespace_mappings: Option<NamespaceMappings>,
    /// Restore persistent volumes and their data [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub restore_volumes: Option<bool>,
    /// What to do with objects that already exist: none (skip, warn if different) or update.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub existing_resource_policy: Option<PolicyArg>,
    /// Keep the node ports of restored services [default: only those set explicitly].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub preserve_nodeports: Option<bool>,
    /// A ConfigMap (in the install namespace) of resource modifier rules to apply.
    #[arg(long, value_name = "CONFIGMAP")]
    pub resource_modifier_configmap: Option<String>,
    /// Opt-in extensions to run as well as the always-on ones, comma-separated (`name` in
    /// Stowage's namespace or `namespace/name`); the restore fails validation unless each is
    /// loaded and active.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub extensions: Vec<String>,
    /// Wait until the restore has finished, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Print the created restore.
    #[arg(short, long, value_enum)]
    pub output: Option<ObjectFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    None,
    Update,
}

/// `--namespace-mappings`' value.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceMappings(pub BTreeMap<String, String>);

pub fn parse_namespace_mappings(text: &str) -> Result<NamespaceMappings, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',') {
        let (src, dst) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not SRC:DST; write e.g. nginx-example:nginx-copy,db:db-copy"))?;
        let (src, dst) = (src.trim(), dst.trim());
        for ns in [src, dst] {
            if !is_namespace_name(ns) {
                return Err(format!(
                    "{ns:?} in {pair:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
                ));
            }
        }
        if map.insert(src.to_string(), dst.to_string()).is_some() {
            return Err(format!("namespace {src:?} is mapped twice; keep one mapping"));
        }
    }
    let mut targets: Vec<&String> = map.values().collect();
    targets.sort();
    if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two namespaces are mapped to {:?}; map each to its own namespace", w[0]));
    }
    Ok(NamespaceMappings(map))
}

fn is_namespace_name(ns: &str) -> bool {
    let b = ns.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl CreateArgs {
    pub fn spec(&self) -> Result<RestoreSpec, String> {
        self.filters.check()?;
        crate::commands::filters::check_extension_names(&self.extensions)?;
        let f = &self.filters;
        Ok(RestoreSpec {
            backup_name: self.from_backup.clone(),
            schedule_name: self.from_schedule.clone(),
            included_namespaces: f.include_namespaces.clone(),
            excluded_namespaces: f.exclude_namespaces.clone(),
            included_resources: f.include_resources.clone(),
            excluded_resources: f.exclude_resources.clone(),
            include_cluster_resources: f.include_cluster_resources,
            namespace_mapping: self.namespace_mappings.clone().map(|m| m.0).unwrap_or_default(),
            label_selector: f.selector.clone(),
            or_label_selectors: f.or_selectors(),
            restore_pvs: self.restore_volumes,
            existing_resource_policy: self.existing_resource_policy.map(|p| match p {
                PolicyArg::None => ExistingResourcePolicy::None,
                PolicyArg::Update => ExistingResourcePolicy::Update,
            }),
            preserve_node_ports: self.preserve_nodeports,
            resource_modifier: self.resource_modifier_configmap.as_ref().map(|name| TypedLocalObjectReference {
                api_group: None,
                kind: "ConfigMap".into(),
                name: name.clone(),
            }),
            extensions: self.extensions.iter().map(|e| e.trim().to_string()).collect(),
            ..RestoreSpec::default()
        })
    }

    /// The name given, or `<backup or schedule>-<YYYYMMDDhhmmss>`.
    pub fn name(&self, now: Timestamp) -> String {
        let source = self.from_backup.as_deref().or(self.from_schedule.as_deref()).unwrap_or("restore");
        self.name.clone().unwrap_or_else(|| filters::timestamped_name(source, now))
    }

    pub async fn run(&self, ctx: &Context) -> anyhow::Result<()> {
        let spec = self.spec().map_err(anyhow::Error::msg)?;
        let name = self.name(Timestamp::now());
        let what = if self.name.is_some() { "restore name" } else { "restore name (pass NAME to choose one)" };
        filters::check_name(what, &name).map_err(anyhow::Error::msg)?;
        check_source(ctx, &spec).await?;

        let restore = Restore::new(&name, spec);
        let created = match ctx.api::<Restore>().create(&PostParams::default(), &restore).await {
            Err(kube::Error::Api(status)) if status.code == 409 => {
                anyhow::bail!("restore {name:?} already exists in namespace {}; pass another NAME", ctx.namespace)
            }
            result => result.explain(|| format!("creating restore {name:?}"), &ctx.namespace)?,
        };
        let message = format!(
            "Restore request {name:?} submitted successfully.\n\
             Run `stowage restore describe {name}` or `stowage restore logs {name}` for more details."
        );
        match self.output {
            Some(format) => {
                output::print(&output::render_objects(&[&created], true, format)?)?;
                eprintln!("{message}");
            }
            None => println!("{message}"),
        }
        if self.wait {
            let done = wait::until_done::<Restore>(ctx.client.clone(), &ctx.namespace, &name).await?;
            println!("{}", wait::verdict("restore", &name, &wait::Tracked::progress(&done))?);
        }
        Ok(())
    }
}

/// The backup (or schedule) must exist, and a backup must have finished.
async fn check_source(ctx: &Context, spec: &RestoreSpec) -> anyhow::Result<()> {
    if let Some(schedule) = &spec.schedule_name {
        ctx.get::<Schedule>("schedule", schedule, "kubectl get schedules.stowage.io").await?;
        return Ok(());
    }
    let name = spec.backup_name.as_deref().unwrap_or_default();
    let backup = ctx.get::<Backup>("backup", name, "stowage backup get").await?;
    let phase = backup.status.and_then(|s| s.phase);
    match phase {
        Some(BackupPhase::Completed | BackupPhase::PartiallyFailed) => Ok(()),
        other => {
            let phase = other.map_or("New".to_string(), |p| format!("{p:?}"));
            anyhow::bail!(
                "backup {name:?} is {phase}: only Completed or PartiallyFailed backups can be restored; \
                 check it with `stowage backup describe {name}`"
            )
        }
    }
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
    fn flags_make_the_spec() {
        let a = args(&[
            "--from-backup",
            "nginx-backup",
            "--namespace-mappings",
            "nginx-example:nginx-copy,db:db-copy",
            "--restore-volumes=false",
            "--existing-resource-policy",
            "update",
            "--preserve-nodeports",
            "--resource-modifier-configmap",
            "modifiers",
            "--exclude-resources",
            "nodes,events",
            "--or-selector",
            "app=a or app=b",
            "--extensions",
            "change-image-registry, shop/mine",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(a.spec().unwrap()).unwrap(),
            serde_json::json!({
                "backupName": "nginx-backup",
                "excludedResources": ["nodes", "events"],
                "namespaceMapping": {"db": "db-copy", "nginx-example": "nginx-copy"},
                "orLabelSelectors": [{"matchLabels": {"app": "a"}}, {"matchLabels": {"app": "b"}}],
                "restorePVs": false,
                "existingResourcePolicy": "update",
                "preserveNodePorts": true,
                "resourceModifier": {"kind": "ConfigMap", "name": "modifiers"},
                "extensions": ["change-image-registry", "shop/mine"]
            })
        );
        for bad in ["a,,b", "a/b/c", "/b"] {
            let err = args(&["--from-backup", "b", "--extensions", bad]).unwrap().spec().unwrap_err();
            assert!(err.contains("is not `name` or `namespace/name`"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_default_to_the_source_and_a_utc_timestamp() {
        let now: Timestamp = "2024-05-01T03:04:05Z".parse().unwrap();
        assert_eq!(args(&["--from-backup", "b"]).unwrap().name(now), "b-20240501030405");
        assert_eq!(args(&["--from-schedule", "nightly"]).unwrap().name(now), "nightly-20240501030405");
        assert_eq!(args(&["mine", "--from-backup", "b"]).unwrap().name(now), "mine");
    }

    #[test]
    fn source_is_required_and_single() {
        assert!(args(&[]).unwrap_err().to_string().contains("--from-backup"));
        assert!(args(&["--from-backup", "b", "--from-schedule", "s"]).is_err());
        assert!(args(&["--from-backup", "b", "--existing-resource-policy", "replace"]).is_err());
    }

    #[test]
    fn namespace_mappings_are_checked() {
        let m = parse_namespace_mappings("a:b, c:d").unwrap();
        assert_eq!(m.0["c"], "d");
        for (bad, needle) in [
            ("a", "not SRC:DST"),
            ("a:B", "not a namespace name"),
            (":b", "not a namespace name"),
            ("a:b,a:c", "mapped twice"),
            ("a:x,b:x", "two namespaces are mapped to \"x\""),
        ] {
            let err = parse_namespace_mappings(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(args(&["--from-backup", "b", "--namespace-mappings", "a-b"]).is_err());
    }
}

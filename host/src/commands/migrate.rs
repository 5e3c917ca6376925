//! `stowage migrate-from-velero`: reads a cluster's Velero BackupStorageLocations and Schedules
//! and writes the Stowage equivalents (a dry run unless `--apply`). The kinds share their
//! field names, so the conversion carries every field Stowage knows and names the ones it
//! drops. The credentials Secret a location uses is copied into Stowage's namespace, never
//! printed. Backups already in the buckets come in through the locations' sync.

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Secret, SecretKeySelector};
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::{json, Value};
use stowage_api::{BackupStorageLocation, BackupStorageLocationSpec, Schedule, ScheduleSpec};

use super::{Context, InstallNamespace};
use crate::cluster::ClusterArgs;

/// Annotation on every object the migration writes: the Velero object it came from.
pub const MIGRATED_FROM: &str = "stowage.io/migrated-from";
/// Velero's server mounts this Secret (key `cloud`) for locations that name no credential.
const VELERO_DEFAULT_SECRET: &str = "cloud-credentials";
const VELERO_DEFAULT_KEY: &str = "cloud";

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Dry run by default: prints what it would create. Then:
  stowage migrate-from-velero --apply
  velero schedule pause --all        # so backups are not taken twice
Backups Velero wrote into the buckets appear as Stowage Backups after the locations' sync.")]
pub struct MigrateArgs {
    /// The namespace Velero is installed in.
    #[arg(long, default_value = "velero")]
    pub velero_namespace: String,
    /// Create the objects (without it, nothing is changed).
    #[arg(long)]
    pub apply: bool,
    /// Print the Stowage objects instead of a summary (Secrets are named, never printed).
    #[arg(short, long, value_parser = ["yaml", "json"])]
    pub output: Option<String>,
    /// Create the schedules paused, to unpause once Velero's are stopped.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub namespace: InstallNamespace,
}

/// A credentials Secret to copy: one key of a Secret in Velero's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretCopy {
    pub from: String,
    pub key: String,
    pub to: String,
}

/// One Velero object converted, and what is worth telling about it.
#[derive(Clone, Debug)]
pub struct Converted<K> {
    /// The Velero object's name.
    pub source: String,
    pub object: K,
    pub notes: Vec<String>,
    pub secret: Option<SecretCopy>,
}

/// Paths present in `input` that `output` lacks: the fields a conversion dropped.
fn dropped_paths(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(w) => dropped_paths(v, w, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_paths(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Why Stowage leaves a Velero field out, for the common ones.
fn why_dropped(path: &str) -> &'static str {
    let field = path.rsplit('.').next().unwrap_or(path);
    match field {
        "snapshotVolumes" | "volumeSnapshotLocations" | "snapshotMoveData" | "datamover" | "csiSnapshotTimeout" => {
            "Stowage takes no volume snapshots; volume data is backed up file by file (defaultVolumesToFsBackup or pod annotations)"
        }
        "itemOperationTimeout" | "uploaderConfig" => "Stowage has no such setting",
        "resourcePolicy" => "use the backup's filters instead",
        "includedClusterScopedResources" | "excludedClusterScopedResources" | "includedNamespaceScopedResources"
        | "excludedNamespaceScopedResources" => "use includedResources/excludedResources and includeClusterResources",
        _ => "Stowage does not know it",
    }
}

fn drop_notes(input: &Value, output: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    dropped_paths(input, output, "", &mut paths);
    paths.into_iter().map(|p| format!("{p} not carried over ({})", why_dropped(&p))).collect()
}

fn meta(name: &str, namespace: &str, velero_namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        annotations: Some(BTreeMap::from([(MIGRATED_FROM.to_string(), format!("velero/{velero_namespace}/{name}"))])),
        ..Default::default()
    }
}

/// A Velero BackupStorageLocation as Stowage's. `has_default_secret`: whether Velero's
/// namespace has the Secret its server falls back to.
pub fn location(
    velero: &Value,
    velero_namespace: &str,
    namespace: &str,
    has_default_secret: bool,
) -> Result<Converted<BackupStorageLocation>, String> {
    let name = velero["metadata"]["name"].as_str().ok_or("a BackupStorageLocation without a name")?;
    let mut spec_in = velero["spec"].clone();
    let mut notes = Vec::new();
    let mut spec: BackupStorageLocationSpec = serde_json::from_value(spec_in.clone())
        .map_err(|e| format!("BackupStorageLocation {velero_namespace}/{name}: {e}"))?;
    if spec.provider_kind().is_none() {
        return Err(format!(
            "BackupStorageLocation {velero_namespace}/{name}: provider {:?} is not one Stowage stores to (aws and S3-compatible stores, filesystem)",
            spec.provider
        ));
    }
    let source = match &spec.credential {
        Some(c) => Some((c.name.clone(), c.key.clone())),
        None if has_default_secret => {
            notes.push(format!(
                "it names no credential: Velero's server used Secret {velero_namespace}/{VELERO_DEFAULT_SECRET}, which is copied"
            ));
            Some((VELERO_DEFAULT_SECRET.to_string(), VELERO_DEFAULT_KEY.to_string()))
        }
        None => None,
    };
    let secret = source.map(|(from, key)| SecretCopy { to: format!("velero-{from}"), from, key });
    if let Some(s) = &secret {
        spec.credential = Some(SecretKeySelector { name: s.to.clone(), key: s.key.clone(), optional: None });
        // The credential is rewritten, not dropped.
        spec_in.as_object_mut().map(|m| m.remove("credential"));
    }
    let object = BackupStorageLocation { metadata: meta(name, namespace, velero_namespace), spec, status: None };
    notes.extend(drop_notes(&spec_in, &serde_json::to_value(&object.spec).unwrap_or_default()));
    Ok(Converted { source: name.to_string(), object, notes, secret })
}

/// A Velero Schedule as Stowage's; `paused` pauses it whatever Velero's says.
pub fn schedule(velero: &Value, velero_namespace: &str, namespace: &str, paused: bool) -> Result<Converted<Schedule>, String> {
    let name = velero["metadata"]["name"].as_str().ok_or("a Schedule without a name")?;
    let mut spec_in = velero["spec"].clone();
    let mut notes = Vec::new();
    // Velero's name before 1.10.
    if let Some(template) = spec_in.get_mut("template").and_then(Value::as_object_mut) {
        if let Some(v) = template.remove("defaultVolumesToRestic") {
            template.entry("defaultVolumesToFsBackup").or_insert(v);
        }
    }
    let mut spec: ScheduleSpec =
        serde_json::from_value(spec_in.clone()).map_err(|e| format!("Schedule {velero_namespace}/{name}: {e}"))?;
    if paused && !spec.paused {
        spec.paused = true;
        notes.push("created paused (--paused): `stowage schedule unpause` it once Velero's is stopped".into());
    }
    let object = Schedule { metadata: meta(name, namespace, velero_namespace), spec, status: None };
    notes.extend(drop_notes(&spec_in, &serde_json::to_value(&object.spec).unwrap_or_default()));
    Ok(Converted { source: name.to_string(), object, notes, secret: None })
}

fn velero_api(ctx: &Context, velero_namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("velero.io", "v1", kind), plural);
    Api::namespaced_with(ctx.client.clone(), velero_namespace, &resource)
}

async fn list_velero(ctx: &Context, velero_namespace: &str, kind: &str, plural: &str) -> anyhow::Result<Vec<Value>> {
    match velero_api(ctx, velero_namespace, kind, plural).list(&ListParams::default()).await {
        Ok(list) => {
            let mut items: Vec<Value> = list.items.into_iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect();
            items.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
            Ok(items)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
            "this cluster serves no Velero {plural} (velero.io/v1): is Velero installed? Its CRDs must still be there to read its configuration"
        ),
        Err(e) => Err(e).with_context(|| format!("listing Velero's {plural} in namespace {velero_namespace}")),
    }
}

/// What happens to one object.
enum Action {
    Create,
    /// It exists with the same spec.
    AlreadyThere,
    /// It exists and differs: left alone.
    Conflict,
}

fn action<T: PartialEq>(existing: Option<&T>, wanted: &T) -> Action {
    match existing {
        None => Action::Create,
        Some(e) if e == wanted => Action::AlreadyThere,
        Some(_) => Action::Conflict,
    }
}

pub async fn run(args: MigrateArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    let vns = args.velero_namespace.as_str();
    let velero_secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), vns);
    let has_default_secret = velero_secrets.get_opt(VELERO_DEFAULT_SECRET).await?.is_some();

    let mut locations = Vec::new();
    let mut problems = Vec::new();
    for l in list_velero(&ctx, vns, "BackupStorageLocation", "backupstoragelocations").await? {
        match location(&l, vns, &ctx.namespace, has_default_secret) {
            Ok(c) => locations.push(c),
            Err(e) => problems.push(e),
        }
    }
    let mut schedules = Vec::new();
    for s in list_velero(&ctx, vns, "Schedule", "schedules").await? {
        match schedule(&s, vns, &ctx.namespace, args.paused) {
            Ok(c) => schedules.push(c),
            Err(e) => problems.push(e),
        }
    }
    let ours = ctx.api::<BackupStorageLocation>().list(&ListParams::default()).await?.items;
    reconcile(&mut locations, &mut schedules, &ours);

    if let Some(format) = &args.output {
        let mut objects: Vec<Value> = Vec::new();
        for l in &locations {
            objects.push(with_kind(&l.object, "BackupStorageLocation"));
        }
        for s in &schedules {
            objects.push(with_kind(&s.object, "Schedule"));
        }
        print_objects(&objects, format)?;
        for l in &locations {
            if let Some(s) = &l.secret {
                eprintln!("# Secret {}/{} (key {}) is copied from {vns}/{} by --apply; it is not printed", ctx.namespace, s.to, s.key, s.from);
            }
        }
    }

    let schedules_api = ctx.api::<Schedule>();
    let existing_schedules = schedules_api.list(&ListParams::default()).await?.items;
    let say = |line: String| {
        if args.output.is_none() {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    };
    let mut created = 0;
    for l in &locations {
        let name = l.object.name_any();
        let existing = ours.iter().find(|o| o.name_any() == name).map(|o| &o.spec);
        let what = format!(
            "BackupStorageLocation {vns}/{} -> {}/{name} ({} bucket {}{})",
            l.source,
            ctx.namespace,
            l.object.spec.provider,
            l.object.spec.object_storage.bucket,
            l.object.spec.object_storage.prefix.as_deref().map(|p| format!(", prefix {p}")).unwrap_or_default()
        );
        match action(existing, &l.object.spec) {
            Action::Create => {
                say(format!("{what}: {}", if args.apply { "created" } else { "would be created" }));
                if args.apply {
                    if let Some(s) = &l.secret {
                        copy_secret(&ctx, &velero_secrets, s).await?;
                    }
                    ctx.api::<BackupStorageLocation>().create(&PostParams::default(), &l.object).await?;
                    created += 1;
                }
            }
            Action::AlreadyThere => say(format!("{what}: already there")),
            Action::Conflict => say(format!(
                "{what}: left alone, Stowage has a location of that name with other settings (compare with `stowage backup-location get {name} -o yaml`)"
            )),
        }
        if let Some(s) = &l.secret {
            say(format!("  Secret {vns}/{} (key {}) -> {}/{}", s.from, s.key, ctx.namespace, s.to));
        }
        for n in &l.notes {
            say(format!("  {n}"));
        }
    }
    for s in &schedules {
        let name = s.object.name_any();
        let existing = existing_schedules.iter().find(|o| o.name_any() == name).map(|o| &o.spec);
        let what = format!("Schedule {vns}/{} -> {}/{name} ({:?})", s.source, ctx.namespace, s.object.spec.schedule);
        match action(existing, &s.object.spec) {
            Action::Create => {
                say(format!("{what}: {}", if args.apply { "created" } else { "would be created" }));
                if args.apply {
                    schedules_api.create(&PostParams::default(), &s.object).await?;
                    created += 1;
                }
            }
            Action::AlreadyThere => say(format!("{what}: already there")),
            Action::Conflict => say(format!(
                "{what}: left alone, Stowage has a schedule of that name with another spec (`stowage schedule describe {name}`)"
            )),
        }
        for n in &s.notes {
            say(format!("  {n}"));
        }
    }
    for p in &problems {
        say(format!("not migrated: {p}"));
    }
    if locations.is_empty() && schedules.is_empty() && problems.is_empty() {
        say(format!("Velero has no BackupStorageLocations or Schedules in namespace {vns} (--velero-namespace)"));
    } else if !args.apply {
        say("Dry run: nothing was changed. Run again with --apply to create these.".into());
    } else if created > 0 && !schedules.is_empty() {
        say("Velero's schedules still run: pause them (`velero schedule pause --all`) so backups are not taken twice.".into());
    }
    anyhow::ensure!(problems.is_empty(), "{} Velero object(s) could not be migrated (see above)", problems.len());
    Ok(())
}

/// Fits the converted objects to what Stowage already has: a location whose name Stowage uses
/// for other settings is migrated as `velero-<name>`, and the schedules writing to it follow;
/// Stowage's default location stays the default.
pub fn reconcile(locations: &mut [Converted<BackupStorageLocation>], schedules: &mut [Converted<Schedule>], ours: &[BackupStorageLocation]) {
    let has_default = ours.iter().any(|l| l.spec.default);
    let mut renamed = BTreeMap::new();
    let mut velero_default = None;
    for l in locations.iter_mut() {
        let name = l.object.name_any();
        if l.object.spec.default {
            velero_default = Some(name.clone());
        }
        let taken = |n: &str| ours.iter().find(|o| o.name_any() == n).is_some_and(|o| o.spec != l.object.spec);
        if taken(&name) {
            let new = format!("velero-{name}");
            l.notes.push(format!("Stowage has a location named {name:?} with other settings: migrated as {new:?}"));
            l.object.metadata.name = Some(new.clone());
            renamed.insert(name, new);
        }
        let name = l.object.name_any();
        if l.object.spec.default && has_default && !ours.iter().any(|o| o.name_any() == name && o.spec.default) {
            l.object.spec.default = false;
            l.notes.push("not made the default: Stowage already has a default location".into());
        }
    }
    for s in schedules.iter_mut() {
        // A schedule naming no location wrote to Velero's default one: keep it writing there.
        let target = match &s.object.spec.template.storage_location {
            Some(l) => renamed.get(l).cloned(),
            None => velero_default.as_ref().and_then(|d| renamed.get(d)).cloned(),
        };
        if let Some(new) = target {
            s.notes.push(format!("its backups go to location {new:?}, where Velero's went"));
            s.object.spec.template.storage_location = Some(new);
        }
    }
}

fn with_kind<K: Serialize>(object: &K, kind: &str) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), json!("stowage.io/v1alpha1"));
        m.insert("kind".into(), json!(kind));
        m.remove("status");
    }
    v
}

fn print_objects(objects: &[Value], format: &str) -> anyhow::Result<()> {
    let text = if format == "json" {
        serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": objects}))? + "\n"
    } else {
        let mut out = String::new();
        for o in objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(o)?);
        }
        out
    };
    crate::cli::write_stdout(text.as_bytes()).context("writing the objects")
}

/// Copies one key of a Velero Secret into Stowage's namespace; an existing copy is kept.
async fn copy_secret(ctx: &Context, velero_secrets: &Api<Secret>, copy: &SecretCopy) -> anyhow::Result<()> {
    let ours: Api<Secret> = ctx.api();
    if ours.get_opt(&copy.to).await?.is_some() {
        return Ok(());
    }
    let source = velero_secrets
        .get_opt(&copy.from)
        .await?
        .with_context(|| format!("Secret {}/{} the location uses is not there", velero_secrets.resource_url(), copy.from))?;
    let value: ByteString = source
        .data
        .and_then(|d| d.get(&copy.key).cloned())
        .with_context(|| format!("Secret {} has no key {:?}", copy.from, copy.key))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(copy.to.clone()),
            annotations: Some(BTreeMap::from([(MIGRATED_FROM.to_string(), format!("velero/{}", copy.from))])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(copy.key.clone(), value)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    ours.create(&PostParams::default(), &secret).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Velero's documented location and schedule, with fields Stowage has no use for.
    fn velero_location() -> Value {
        json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
            "metadata": {"name": "default", "namespace": "velero"},
            "spec": {"provider": "aws", "objectStorage": {"bucket": "myBucket", "prefix": "cluster-a"},
                "config": {"region": "us-west-2", "profile": "default"}, "default": true, "accessMode": "ReadWrite",
                "backupSyncPeriod": "2m0s", "validationFrequency": "1m"}})
    }

    #[test]
    fn a_location_keeps_its_settings_and_gets_a_copied_credential() {
        let c = location(&velero_location(), "velero", "stowage", true).unwrap();
        assert_eq!(c.object.spec.object_storage.bucket, "myBucket");
        assert_eq!(c.object.spec.object_storage.prefix.as_deref(), Some("cluster-a"));
        assert_eq!(c.object.spec.config["region"], "us-west-2");
        assert_eq!(c.object.spec.backup_sync_period.as_deref(), Some("2m0s"));
        assert!(c.object.spec.default);
        let s = c.secret.unwrap();
        assert_eq!((s.from.as_str(), s.key.as_str(), s.to.as_str()), ("cloud-credentials", "cloud", "velero-cloud-credentials"));
        assert_eq!(c.object.spec.credential.unwrap().name, "velero-cloud-credentials");
        assert!(c.notes.iter().any(|n| n.contains("names no credential")), "{:?}", c.notes);

        let mut named = velero_location();
        named["spec"]["credential"] = json!({"name": "bsl-creds", "key": "aws"});
        let c = location(&named, "velero", "stowage", false).unwrap();
        assert_eq!(c.secret.unwrap().to, "velero-bsl-creds");
        assert!(c.notes.is_empty(), "{:?}", c.notes);

        let none = location(&velero_location(), "velero", "stowage", false).unwrap();
        assert!(none.secret.is_none() && none.object.spec.credential.is_none());

        let mut gcp = velero_location();
        gcp["spec"]["provider"] = json!("velero.io/gcp");
        assert!(location(&gcp, "velero", "stowage", false).unwrap_err().contains("not one Stowage stores to"));
    }

    #[test]
    fn a_location_whose_name_stowage_uses_is_renamed_and_its_schedules_follow() {
        let mut locations = vec![location(&velero_location(), "velero", "stowage", false).unwrap()];
        let daily = json!({"metadata": {"name": "daily"}, "spec": {"schedule": "@daily", "template": {}}});
        let weekly = json!({"metadata": {"name": "weekly"}, "spec": {"schedule": "@weekly", "template": {"storageLocation": "other"}}});
        let mut schedules =
            vec![schedule(&daily, "velero", "stowage", false).unwrap(), schedule(&weekly, "velero", "stowage", false).unwrap()];
        let mut ours = locations[0].object.clone();
        ours.spec.object_storage.bucket = "stowage-bucket".into();
        reconcile(&mut locations, &mut schedules, &[ours.clone()]);
        assert_eq!(locations[0].object.name_any(), "velero-default");
        assert!(!locations[0].object.spec.default, "Stowage's default stays the default");
        assert_eq!(schedules[0].object.spec.template.storage_location.as_deref(), Some("velero-default"));
        assert_eq!(schedules[1].object.spec.template.storage_location.as_deref(), Some("other"));

        // The same settings under the same name: nothing to rename.
        let mut locations = vec![location(&velero_location(), "velero", "stowage", false).unwrap()];
        let same = locations[0].object.clone();
        reconcile(&mut locations, &mut [], &[same]);
        assert_eq!(locations[0].object.name_any(), "default");
        assert!(locations[0].object.spec.default);
    }

    #[test]
    fn a_schedule_keeps_its_template_and_names_what_it_drops() {
        let velero = json!({"metadata": {"name": "daily", "namespace": "velero"},
            "spec": {"schedule": "0 3 * * *", "useOwnerReferencesInBackup": false,
                "template": {"includedNamespaces": ["shop"], "ttl": "720h0m0s", "snapshotVolumes": false,
                    "defaultVolumesToRestic": true, "storageLocation": "default",
                    "hooks": {"resources": [{"name": "dump", "includedNamespaces": ["shop"],
                        "pre": [{"exec": {"container": "db", "command": ["/bin/sh", "-c", "dump"], "onError": "Fail", "timeout": "30s"}}]}]}}}});
        let c = schedule(&velero, "velero", "stowage", false).unwrap();
        let t = &c.object.spec.template;
        assert_eq!(c.object.spec.schedule, "0 3 * * *");
        assert_eq!(t.included_namespaces, vec!["shop"]);
        assert_eq!(t.ttl, "720h0m0s");
        assert_eq!(t.default_volumes_to_fs_backup, Some(true), "Velero's old name is carried over");
        assert_eq!(t.hooks.resources.len(), 1);
        let hooks = serde_json::to_value(&t.hooks).unwrap();
        assert_eq!(hooks["resources"][0]["pre"][0]["exec"]["command"], json!(["/bin/sh", "-c", "dump"]), "{hooks}");
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        assert!(c.notes[0].starts_with("template.snapshotVolumes not carried over (Stowage takes no volume snapshots"), "{:?}", c.notes);
        assert!(!c.object.spec.paused);
        assert_eq!(c.object.metadata.annotations.unwrap()[MIGRATED_FROM], "velero/velero/daily");

        let paused = schedule(&velero, "velero", "stowage", true).unwrap();
        assert!(paused.object.spec.paused);
        assert!(schedule(&json!({"metadata": {"name": "x"}, "spec": {}}), "velero", "stowage", false).unwrap_err().contains("schedule"));
    }
}

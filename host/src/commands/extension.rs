//! `stowage extension list|describe|test`: what extensions are loaded and in what state (as the
//! server records it on each ConfigMap), and a harness that runs one extension offline against
//! an item file or a stored backup's items, printing what it would change, filter or deny.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::Value;
use stowage_api::requests::DownloadTargetKind;
use stowage_runtime::{
    ExecOutput, ExecRequest, ExtensionId, ExtensionKind, ExtensionSource, FreezeRequest, HookPhase, HookTarget, HostServices, Item,
    KindRef, LogLevel, ObjectRef, OfflineHost, OperationContext, OperationKind, Policy, Registry, Runtime, RuntimeOptions,
    TargetKind, EXTENSION_LABEL,
};

use super::output::{self, OutputFormat, Table};
use super::{download, Context, InstallNamespace};
use crate::cluster::ClusterArgs;
use crate::server::extensions::{DIGEST_ANNOTATION, ERROR_ANNOTATION, SCOPE_ANNOTATION, STATE_ANNOTATION};

#[derive(Debug, clap::Args)]
pub struct ExtensionArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: ExtensionCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ExtensionCommand {
    /// List the extension ConfigMaps of every namespace, with the state the server recorded.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show one extension: its configuration, state, digest and last error.
    Describe {
        /// `NAME` (in the install namespace) or `NAMESPACE/NAME`.
        name: String,
    },
    /// Run an extension offline, without writing anything to a cluster, against items from a
    /// file or a stored backup, and print what it would change, filter, skip or deny.
    #[command(after_help = "\
Examples:
  stowage extension test extensions/change-storage-class/configmap.yaml \\
      --module extensions/dist/change-storage-class.wasm --item pvc.json
  stowage extension test my-filter.yaml --backup nightly-20261121")]
    Test {
        /// The extension's ConfigMap manifest (YAML or JSON).
        file: PathBuf,
        /// The module when the manifest leaves it out: a `.wasm` component or a `.rhai` script.
        #[arg(long, value_name = "FILE")]
        module: Option<PathBuf>,
        /// A file holding one object, or a JSON array or List of objects.
        #[arg(long, value_name = "FILE", required_unless_present = "backup", conflicts_with = "backup")]
        item: Option<PathBuf>,
        /// The items of this stored backup (fetched through the server).
        #[arg(long, value_name = "NAME")]
        backup: Option<String>,
    },
}

pub async fn run(args: ExtensionArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    match args.command {
        ExtensionCommand::List { output } => {
            let ctx = Context::connect(cluster, &args.namespace).await?;
            let api: Api<ConfigMap> = Api::all(ctx.client.clone());
            let mut cms = api.list(&ListParams::default().labels(EXTENSION_LABEL)).await?.items;
            cms.sort_by_key(|c| (c.namespace(), c.name_any()));
            match output.object_format() {
                Some(format) => output::print(&output::render_objects(&cms, false, format)?),
                None if cms.is_empty() => {
                    eprintln!("No extensions: label a ConfigMap {EXTENSION_LABEL}=<item-action|restore-item-action|item-filter|hook> to load one.");
                    Ok(())
                }
                None => output::print(&table(&cms, &ctx.namespace)),
            }
        }
        ExtensionCommand::Describe { name } => {
            let ctx = Context::connect(cluster, &args.namespace).await?;
            let (ns, name) = match name.split_once('/') {
                Some((ns, n)) => (ns.to_string(), n.to_string()),
                None => (ctx.namespace.clone(), name),
            };
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            let cm = api.get_opt(&name).await?.with_context(|| {
                format!("no ConfigMap {ns}/{name}; list extensions with `stowage extension list`")
            })?;
            output::print(&describe(&cm, &ctx.namespace))
        }
        ExtensionCommand::Test { file, module, item, backup } => {
            let cm = read_manifest(&file, module.as_deref())?;
            let items = match (&item, &backup) {
                (Some(path), _) => read_items(path)?,
                (None, Some(name)) => {
                    let ctx = Context::connect(cluster, &args.namespace).await?;
                    backup_items(&ctx, name).await?
                }
                (None, None) => unreachable!("clap requires one"),
            };
            let text = test(&cm, items).await?;
            output::print(&text)
        }
    }
}

fn kind_and_language(cm: &ConfigMap) -> (String, &'static str) {
    let kind = cm.labels().get(EXTENSION_LABEL).cloned().unwrap_or_default();
    let wasm = cm.binary_data.as_ref().is_some_and(|b| b.keys().any(|k| k.starts_with("extension.wasm")));
    let rhai = cm.data.as_ref().is_some_and(|d| d.contains_key("script.rhai"));
    (kind, if wasm { "WASM" } else if rhai { "Rhai" } else { "<none>" })
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

/// `NAMESPACE  NAME  KIND  SCOPE  LANGUAGE  DIGEST  STATE  LAST ERROR`.
pub fn table(cms: &[ConfigMap], server_namespace: &str) -> String {
    let mut t = Table::new(&["NAMESPACE", "NAME", "KIND", "SCOPE", "LANGUAGE", "DIGEST", "STATE", "LAST ERROR"]);
    for cm in cms {
        let a = cm.annotations();
        let (kind, language) = kind_and_language(cm);
        let ns = cm.namespace().unwrap_or_default();
        let scope = a.get(SCOPE_ANNOTATION).cloned().unwrap_or_else(|| {
            if ns == server_namespace { "Cluster".into() } else { format!("Namespace {ns}") }
        });
        t.row(vec![
            ns,
            cm.name_any(),
            kind,
            scope,
            language.to_string(),
            a.get(DIGEST_ANNOTATION).map(|d| short_digest(d)).unwrap_or_else(|| "<none>".into()),
            a.get(STATE_ANNOTATION).cloned().unwrap_or_else(|| "Pending".into()),
            a.get(ERROR_ANNOTATION).map(|e| e.lines().next().unwrap_or("").to_string()).unwrap_or_else(|| "<none>".into()),
        ]);
    }
    t.render()
}

pub fn describe(cm: &ConfigMap, server_namespace: &str) -> String {
    let a = cm.annotations();
    let (kind, language) = kind_and_language(cm);
    let mut out = String::new();
    out += &format!("Name:       {}\nNamespace:  {}\n", cm.name_any(), cm.namespace().unwrap_or_default());
    out += &format!("Kind:       {kind}\nLanguage:   {language}\n");
    let ns = cm.namespace().unwrap_or_default();
    let scope = a.get(SCOPE_ANNOTATION).cloned().unwrap_or_else(|| {
        if ns == server_namespace { "Cluster".into() } else { format!("Namespace {ns}") }
    });
    out += &format!("Scope:      {scope}\n");
    out += &format!("State:      {}\n", a.get(STATE_ANNOTATION).map(String::as_str).unwrap_or("Pending (the server has not loaded it yet)"));
    out += &format!("Digest:     {}\n", a.get(DIGEST_ANNOTATION).map(String::as_str).unwrap_or("<none>"));
    if let Some(e) = a.get(ERROR_ANNOTATION) {
        out += &format!("Last error: {e}\n");
    }
    let config = cm.data.as_ref().and_then(|d| d.get("config.yaml")).map(String::as_str).unwrap_or("");
    out += "\nConfig (config.yaml):\n";
    if config.trim().is_empty() {
        out += "  <defaults>\n";
    } else {
        out.extend(config.lines().map(|l| format!("  {l}\n")));
    }
    out
}

/// A ConfigMap manifest, with `--module` put where the manifest leaves the module out.
fn read_manifest(file: &std::path::Path, module: Option<&std::path::Path>) -> anyhow::Result<ConfigMap> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut cm: ConfigMap =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not a ConfigMap manifest", file.display()))?;
    if let Some(path) = module {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".rhai") {
            let script = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            cm.data.get_or_insert_default().insert("script.rhai".into(), script);
        } else {
            let key = if name.ends_with(".zst") { "extension.wasm.zst" } else { "extension.wasm" };
            cm.binary_data.get_or_insert_default().insert(key.into(), k8s_openapi::ByteString(bytes));
        }
    }
    if cm.metadata.namespace.is_none() {
        cm.metadata.namespace = Some(stowage_api::names::DEFAULT_NAMESPACE.into());
    }
    Ok(cm)
}

fn read_items(path: &std::path::Path) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_yaml::from_str(&text).with_context(|| format!("{} is neither JSON nor YAML", path.display()))?;
    let objects = match value {
        Value::Array(items) => items,
        v if v.get("items").is_some_and(Value::is_array) => v["items"].as_array().cloned().unwrap_or_default(),
        v => vec![v],
    };
    objects
        .into_iter()
        .map(|o| Item::from_object(o).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
        .collect()
}

/// Every object of a stored backup, downloaded through the server.
async fn backup_items(ctx: &Context, backup: &str) -> anyhow::Result<Vec<Item>> {
    let bytes = download::fetch(ctx, DownloadTargetKind::BackupContents, backup).await?;
    let items = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Item>> {
        let reader = stowage_pipeline::archive::ArchiveReader::new(std::io::Cursor::new(bytes))?;
        let archive = reader.extract_to_temp()?;
        let mut out = Vec::new();
        for res in archive.resources()? {
            for loc in archive.items(&res)? {
                let item = archive.read(&loc)?;
                out.push(Item::from_object(item.object).map_err(|e| anyhow::anyhow!("{e}"))?);
            }
        }
        Ok(out)
    })
    .await??;
    Ok(items)
}

/// Runs the extension on each item and describes what it did.
pub async fn test(cm: &ConfigMap, items: Vec<Item>) -> anyhow::Result<String> {
    let runtime = Runtime::new(RuntimeOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The manifest's own namespace decides its scope, as in the cluster.
    let registry = Registry::new(runtime, Policy::new(stowage_api::names::DEFAULT_NAMESPACE));
    let binary: BTreeMap<String, Vec<u8>> = cm.binary_data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    let source = ExtensionSource::from_configmap_parts(
        &cm.namespace().unwrap_or_default(),
        &cm.name_any(),
        &cm.labels().clone(),
        &cm.data.clone().unwrap_or_default(),
        &binary,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let kind = source.kind;
    let ext = registry.upsert(source).map_err(|e| anyhow::anyhow!("the extension would be quarantined: {e}"))?;
    let set = registry.snapshot();
    let op = match kind {
        ExtensionKind::RestoreItemAction => OperationKind::Restore,
        _ => OperationKind::Backup,
    };
    let context = OperationContext { kind: op, name: "extension-test".into(), uid: "00000000-0000-0000-0000-000000000000".into() };
    if kind == ExtensionKind::Hook {
        return Ok(test_hook(&set, context, &ext, items));
    }
    let mut session = set.session(context, Arc::new(OfflineHost));
    let total = items.len();
    let mut lines = Vec::new();
    tokio::task::block_in_place(|| {
        for item in items {
            match kind {
                ExtensionKind::ItemFilter => {
                    let verdict = session.filter(&item);
                    if let Some((_, reason)) = verdict.excluded_by {
                        lines.push(format!("{}: excluded ({reason})", item.id));
                    }
                    lines.extend(verdict.issues.into_iter().map(|i| format!("{}: {}", item.id, i.message)));
                }
                ExtensionKind::ItemAction | ExtensionKind::RestoreItemAction => {
                    let done = if kind == ExtensionKind::ItemAction {
                        session.item_actions(item.clone())
                    } else {
                        session.restore_item_actions(item.clone(), &item)
                    };
                    if done.skipped_by.is_some() {
                        lines.push(format!("{}: skipped (not restored)", item.id));
                    }
                    lines.extend(done.additional.iter().map(|a| format!("{}: adds {}", item.id, a.id)));
                    lines.extend(done.issues.into_iter().map(|i| format!("{}: {}", item.id, i.message)));
                }
                ExtensionKind::Hook => unreachable!("hooks are tested by test_hook"),
            }
        }
    });
    let report = session.report();
    let mut out = format!(
        "Extension {} ({}, {:?}, {})\nItems given: {total}\n",
        ext.id,
        ext.kind.as_str(),
        ext.language,
        ext.digest.0
    );
    for record in &report.extensions {
        let c = &record.counts;
        out += &format!(
            "Calls: {}  changed: {}  added: {}  filtered: {}  skipped: {}  denied: {}  errors: {}\n",
            c.calls, c.changed, c.added, c.filtered, c.skipped, c.denied, c.errors
        );
        for item in &record.items {
            if let Some(patch) = &item.patch {
                out += &format!("{}: changes\n", item.item);
                for op in patch {
                    out += &format!("  {}\n", serde_json::to_string(op).unwrap_or_default());
                }
            }
            for d in &item.denied {
                out += &format!("{}: denied {}\n", item.item, serde_json::to_string(d).unwrap_or_default());
            }
        }
    }
    for l in lines {
        out += &l;
        out.push('\n');
    }
    Ok(out)
}

/// Host services for a hook's dry run: every call succeeds and is recorded. `exec` prints
/// nothing and exits 0, `kube_get` finds only the hook's target, scaling to zero finds the
/// target's replicas.
#[derive(Default)]
struct DryRunHost {
    target: Option<Value>,
    calls: std::sync::Mutex<Vec<String>>,
}

impl DryRunHost {
    fn record(&self, call: String) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait::async_trait]
impl HostServices for DryRunHost {
    fn log(&self, _: &ExtensionId, level: LogLevel, message: &str) {
        self.record(format!("log {}: {message}", format!("{level:?}").to_lowercase()));
    }
    async fn kube_get(&self, object: &ObjectRef) -> Result<Option<Value>, String> {
        self.record(format!("get {object}"));
        let is_target = |t: &&Value| t.pointer("/metadata/name").and_then(Value::as_str) == Some(object.name.as_str());
        Ok(self.target.as_ref().filter(is_target).cloned())
    }
    async fn kube_list(&self, kind: &KindRef, namespace: &str, selector: &str) -> Result<Vec<Value>, String> {
        self.record(format!("list {} in {namespace:?} {selector}", kind.kind));
        Ok(Vec::new())
    }
    async fn kube_patch(&self, object: &ObjectRef, patch: &Value) -> Result<Value, String> {
        self.record(format!("patch {object} {patch}"));
        Ok(patch.clone())
    }
    async fn kube_scale(&self, object: &ObjectRef, replicas: u32) -> Result<(), String> {
        self.record(format!("scale {object} to {replicas}"));
        Ok(())
    }
    async fn exec(&self, r: &ExecRequest) -> Result<ExecOutput, String> {
        self.record(format!("exec in {}/{} container {}: {}", r.namespace, r.pod, r.container, serde_json::to_string(&r.command).unwrap_or_default()));
        Ok(ExecOutput::default())
    }
    async fn freeze(&self, _: &ExtensionId, r: &FreezeRequest) -> Result<(), String> {
        self.record(format!("freeze {} in {}/{} container {} (the host thaws it after the copy)", r.path, r.namespace, r.pod, r.container));
        Ok(())
    }
    async fn scale_to_zero(&self, _: &ExtensionId, w: &ObjectRef, _: std::time::Duration) -> Result<u32, String> {
        self.record(format!("scale {w} to zero (the host scales it back after the copy)"));
        let replicas = self.target.as_ref().and_then(|t| t.pointer("/spec/replicas")?.as_u64()).unwrap_or(1);
        Ok(u32::try_from(replicas).unwrap_or(u32::MAX))
    }
}

/// Runs a hook's pre-backup, post-backup and post-restore on each item it would be called on (a
/// pod, or a workload for `target: workload`), with a host that answers every call, and lists
/// the calls it made.
fn test_hook(set: &Arc<stowage_runtime::ExtensionSet>, context: OperationContext, ext: &stowage_runtime::Extension, items: Vec<Item>) -> String {
    let on_workloads = ext.config.target == TargetKind::Workload;
    let mut out = format!("Extension {} (hook on each {}, {:?}, {})\nItems given: {}\n", ext.id, if on_workloads { "workload" } else { "pod" }, ext.language, ext.digest.0, items.len());
    for item in items {
        let pod = match (on_workloads, item.id.kind.as_str()) {
            (false, "Pod") => item.object.clone(),
            (true, "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job") => {
                // The volumes its pods would have, from its pod template.
                let mut pod = item.object.pointer("/spec/template").cloned().unwrap_or_default();
                pod["metadata"]["name"] = Value::String(item.id.name.clone());
                pod
            }
            _ => {
                out += &format!("{}: not a {} target: skipped\n", item.id, if on_workloads { "workload" } else { "pod" });
                continue;
            }
        };
        let all: Vec<String> = pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("name")?.as_str().map(String::from))
            .collect();
        let target = HookTarget { object: item.id.clone(), volumes: crate::hooks::backup::target_volumes(&pod, &all) };
        let host = Arc::new(DryRunHost { target: Some(item.object.clone()), ..Default::default() });
        let mut session = set.session(context.clone(), host.clone());
        // The pod's hooks.stowage.io/param.<key> annotations, as in the cluster.
        let parameters = crate::hooks::extension::hook_parameters(&item.object);
        out += &format!("{}:\n", item.id);
        for phase in [HookPhase::PreBackup, HookPhase::PostBackup, HookPhase::PostRestore] {
            let result = tokio::task::block_in_place(|| session.run_hook(&ext.id, phase, &target, &parameters));
            let name = serde_json::to_value(phase).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            match result {
                Ok(()) => out += &format!("  {name}: ok\n"),
                Err(issue) => out += &format!("  {name}: failed: {}\n", issue.message),
            }
            for call in host.take() {
                // Long commands (a script given to `sh -c`) are cut.
                let shown: String = call.chars().take(240).collect();
                let cut = if shown.len() < call.len() { " ..." } else { "" };
                out += &format!("    {shown}{cut}\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(ns: &str, name: &str, annotations: &[(&str, &str)], wasm: bool) -> ConfigMap {
        let mut v = serde_json::json!({"metadata": {"name": name, "namespace": ns,
            "labels": {"stowage.io/extension": "restore-item-action"}, "annotations": {}},
            "data": {"config.yaml": "parameters:\n  standard: fast\n"}});
        for (k, val) in annotations {
            v["metadata"]["annotations"][*k] = Value::String(val.to_string());
        }
        if wasm {
            v["binaryData"] = serde_json::json!({"extension.wasm": "AGFzbQ=="});
        } else {
            v["data"]["script.rhai"] = Value::String("fn x() {}".into());
        }
        serde_json::from_value(v).unwrap()
    }

    fn shipped(name: &str) -> ConfigMap {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../extensions").join(name);
        read_manifest(&dir.join("configmap.yaml"), Some(&dir.join("script.rhai"))).unwrap()
    }

    fn item(object: Value) -> Item {
        Item::from_object(object).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hook_runs_offline_on_its_targets_and_lists_its_host_calls() {
        let mount = serde_json::json!([{"name": "data", "mountPath": "/var/lib/db"}]);
        let pod = item(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-0", "namespace": "shop"},
            "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
                "containers": [{"name": "db", "volumeMounts": mount}, {"name": "fsfreeze", "volumeMounts": mount}]}}));
        let set = item(serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "db"}]}}}}));

        let out = test(&shipped("fsfreeze"), vec![pod.clone(), set.clone()]).await.unwrap();
        assert!(out.contains("hook on each pod"), "{out}");
        assert!(out.contains("  pre-backup: ok\n    freeze /var/lib/db in shop/db-0 container fsfreeze (the host thaws it after the copy)\n"), "{out}");
        assert!(out.contains("StatefulSet.apps shop/db: not a pod target: skipped"), "{out}");

        let out = test(&shipped("scale-to-zero"), vec![pod, set]).await.unwrap();
        assert!(out.contains("Pod shop/db-0: not a workload target: skipped"), "{out}");
        assert!(out.contains("scale StatefulSet.apps shop/db to zero (the host scales it back after the copy)"), "{out}");
        assert!(out.contains("log info: StatefulSet shop/db: scaled from 3 replicas to 0 for the backup"), "{out}");
    }

    #[test]
    fn list_shows_state_scope_language_and_the_first_line_of_the_error() {
        let a = cm("stowage", "storage-class", &[(STATE_ANNOTATION, "Active"), (DIGEST_ANNOTATION, "sha256:0123456789abcdef0123")], true);
        let b = cm("shop", "registry", &[(STATE_ANNOTATION, "Quarantined"), (ERROR_ANNOTATION, "config.yaml: timeoutSeconds: 0 is below 1\nmore")], false);
        let text = table(&[a, b], "stowage");
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[0].starts_with("NAMESPACE") && rows[0].contains("LAST ERROR"), "{text}");
        assert!(rows[1].contains("storage-class") && rows[1].contains("Cluster") && rows[1].contains("WASM") && rows[1].contains("sha256:0123456789ab "), "{text}");
        assert!(rows[2].contains("Namespace shop") && rows[2].contains("Rhai") && rows[2].contains("Quarantined"), "{text}");
        assert!(rows[2].ends_with("timeoutSeconds: 0 is below 1"), "{text}");
    }

    #[test]
    fn describe_shows_the_config_and_error() {
        let c = cm("shop", "registry", &[(STATE_ANNOTATION, "Quarantined"), (ERROR_ANNOTATION, "bad")], false);
        let text = describe(&c, "stowage");
        assert!(text.contains("Scope:      Namespace shop\n") && text.contains("Last error: bad\n"), "{text}");
        assert!(text.contains("Config (config.yaml):\n  parameters:\n    standard: fast\n"), "{text}");
    }
}

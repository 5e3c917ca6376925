//! Extensions as one backup or restore runs them (DESIGN §7): [`Extensions`], the set fixed
//! when it starts and its session, and the cluster as extensions see it ([`KubeHost`]). The
//! server's ConfigMap watch that loads them is in `server::extensions`.

use std::sync::Arc;

use async_trait::async_trait;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use stowage_pipeline::{Item, Outcome};
use stowage_runtime::{
    ExecOutput, ExecRequest, ExtensionId, ExtensionReport, FreezeRequest, HostServices, KindRef, LogLevel, ObjectRef,
    OperationContext, OperationKind, Policy, Registry, Runtime, RuntimeOptions, Session,
};

use crate::context::Context;
use crate::discovery::Discovered;
use crate::hooks::quiesce::Quiescer;
use crate::oplog::OperationLog;

/// The process's extension registry; `namespaced` caps what extensions from other namespaces
/// than the server's may be granted.
pub fn registry(
    server_namespace: &str,
    namespaced: stowage_runtime::Capabilities,
) -> anyhow::Result<Registry> {
    let runtime = Runtime::new(RuntimeOptions::default())
        .map_err(|e| anyhow::anyhow!("starting the extension runtime: {e}"))?;
    Ok(Registry::new(
        runtime,
        Policy::with_namespaced_capabilities(server_namespace, namespaced),
    ))
}

/// The extensions a Backup or Restore names in `spec.extensions`: `name` is an extension
/// ConfigMap in the server's namespace, `namespace/name` one in another.
pub(crate) fn requested_ids(server_namespace: &str, requested: &[String]) -> Vec<ExtensionId> {
    requested
        .iter()
        .map(|wanted| {
            let (ns, name) = wanted.split_once('/').unwrap_or((server_namespace, wanted.as_str()));
            ExtensionId::new(ns.trim(), name.trim())
        })
        .collect()
}

/// Checks the extensions a Backup or Restore names in `spec.extensions`: each must be loaded
/// and active. Naming one runs it when it is opt-in (`optIn: true` in its config.yaml); the
/// others run anyway, so naming them only makes sure they are there.
pub fn check_requested(registry: &Registry, server_namespace: &str, requested: &[String]) -> Vec<String> {
    let states = registry.states();
    requested_ids(server_namespace, requested)
        .into_iter()
        .filter_map(|wanted| {
            let (ns, name) = (wanted.namespace.as_str(), wanted.name.as_str());
            match states.iter().find(|s| s.id.namespace == ns && s.id.name == name) {
                Some(s) if s.state == stowage_runtime::State::Active => None,
                Some(s) => Some(format!(
                    "spec.extensions: extension {ns}/{name} is quarantined ({}); fix its ConfigMap or leave it out",
                    s.error.as_deref().unwrap_or("no error recorded")
                )),
                None => Some(format!(
                    "spec.extensions: no extension {ns}/{name} is loaded; `stowage extension list` shows the loaded ones"
                )),
            }
        })
        .collect()
}

pub fn scope_text(scope: &stowage_runtime::Scope) -> String {
    match scope {
        stowage_runtime::Scope::Cluster => "Cluster".to_string(),
        stowage_runtime::Scope::Namespace(ns) => format!("Namespace {ns}"),
    }
}

/// The cluster as extensions see it. The runtime has checked capabilities and scope already.
pub struct KubeHost {
    client: Client,
    resources: Vec<Discovered>,
    log: OperationLog,
    /// A backup's hooks quiesce through it; None elsewhere (quiescing is then refused).
    quiescer: Option<Arc<Quiescer>>,
}

impl KubeHost {
    pub fn new(client: Client, resources: Vec<Discovered>, log: OperationLog) -> KubeHost {
        KubeHost { client, resources, log, quiescer: None }
    }

    pub fn with_quiescer(mut self, quiescer: Arc<Quiescer>) -> KubeHost {
        self.quiescer = Some(quiescer);
        self
    }

    fn quiescer(&self) -> Result<&Arc<Quiescer>, String> {
        self.quiescer.as_ref().ok_or_else(|| "quiescing is only possible in a backup's pre-backup hooks".to_string())
    }

    fn api(&self, kind: &KindRef, namespace: &str) -> Result<Api<DynamicObject>, String> {
        let d = self
            .resources
            .iter()
            .find(|d| d.info.group == kind.group && d.info.kind == kind.kind && (kind.version.is_empty() || d.info.version == kind.version))
            .ok_or_else(|| format!("the cluster serves no {}/{} {}", kind.group, kind.version, kind.kind))?;
        Ok(if d.info.namespaced && !namespace.is_empty() {
            Api::namespaced_with(self.client.clone(), namespace, &d.api)
        } else {
            Api::all_with(self.client.clone(), &d.api)
        })
    }
}

fn kind_of(o: &ObjectRef) -> KindRef {
    KindRef { group: o.group.clone(), version: o.version.clone(), kind: o.kind.clone() }
}

#[async_trait]
impl HostServices for KubeHost {
    fn log(&self, extension: &ExtensionId, level: LogLevel, message: &str) {
        let line = format!("extension {extension}: {message}");
        match level {
            LogLevel::Warn => self.log.warn(line),
            LogLevel::Error => self.log.error(line),
            LogLevel::Info => self.log.info(line),
            LogLevel::Trace | LogLevel::Debug => tracing::debug!("{line}"),
        }
    }

    async fn kube_get(&self, object: &ObjectRef) -> Result<Option<Value>, String> {
        let api = self.api(&kind_of(object), &object.namespace)?;
        let found = api.get_opt(&object.name).await.map_err(|e| e.to_string())?;
        found.map(|o| serde_json::to_value(o).map_err(|e| e.to_string())).transpose()
    }

    async fn kube_list(&self, kind: &KindRef, namespace: &str, label_selector: &str) -> Result<Vec<Value>, String> {
        let api = self.api(kind, namespace)?;
        let mut lp = ListParams::default();
        if !label_selector.is_empty() {
            lp = lp.labels(label_selector);
        }
        let list = api.list(&lp).await.map_err(|e| e.to_string())?;
        list.items.into_iter().map(|o| serde_json::to_value(o).map_err(|e| e.to_string())).collect()
    }

    async fn kube_patch(&self, object: &ObjectRef, merge_patch: &Value) -> Result<Value, String> {
        let api = self.api(&kind_of(object), &object.namespace)?;
        let patched = api.patch(&object.name, &PatchParams::default(), &Patch::Merge(merge_patch)).await.map_err(|e| e.to_string())?;
        serde_json::to_value(patched).map_err(|e| e.to_string())
    }

    async fn kube_scale(&self, object: &ObjectRef, replicas: u32) -> Result<(), String> {
        let api = self.api(&kind_of(object), &object.namespace)?;
        api.patch_scale(&object.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn exec(&self, request: &ExecRequest) -> Result<ExecOutput, String> {
        let out = crate::podexec::exec(&self.client, &request.namespace, &request.pod, &request.container, &request.command, request.timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ExecOutput { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
    }

    async fn freeze(&self, extension: &ExtensionId, request: &FreezeRequest) -> Result<(), String> {
        self.quiescer()?.freeze(extension, request).await
    }

    async fn scale_to_zero(&self, extension: &ExtensionId, workload: &ObjectRef, timeout: std::time::Duration) -> Result<u32, String> {
        self.quiescer()?.scale_to_zero(extension, workload, timeout).await
    }
}

/// The extensions of one backup or restore: the set fixed when it started, and its session.
pub struct Extensions {
    session: Option<Session>,
    resources: Vec<Discovered>,
}

impl Extensions {
    /// Fixes the extension versions for the operation (hot reloads after this do not touch it).
    /// `requested` is the operation's `spec.extensions`: the opt-in extensions it runs.
    pub fn start(
        ctx: &Context,
        kind: OperationKind,
        (name, uid): (&str, &str),
        requested: &[String],
        resources: Vec<Discovered>,
        log: &OperationLog,
    ) -> Extensions {
        let set = Arc::new(ctx.extensions.snapshot().for_operation(&requested_ids(&ctx.namespace, requested)));
        if set.is_empty() {
            return Extensions { session: None, resources };
        }
        for e in set.iter() {
            log.info(format!("extension {} ({}, {:?}, {}) active", e.id, e.kind.as_str(), e.language, e.digest.0));
        }
        let host = Arc::new(KubeHost::new(ctx.client.clone(), resources.clone(), log.clone()));
        let context = OperationContext { kind, name: name.to_string(), uid: uid.to_string() };
        let mut session = set.session(context, host);
        let metrics = ctx.metrics.clone();
        session.observe_calls(Arc::new(move |id, outcome, took| metrics.extension_call(&id.to_string(), outcome, took)));
        Extensions { session: Some(session), resources }
    }

    pub fn is_active(&self) -> bool {
        self.session.is_some()
    }

    /// Extensions running `session`, for tests of what runs them.
    #[cfg(test)]
    pub fn with_session(session: Session) -> Extensions {
        Extensions { session: Some(session), resources: Vec::new() }
    }

    /// No extensions: every item passes unchanged.
    pub fn inactive() -> Extensions {
        Extensions { session: None, resources: Vec::new() }
    }

    /// Moves the extensions out (to another thread), leaving inactive ones in their place.
    pub fn take(&mut self) -> Extensions {
        std::mem::replace(self, Extensions::inactive())
    }

    fn object_ref(item: &Item) -> ObjectRef {
        ObjectRef {
            group: item.group.clone(),
            version: item.version.clone(),
            kind: item.kind.clone(),
            namespace: item.namespace.clone().unwrap_or_default(),
            name: item.name.clone(),
        }
    }

    /// The item as the runtime takes it; its object is moved out of `item` (put it back).
    fn runtime_item(item: &mut Item) -> stowage_runtime::Item {
        stowage_runtime::Item {
            id: Self::object_ref(item),
            object: std::mem::take(&mut item.object),
        }
    }

    /// A pipeline item for an object an extension added, or why there is none.
    fn pipeline_item(&self, added: stowage_runtime::Item) -> Result<Item, String> {
        let d = self
            .resources
            .iter()
            .find(|d| d.info.group == added.id.group && d.info.kind == added.id.kind)
            .ok_or_else(|| format!("the cluster serves no {} {}", added.id.group, added.id.kind))?;
        // The object is what gets written and created: it must be the kind stated, and a
        // cluster-scoped kind has no namespace (a namespaced extension's items are checked to be
        // in its namespace by what they state).
        let says = |pointer: &str| added.object.pointer(pointer).and_then(serde_json::Value::as_str);
        let group_of = |api_version: &str| api_version.rsplit_once('/').map_or("", |(group, _)| group).to_owned();
        if says("/kind").is_some_and(|k| k != d.info.kind) || says("/apiVersion").is_some_and(|v| group_of(v) != d.info.group) {
            return Err(format!("its object is a {} {}", says("/apiVersion").unwrap_or_default(), says("/kind").unwrap_or_default()));
        }
        if !d.info.namespaced && (!added.id.namespace.is_empty() || says("/metadata/namespace").is_some_and(|n| !n.is_empty())) {
            return Err(format!("{} is cluster-scoped, but the item is given namespace {}", d.info.kind, added.id.namespace));
        }
        Item::new(added.object, &d.info).map_err(|e| e.to_string())
    }

    fn record(issues: Vec<stowage_runtime::ItemIssue>, outcome: &mut Outcome) {
        for issue in issues {
            let ns = Some(issue.item.namespace.as_str()).filter(|n| !n.is_empty());
            if issue.fatal {
                outcome.error(ns, issue.message);
            } else {
                outcome.warn(ns, issue.message);
            }
        }
    }

    /// The item filters: whether the item stays, and why not.
    pub fn filter(&mut self, item: &mut Item, outcome: &mut Outcome) -> Result<(), String> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        let ritem = Self::runtime_item(item);
        let verdict = tokio::task::block_in_place(|| session.filter(&ritem));
        item.object = ritem.object;
        Self::record(verdict.issues, outcome);
        match verdict.excluded_by {
            None => Ok(()),
            Some((ext, reason)) => Err(format!("excluded by extension {ext}: {reason}")),
        }
    }

    /// The backup item actions: the item as changed, and the items they add.
    pub fn item_actions(&mut self, mut item: Item, outcome: &mut Outcome) -> (Item, Vec<Item>) {
        let Some(session) = self.session.as_mut() else {
            return (item, Vec::new());
        };
        let ritem = Self::runtime_item(&mut item);
        let done = tokio::task::block_in_place(|| session.item_actions(ritem));
        self.finish_actions(item, done, outcome)
    }

    /// The restore item actions: None when one asked to skip the item.
    pub fn restore_item_actions(
        &mut self,
        mut item: Item,
        backed_up: &Item,
        outcome: &mut Outcome,
    ) -> Option<(Item, Vec<Item>)> {
        let Some(session) = self.session.as_mut() else {
            return Some((item, Vec::new()));
        };
        let original = stowage_runtime::Item {
            id: Self::object_ref(backed_up),
            object: backed_up.object.clone(),
        };
        let ritem = Self::runtime_item(&mut item);
        let done = tokio::task::block_in_place(|| session.restore_item_actions(ritem, &original));
        if done.skipped_by.is_some() {
            Self::record(done.issues, outcome);
            return None;
        }
        Some(self.finish_actions(item, done, outcome))
    }

    /// Puts the object the actions returned back into `item`.
    fn finish_actions(
        &self,
        mut item: Item,
        done: stowage_runtime::ActionOutcome,
        outcome: &mut Outcome,
    ) -> (Item, Vec<Item>) {
        Self::record(done.issues, outcome);
        let ns = item.namespace.clone();
        item.object = done.item.object;
        if done.changed {
            item.refresh_identity();
        }
        let mut additional = Vec::new();
        for added in done.additional {
            let what = added.id.to_string();
            match self.pipeline_item(added) {
                Ok(i) => additional.push(i),
                Err(e) => outcome.warn(ns.as_deref(), format!("an extension added {what}, which is left out: {e}")),
            }
        }
        (item, additional)
    }

    /// What the extensions did, for `<name>-extensions.json.zst`, and the status list.
    pub fn report(&self) -> Option<ExtensionReport> {
        self.session.as_ref().map(Session::report)
    }
}

/// The status entries (name, digest, scope) of the extensions that ran.
pub fn runs(report: &ExtensionReport) -> Vec<Value> {
    report
        .extensions
        .iter()
        .map(|r| json!({"name": r.id.to_string(), "digest": r.digest.0, "scope": scope_text(&r.scope)}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_runtime::{ExtensionId, ExtensionKind, ExtensionSource, Module};

    /// What an extension adds is written and created as its object says: an object of another
    /// kind than stated, or a cluster-scoped one given a namespace, is left out.
    #[test]
    fn added_items_are_the_kind_they_say_and_cluster_scoped_ones_have_no_namespace() {
        let discovered = |group: &str, plural: &str, kind: &str, namespaced: bool| {
            let info = stowage_pipeline::ApiResourceInfo::new(group, "v1", plural, kind, namespaced);
            let api = kube::api::ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: info.api_version(),
                kind: kind.into(),
                plural: plural.into(),
            };
            Discovered { info, api }
        };
        let mut extensions = Extensions::inactive();
        extensions.resources = vec![
            discovered("", "configmaps", "ConfigMap", true),
            discovered("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", false),
        ];
        let added = |group: &str, kind: &str, namespace: &str, object: serde_json::Value| stowage_runtime::Item {
            id: ObjectRef { group: group.into(), version: "v1".into(), kind: kind.into(), namespace: namespace.into(), name: "x".into() },
            object,
        };
        let configmap = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}});
        let item = extensions.pipeline_item(added("", "ConfigMap", "shop", configmap)).unwrap();
        assert_eq!((item.kind.as_str(), item.namespace.as_deref()), ("ConfigMap", Some("shop")));

        let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "x"}});
        let rbac = "rbac.authorization.k8s.io";
        let e = extensions.pipeline_item(added(rbac, "ClusterRoleBinding", "shop", binding.clone())).unwrap_err();
        assert!(e.contains("ClusterRoleBinding is cluster-scoped, but the item is given namespace shop"), "{e}");
        let e = extensions.pipeline_item(added("", "ConfigMap", "shop", binding.clone())).unwrap_err();
        assert!(e.contains("its object is a rbac.authorization.k8s.io/v1 ClusterRoleBinding"), "{e}");
        // An administrator's extension may add one, without a namespace.
        extensions.pipeline_item(added(rbac, "ClusterRoleBinding", "", binding)).unwrap();
    }

    #[test]
    fn a_backup_may_only_name_loaded_active_extensions() {
        let registry = registry("stowage", Default::default()).unwrap();
        let filter = |ns: &str, name: &str, config: &str| ExtensionSource {
            id: ExtensionId::new(ns, name),
            kind: ExtensionKind::ItemFilter,
            module: Module::Rhai("fn filter(ctx, item) { true }".into()),
            config_yaml: config.into(),
        };
        registry.upsert(filter("stowage", "keep", "")).unwrap();
        registry.upsert(filter("shop", "mine", "")).unwrap();
        registry.upsert(filter("stowage", "broken", "timeoutSecondz: 1\n")).unwrap_err();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_requested(&registry, "stowage", &names(&["keep", "shop/mine", "stowage/keep"])).is_empty());
        let errors = check_requested(&registry, "stowage", &names(&["mine", "broken", "shop/keep"]));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("no extension stowage/mine is loaded"), "{errors:?}");
        assert!(errors[1].contains("stowage/broken is quarantined") && errors[1].contains("timeoutSecondz"), "{errors:?}");
        assert!(errors[2].contains("no extension shop/keep"), "{errors:?}");
    }
}

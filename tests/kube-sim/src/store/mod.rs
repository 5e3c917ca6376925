//! The object store behind the API: every object as JSON, one global resourceVersion counter,
//! an event log for watches, and the server-side behaviours that follow from writes
//! (CRDs serving new types, finalizers, namespace deletion, ownerReference garbage collection).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::defaults;
use crate::error::{ApiError, ApiResult};
use crate::patch::{self, PatchKind};
use crate::resources::{self, ResourceKey, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};

/// How many past events a watch can resume from before it gets 410 Gone.
const EVENT_LOG_CAPACITY: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: ResourceKey,
    pub kind: EventType,
    pub object: Value,
    /// The object before this change, so watches with selectors can tell "stopped matching".
    pub old: Option<Value>,
}

type ObjKey = (String, String);

#[derive(Default)]
struct Inner {
    rv: u64,
    types: Vec<ResourceType>,
    objects: HashMap<ResourceKey, BTreeMap<ObjKey, Value>>,
    log: VecDeque<Arc<Event>>,
    /// The oldest resourceVersion a watch may start from.
    compacted_rv: u64,
    owners: owners::OwnerIndex,
    /// Objects (and logged events) looked at beyond the one a request names: by lists, watches,
    /// defaulting, garbage collection, cascading deletion and namespace finalisation.
    examined: Cell<u64>,
}

pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
}

/// Options shared by writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub dry_run: bool,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// What a list returns.
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    pub continue_token: Option<String>,
}

/// The start of a watch: events to replay, then the live stream.
pub struct WatchStart {
    pub replay: Vec<Arc<Event>>,
    pub initial: Vec<Value>,
    pub resource_version: u64,
    pub live: broadcast::Receiver<Arc<Event>>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str()
}

fn valid_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be between 1 and 253 characters".into());
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        return Err("may not be '.' or '..' and may not contain '/' or '%'".into());
    }
    Ok(())
}

/// Everything but metadata and status: a change to it bumps metadata.generation.
fn spec_part(obj: &Value) -> Value {
    match obj {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status")).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        other => other.clone(),
    }
}

impl Store {
    pub fn new() -> Arc<Store> {
        let (events, _) = broadcast::channel(8192);
        let inner = Inner { types: resources::builtins(), ..Default::default() };
        Arc::new(Store { inner: Mutex::new(inner), events })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All served types (built-ins and CRDs), in registration order.
    pub fn types(&self) -> Vec<ResourceType> {
        self.lock().types.clone()
    }

    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock().types.iter().find(|t| t.group == group && t.version == version && t.plural == plural).cloned()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        let inner = self.lock();
        inner.get(&rt.key(), ns, name).map(|o| present(rt, o)).ok_or_else(|| not_found(rt, name))
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_from: Option<&str>,
    ) -> ApiResult<ListResult> {
        let inner = self.lock();
        let start = match continue_from.filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token)?),
            None => None,
        };
        let mut items = Vec::new();
        let mut continue_token = None;
        if let Some(objs) = inner.objects.get(&rt.key()) {
            let mut matching = inner
                .scan(objs, ns, start.as_ref())
                .filter(|(_, o)| labels.matches_object(o) && fields.matches_object(o));
            let limit = limit.filter(|l| *l > 0);
            let mut last = None;
            for (k, o) in matching.by_ref() {
                items.push(present(rt, o));
                last = Some(k);
                if Some(items.len()) == limit {
                    break;
                }
            }
            // A continue token when another object matches. Without a count of the rest
            // (remainingItemCount, which the API server leaves out when it does not know it):
            // counting walked the rest of the list for every page, and a list in pages cost
            // more per page the more objects there were.
            if let Some(last) = last.filter(|_| Some(items.len()) == limit) {
                if matching.next().is_some() {
                    continue_token = Some(encode_continue(last));
                }
            }
        }
        Ok(ListResult { items, resource_version: inner.rv, continue_token })
    }

    pub fn create(&self, rt: &ResourceType, ns: &str, mut obj: Value, opts: &WriteOpts) -> ApiResult<Value> {
        let mut inner = self.lock();
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the object provided is not a JSON object".into()));
        }
        check_kind(rt, &obj)?;
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        match meta_str(&obj, "namespace") {
            Some(body_ns) if rt.namespaced && !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ))
            }
            _ => {}
        }
        if rt.namespaced {
            inner.check_namespace_open(ns)?;
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let name = match (meta_str(&obj, "name").filter(|n| !n.is_empty()), meta_str(&obj, "generateName")) {
            (Some(n), _) => n.to_string(),
            (None, Some(prefix)) if !prefix.is_empty() => {
                let prefix = prefix.to_string();
                loop {
                    let candidate = format!("{prefix}{}", random_suffix());
                    if inner.get(&rt.key(), ns, &candidate).is_none() {
                        break candidate;
                    }
                }
            }
            _ => {
                return Err(ApiError::Invalid(format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    rt.kind
                )))
            }
        };
        valid_name(&name).map_err(|e| ApiError::Invalid(format!("{} {name:?} is invalid: metadata.name: {e}", rt.kind)))?;
        if inner.get(&rt.key(), ns, &name).is_some() {
            return Err(ApiError::AlreadyExists(format!("{} \"{name}\" already exists", rt_display(rt))));
        }
        if rt.plural == "customresourcedefinitions" && rt.group == "apiextensions.k8s.io" {
            resources::from_crd(&obj).map_err(|e| ApiError::Invalid(format!("CustomResourceDefinition {name:?} is invalid: {e}")))?;
        }
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        if rt.has_subresource("status") {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        inner.apply_defaults(rt, None, &mut obj);
        if rt.group == "apiextensions.k8s.io" {
            set_crd_status(&mut obj);
        }
        if opts.dry_run {
            return Ok(present(rt, &obj));
        }
        let stored = inner.put(&self.events, rt, ns, &name, obj, EventType::Added, None);
        if rt.key() == (ResourceKey { group: String::new(), plural: "namespaces".into() }) {
            inner.create_namespace_defaults(&self.events, &name);
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            inner.register_crd(&stored);
        }
        Ok(present(rt, &stored))
    }

    /// Replaces an object (PUT), or its status when `subresource` is `status`.
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        subresource: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        let mut inner = self.lock();
        inner.update(&self.events, rt, ns, name, obj, subresource, opts).map(|v| present(rt, &v))
    }

    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        (kind, body): (PatchKind, &[u8]),
        subresource: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        // Read, patch and write under one lock, as the API server retries a patch that names no
        // resourceVersion against the newer object: only a patch that names a version conflicts.
        let mut inner = self.lock();
        let Some(current) = inner.get(&rt.key(), ns, name).cloned() else {
            drop(inner);
            if kind == PatchKind::Apply && subresource.is_none() {
                let mut obj = patch::apply(kind, &json!({}), body).map_err(ApiError::BadRequest)?;
                obj["metadata"]["name"] = json!(name);
                return self.create(rt, ns, obj, opts);
            }
            return Err(not_found(rt, name));
        };
        let current_presented = present(rt, &current);
        let mut patched = patch::apply(kind, &current_presented, body).map_err(ApiError::Invalid)?;
        // A patch without a resourceVersion applies to whatever is current; one that names a
        // version is a precondition, checked by the update below.
        let patch_rv = patched["metadata"]["resourceVersion"].clone();
        if patch_rv.is_null() || patch_rv == current["metadata"]["resourceVersion"] {
            patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        }
        inner.update(&self.events, rt, ns, name, patched, subresource, opts).map(|v| present(rt, &v))
    }

    pub fn delete(&self, rt: &ResourceType, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
        let mut inner = self.lock();
        let current = inner.get(&rt.key(), ns, name).cloned().ok_or_else(|| not_found(rt, name))?;
        if let Some(uid) = &opts.precondition_uid {
            if meta_str(&current, "uid") != Some(uid) {
                return Err(ApiError::Conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid").unwrap_or("")
                )));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if meta_str(&current, "resourceVersion") != Some(rv) {
                return Err(ApiError::Conflict("Precondition failed: resourceVersion does not match".into()));
            }
        }
        if opts.dry_run {
            return Ok(present(rt, &current));
        }
        let out = inner.delete(&self.events, &rt.key(), ns, name, opts.propagation);
        Ok(present(rt, &out.unwrap_or(current)))
    }

    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: &DeleteOpts,
    ) -> ApiResult<Vec<Value>> {
        let mut inner = self.lock();
        let keys: Vec<ObjKey> = inner
            .objects
            .get(&rt.key())
            .map(|objs| {
                inner.scan(objs, ns, None).filter(|(_, o)| labels.matches_object(o) && fields.matches_object(o)).map(|(k, _)| k.clone()).collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for (ns, name) in keys {
            if opts.dry_run {
                if let Some(o) = inner.get(&rt.key(), &ns, &name) {
                    out.push(present(rt, o));
                }
            } else if let Some(o) = inner.delete(&self.events, &rt.key(), &ns, &name, opts.propagation) {
                out.push(present(rt, &o));
            }
        }
        Ok(out)
    }

    /// Starts a watch at `from_rv` (None: now). Errors with 410 Gone when that version is no
    /// longer in the event log, as a real server does after compaction.
    pub fn watch(&self, rt: &ResourceType, from_rv: Option<u64>, send_initial: bool, ns: Option<&str>) -> ApiResult<WatchStart> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let key = rt.key();
        let mut initial = Vec::new();
        let mut replay = Vec::new();
        if send_initial {
            if let Some(objs) = inner.objects.get(&key) {
                initial = inner.scan(objs, ns, None).map(|(_, o)| o.clone()).collect();
            }
        } else if let Some(rv) = from_rv.filter(|rv| *rv > 0) {
            if rv < inner.compacted_rv {
                return Err(ApiError::Gone(format!("too old resource version: {rv} ({})", inner.compacted_rv)));
            }
            // The log is in resourceVersion order: only the events after `rv` are looked at.
            let after = inner.log.partition_point(|e| e.rv <= rv);
            inner.count_examined(inner.log.len() - after);
            replay = inner.log.range(after..).filter(|e| e.key == key).cloned().collect();
        }
        Ok(WatchStart { replay, initial, resource_version: inner.rv, live })
    }

    /// Periodic server-side work: finishing namespace deletion, collecting orphans.
    pub fn background_pass(&self) {
        let mut inner = self.lock();
        inner.finish_namespace_deletions(&self.events);
        inner.collect_garbage(&self.events);
    }

    /// How many objects (and logged events) the store has looked at so far beyond the ones
    /// requests name: what lists and watches walk, what defaulting, garbage collection,
    /// cascading deletion and namespace finalisation look at. A create or an update, and the
    /// background pass that runs every 100 ms under the store's lock, look at what concerns them
    /// (their owner's dependents, the Services when allocating a Service's IP), not at every
    /// object stored: otherwise each request costs more the more objects there are.
    pub fn objects_examined(&self) -> u64 {
        self.lock().examined.get()
    }

    /// For tests of watch expiry: forgets the event log up to now.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.compacted_rv = inner.rv + 1;
    }
}

fn encode_continue(k: &ObjKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!([k.0, k.1])).unwrap_or_default())
}

fn decode_continue(token: &str) -> ApiResult<ObjKey> {
    use base64::Engine;
    let bad = || ApiError::BadRequest(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: (String, String) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok(v)
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5].iter().map(|b| CHARS[*b as usize % CHARS.len()] as char).collect()
}

fn rt_display(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

fn not_found(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::not_found(&rt_display(rt), name)
}

fn check_kind(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    if let Some(kind) = obj["kind"].as_str() {
        if !kind.is_empty() && kind != rt.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    Ok(())
}

/// The object as served for `rt`'s version.
pub fn present(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    out
}

fn set_crd_status(crd: &mut Value) {
    let names = crd["spec"]["names"].clone();
    let now = now_rfc3339();
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| vs.iter().filter(|v| v["storage"].as_bool() == Some(true)).map(|v| v["name"].clone()).collect())
        .unwrap_or_default();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    });
}

impl Inner {
    fn count_examined(&self, n: usize) {
        self.examined.set(self.examined.get() + n as u64);
    }

    /// The objects of one type in (namespace, name) order: those of `ns` (all without one),
    /// after `after` if given. Starts where they start instead of walking the ones before, and
    /// counts each object it yields as examined.
    fn scan<'a>(
        &'a self,
        objs: &'a BTreeMap<ObjKey, Value>,
        ns: Option<&'a str>,
        after: Option<&ObjKey>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        let ns_start = ns.map(|n| (n.to_string(), String::new()));
        let from = match (after.cloned(), ns_start) {
            (Some(a), Some(n)) if a < n => Bound::Included(n),
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(n)) => Bound::Included(n),
            (None, None) => Bound::Unbounded,
        };
        objs.range((from, Bound::Unbounded)).take_while(move |(k, _)| ns.is_none_or(|n| k.0 == n)).inspect(|_| self.count_examined(1))
    }

    fn get(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(key)?.get(&(ns.to_string(), name.to_string()))
    }

    fn type_for(&self, key: &ResourceKey) -> Option<ResourceType> {
        self.types.iter().find(|t| t.key() == *key).cloned()
    }

    fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let key = ResourceKey { group: String::new(), plural: "namespaces".into() };
        match self.get(&key, "", ns) {
            None => Err(ApiError::NotFound(format!("namespaces \"{ns}\" not found"))),
            Some(n) if n["metadata"].get("deletionTimestamp").is_some() => Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }

    fn apply_defaults(&self, rt: &ResourceType, old: Option<&Value>, obj: &mut Value) {
        // Only a Service's allocation looks at the other Services, and only a claim's default
        // the StorageClasses: other writes look at nothing else.
        let svc_key = ResourceKey { group: String::new(), plural: "services".into() };
        let services = || self.objects.get(&svc_key).into_iter().flat_map(|m| m.values()).inspect(|_| self.count_examined(1));
        let used_ips = |ip: &str| services().any(|s| s["spec"]["clusterIP"].as_str() == Some(ip));
        let used_ports = |port: i64| {
            services().any(|s| s["spec"]["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["nodePort"].as_i64() == Some(port))))
        };
        let sc_key = ResourceKey { group: "storage.k8s.io".into(), plural: "storageclasses".into() };
        let default_storage_class = (rt.group.is_empty() && rt.plural == "persistentvolumeclaims")
            .then(|| self.objects.get(&sc_key))
            .flatten()
            .and_then(|m| {
                m.values()
                    .inspect(|_| self.count_examined(1))
                    .find(|sc| sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"].as_str() == Some("true"))
                    .and_then(|sc| meta_str(sc, "name").map(String::from))
            });
        let ctx = defaults::Context {
            default_storage_class,
            used_cluster_ips: &used_ips,
            used_node_ports: &used_ports,
            seed: self.rv,
        };
        match old {
            None => defaults::on_create(&rt.group, &rt.plural, obj, &ctx),
            Some(old) => defaults::on_update(&rt.group, &rt.plural, old, obj, &ctx),
        }
    }

    /// Stores `obj`, stamps a new resourceVersion and records the event.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        kind: EventType,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let obj = present(rt, &obj);
        let old_stored = self.objects.entry(rt.key()).or_default().insert((ns.to_string(), name.to_string()), obj.clone());
        self.owners.stored(&(rt.key(), ns.to_string(), name.to_string()), old_stored.as_ref(), &obj);
        self.record(tx, Event { rv: self.rv, key: rt.key(), kind, object: obj.clone(), old });
        obj
    }

    fn record(&mut self, tx: &broadcast::Sender<Arc<Event>>, event: Event) {
        let event = Arc::new(event);
        self.log.push_back(event.clone());
        while self.log.len() > EVENT_LOG_CAPACITY {
            if let Some(e) = self.log.pop_front() {
                self.compacted_rv = e.rv + 1;
            }
        }
        let _ = tx.send(event);
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
        opts: &WriteOpts,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the object provided is not a JSON object".into()));
        }
        check_kind(rt, &obj)?;
        let current = self.get(&rt.key(), ns, name).cloned().ok_or_else(|| not_found(rt, name))?;
        if let Some(body_name) = meta_str(&obj, "name") {
            if body_name != name {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if let Some(rv) = meta_str(&obj, "resourceVersion").filter(|r| !r.is_empty()) {
            if Some(rv) != meta_str(&current, "resourceVersion") {
                return Err(ApiError::Conflict(format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    rt_display(rt)
                )));
            }
        }
        let mut next = match subresource {
            Some("status") => {
                let mut n = current.clone();
                n["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                n
            }
            _ => {
                if rt.has_subresource("status") {
                    obj["status"] = current.get("status").cloned().unwrap_or(Value::Null);
                }
                obj
            }
        };
        if next["status"].is_null() {
            if let Some(m) = next.as_object_mut() {
                m.remove("status");
            }
        }
        // Fields the server owns.
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            match current["metadata"].get(field) {
                Some(v) => next["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        next["metadata"]["name"] = json!(name);
        if rt.namespaced {
            next["metadata"]["namespace"] = json!(ns);
        }
        if subresource.is_none() {
            self.apply_defaults(rt, Some(&current), &mut next);
            if spec_part(&next) != spec_part(&current) {
                let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
                next["metadata"]["generation"] = json!(g + 1);
            }
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" && subresource.is_none() {
            resources::from_crd(&next).map_err(|e| ApiError::Invalid(format!("CustomResourceDefinition {name:?} is invalid: {e}")))?;
            set_crd_status(&mut next);
        }
        next["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if next == current {
            // No-op updates do not bump the resourceVersion, as on a real server.
            return Ok(current);
        }
        if opts.dry_run {
            return Ok(next);
        }
        let terminating = next["metadata"].get("deletionTimestamp").is_some();
        let finalizers_empty = next["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        if terminating && finalizers_empty && !(rt.group.is_empty() && rt.plural == "namespaces") {
            self.remove(tx, &rt.key(), ns, name, Propagation::Background);
            return Ok(next);
        }
        let stored = self.put(tx, rt, ns, name, next, EventType::Modified, Some(current));
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.register_crd(&stored);
        }
        Ok(stored)
    }

}

mod lifecycle;
mod owners;

#[cfg(test)]
mod tests;

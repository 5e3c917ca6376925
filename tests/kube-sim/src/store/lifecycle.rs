//! What follows from deletions and CRD changes: finalizers, namespace termination,
//! ownerReference garbage collection, and serving or dropping custom resource types.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::owners::ObjRef;
use super::{meta_str, now_rfc3339, Event, EventType, Inner, Propagation};
use crate::resources::{self, ResourceKey};

impl Inner {
    /// Deletes, or marks for deletion when finalizers remain. Returns the object as it ends up.
    pub(super) fn delete(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Option<Value> {
        let current = self.get(key, ns, name)?.clone();
        let rt = self.type_for(key)?;
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        let has_finalizers = current["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if is_namespace || has_finalizers {
            if current["metadata"].get("deletionTimestamp").is_some() {
                return Some(current);
            }
            let mut next = current.clone();
            next["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_namespace {
                next["status"]["phase"] = json!("Terminating");
            }
            return Some(self.put(tx, &rt, ns, name, next, EventType::Modified, Some(current)));
        }
        self.remove(tx, key, ns, name, propagation)
    }

    pub(super) fn remove(
        &mut self,
        tx: &broadcast::Sender<Arc<Event>>,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Option<Value> {
        let mut obj = self.objects.get_mut(key)?.remove(&(ns.to_string(), name.to_string()))?;
        self.owners.removed(&(key.clone(), ns.to_string(), name.to_string()), &obj);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        self.record(tx, Event { rv: self.rv, key: key.clone(), kind: EventType::Deleted, object: obj.clone(), old: None });
        if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
            self.unregister_crd(tx, &obj);
        }
        self.cascade(tx, &uid, propagation);
        Some(obj)
    }

    /// ownerReference garbage collection for the dependents of a deleted owner.
    pub(super) fn cascade(&mut self, tx: &broadcast::Sender<Arc<Event>>, owner_uid: &str, propagation: Propagation) {
        if owner_uid.is_empty() {
            return;
        }
        let dependents: Vec<(ResourceKey, String, String, usize)> = self
            .owners
            .dependents_of(owner_uid)
            .into_iter()
            .filter_map(|(key, ns, name)| {
                let n_refs = self.get(&key, &ns, &name)?["metadata"]["ownerReferences"].as_array()?.len();
                Some((key, ns, name, n_refs))
            })
            .collect();
        self.count_examined(dependents.len());
        for (key, ns, name, n_refs) in dependents {
            if propagation == Propagation::Orphan || n_refs > 1 {
                let Some(rt) = self.type_for(&key) else { continue };
                let Some(current) = self.get(&key, &ns, &name).cloned() else { continue };
                let mut next = current.clone();
                if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
                }
                self.put(tx, &rt, &ns, &name, next, EventType::Modified, Some(current));
            } else {
                self.delete(tx, &key, &ns, &name, Propagation::Background);
            }
        }
    }

    /// Deletes objects whose owners are all gone (e.g. created with a stale ownerReference).
    pub(super) fn collect_garbage(&mut self, tx: &broadcast::Sender<Arc<Event>>) {
        let candidates = self.owners.missing_an_owner();
        self.count_examined(candidates.len());
        let orphans: Vec<ObjRef> = candidates
            .into_iter()
            .filter(|(key, ns, name)| {
                self.get(key, ns, name).is_some_and(|o| {
                    let refs = o["metadata"]["ownerReferences"].as_array();
                    refs.is_some_and(|refs| {
                        !refs.is_empty() && refs.iter().all(|r| r["uid"].as_str().is_none_or(|u| !self.owners.is_live(u)))
                    }) && o["metadata"].get("deletionTimestamp").is_none()
                })
            })
            .collect();
        for (key, ns, name) in orphans {
            self.delete(tx, &key, &ns, &name, Propagation::Background);
        }
    }

    pub(super) fn finish_namespace_deletions(&mut self, tx: &broadcast::Sender<Arc<Event>>) {
        let ns_key = ResourceKey { group: String::new(), plural: "namespaces".into() };
        let terminating: Vec<String> = self
            .objects
            .get(&ns_key)
            .map(|m| {
                m.values()
                    .filter(|n| n["metadata"].get("deletionTimestamp").is_some())
                    .filter_map(|n| meta_str(n, "name").map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for ns in terminating {
            // Objects are kept in (namespace, name) order: the namespace's are one range.
            let from = (ns.clone(), String::new());
            let contents: Vec<(ResourceKey, String)> = self
                .objects
                .iter()
                .filter(|(k, _)| **k != ns_key)
                .flat_map(|(k, m)| {
                    m.range(from.clone()..).map(|(key, _)| key).take_while(|(n, _)| *n == ns).map(move |(_, name)| (k.clone(), name.clone()))
                })
                .collect();
            self.count_examined(contents.len());
            let empty = contents.is_empty();
            for (key, name) in contents {
                self.delete(tx, &key, &ns, &name, Propagation::Background);
            }
            let ns_obj = self.get(&ns_key, "", &ns).cloned();
            let blocked = ns_obj.as_ref().is_some_and(|n| n["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()));
            if empty && !blocked {
                self.remove(tx, &ns_key, "", &ns, Propagation::Background);
            }
        }
    }

    pub(super) fn create_namespace_defaults(&mut self, tx: &broadcast::Sender<Arc<Event>>, ns: &str) {
        let Some(rt) = self.type_for(&ResourceKey { group: String::new(), plural: "serviceaccounts".into() }) else { return };
        let sa = json!({"metadata": {"name": "default", "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now_rfc3339()}});
        self.put(tx, &rt, ns, "default", sa, EventType::Added, None);
    }

    pub(super) fn register_crd(&mut self, crd: &Value) {
        let Ok(new_types) = resources::from_crd(crd) else { return };
        if let Some(first) = new_types.first() {
            let key = first.key();
            self.types.retain(|t| t.key() != key);
        }
        self.types.extend(new_types);
    }

    pub(super) fn unregister_crd(&mut self, tx: &broadcast::Sender<Arc<Event>>, crd: &Value) {
        let Ok(types) = resources::from_crd(crd) else { return };
        let Some(key) = types.first().map(|t| t.key()) else { return };
        if let Some(objs) = self.objects.remove(&key) {
            for ((ns, name), mut obj) in objs {
                self.owners.removed(&(key.clone(), ns, name), &obj);
                self.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.record(tx, Event { rv: self.rv, key: key.clone(), kind: EventType::Deleted, object: obj, old: None });
            }
        }
        self.types.retain(|t| t.key() != key);
    }
}

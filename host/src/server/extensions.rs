//! The server's extension ConfigMap watch (DESIGN §7): loads, hot-swaps and quarantines
//! extensions, recording their state on the ConfigMap and in Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use stowage_runtime::{ExtensionId, ExtensionSource, Registry};

use crate::context::Context;
use crate::extensions::scope_text;

/// Annotations the server writes on an extension's ConfigMap, for `stowage extension list`.
pub const STATE_ANNOTATION: &str = "stowage.io/extension-state";
pub const DIGEST_ANNOTATION: &str = "stowage.io/extension-digest";
pub const ERROR_ANNOTATION: &str = "stowage.io/extension-error";
pub const SCOPE_ANNOTATION: &str = "stowage.io/extension-scope";

fn binary_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    cm.binary_data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// Loads one ConfigMap into the registry; returns the annotations describing the result.
pub fn load(registry: &Registry, cm: &ConfigMap) -> BTreeMap<String, String> {
    let (ns, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
    let source = ExtensionSource::from_configmap_parts(
        &ns,
        &name,
        &cm.labels().clone(),
        &cm.data.clone().unwrap_or_default(),
        &binary_data(cm),
    );
    let result = match source {
        Ok(source) => registry.upsert(source).map_err(|e| e.to_string()),
        Err(e) => {
            // Not even shaped like an extension: whatever ran before stops for new operations.
            registry.remove(&ns, &name);
            Err(e.to_string())
        }
    };
    let mut annotations = BTreeMap::new();
    match result {
        Ok(ext) => {
            annotations.insert(STATE_ANNOTATION.to_string(), "Active".to_string());
            annotations.insert(DIGEST_ANNOTATION.to_string(), ext.digest.0.clone());
            annotations.insert(SCOPE_ANNOTATION.to_string(), scope_text(&ext.scope));
            tracing::info!(extension = %ext.id, digest = %ext.digest.0, "extension loaded");
        }
        Err(e) => {
            annotations.insert(STATE_ANNOTATION.to_string(), "Quarantined".to_string());
            annotations.insert(ERROR_ANNOTATION.to_string(), e.clone());
            if let Some(status) = registry.states().into_iter().find(|s| s.id == ExtensionId::new(&ns, &name)) {
                if let Some(d) = status.digest {
                    annotations.insert(DIGEST_ANNOTATION.to_string(), d.0);
                }
            }
            tracing::warn!(extension = %format!("{ns}/{name}"), "extension quarantined: {e}");
        }
    }
    annotations
}

/// Loads every extension ConfigMap now, before the watch does: a starting server pays the hooks
/// a stopped one owed, and hook extensions must be there for that.
pub async fn load_all(ctx: &Context) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::all(ctx.client.clone());
    let lp = kube::api::ListParams::default().labels(stowage_runtime::EXTENSION_LABEL);
    for cm in api.list(&lp).await?.items {
        load(&ctx.extensions, &cm);
    }
    Ok(())
}

/// Watches every ConfigMap labelled `stowage.io/extension`: a change is loaded (compiled once
/// per content digest) and swapped in for the next operation; a broken one is quarantined,
/// with its state written on the ConfigMap and in an Event.
pub async fn watch(ctx: Arc<Context>) {
    let api: Api<ConfigMap> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().labels(stowage_runtime::EXTENSION_LABEL);
    let mut stream = watcher::watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(cm) | Event::InitApply(cm)) => apply(&ctx, &cm).await,
            Ok(Event::Delete(cm)) => {
                if ctx.extensions.remove(&cm.namespace().unwrap_or_default(), &cm.name_any()) {
                    tracing::info!(extension = %format!("{}/{}", cm.namespace().unwrap_or_default(), cm.name_any()), "extension removed");
                }
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => {
                tracing::warn!("watching extension ConfigMaps: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let quarantined = ctx.extensions.states().iter().filter(|s| s.state == stowage_runtime::State::Quarantined).count();
        ctx.metrics.extensions_quarantined.set(quarantined as i64);
    }
}

async fn apply(ctx: &Context, cm: &ConfigMap) {
    let wanted = load(&ctx.extensions, cm);
    let current = cm.annotations();
    let changed = [STATE_ANNOTATION, DIGEST_ANNOTATION, ERROR_ANNOTATION, SCOPE_ANNOTATION]
        .iter()
        .any(|k| current.get(*k) != wanted.get(*k));
    if !changed {
        return;
    }
    let (ns, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
    let mut annotations: serde_json::Map<String, Value> = [STATE_ANNOTATION, DIGEST_ANNOTATION, ERROR_ANNOTATION, SCOPE_ANNOTATION]
        .iter()
        .map(|k| (k.to_string(), wanted.get(*k).map(|v| Value::String(v.clone())).unwrap_or(Value::Null)))
        .collect();
    annotations.retain(|k, v| !v.is_null() || current.contains_key(k));
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": annotations}}))).await {
        tracing::warn!("recording the state of extension {ns}/{name}: {e}");
    }
    if let Some(error) = wanted.get(ERROR_ANNOTATION) {
        event(&ctx.client, cm, "ExtensionQuarantined", error).await;
    }
}

/// An Event on the ConfigMap, where `kubectl describe configmap` shows it.
async fn event(client: &Client, cm: &ConfigMap, reason: &str, message: &str) {
    let ns = cm.namespace().unwrap_or_default();
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let ev = json!({"metadata": {"generateName": format!("{}.", cm.name_any())},
        "involvedObject": {"kind": "ConfigMap", "apiVersion": "v1", "namespace": ns, "name": cm.name_any(), "uid": cm.uid()},
        "reason": reason, "message": message, "type": "Warning", "source": {"component": "stowage"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1});
    if let Ok(ev) = serde_json::from_value(ev) {
        if let Err(e) = events.create(&PostParams::default(), &ev).await {
            tracing::debug!("event on ConfigMap {ns}/{}: {e}", cm.name_any());
        }
    }
}


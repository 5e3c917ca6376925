//! The simulator through a real kube-rs client: CRUD, selectors, patches, subresources,
//! watches and a kube-runtime controller reacting to them.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;

async fn sim() -> (KubeSim, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(dir.path());
    cfg.run_controllers = false;
    let sim = KubeSim::start(cfg).await.unwrap();
    let client = sim.client().await.unwrap();
    (sim, client, dir)
}

async fn namespace(client: &Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()).await.unwrap();
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn discovery_lists_builtin_groups() {
    let (_sim, client, _dir) = sim().await;
    let discovery = kube::discovery::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
    for g in ["", "apps", "batch", "networking.k8s.io", "rbac.authorization.k8s.io", "storage.k8s.io",
              "apiextensions.k8s.io", "coordination.k8s.io", "policy", "autoscaling"] {
        assert!(groups.iter().any(|x| x == g), "group {g:?} missing from {groups:?}");
    }
    let (pods, caps) = discovery.groups().find(|g| g.name().is_empty()).unwrap()
        .recommended_resources().into_iter().find(|(r, _)| r.plural == "pods").unwrap();
    assert_eq!(pods.kind, "Pod");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "exec"));
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn crud_selectors_patches_and_conflicts() {
    let (_sim, client, _dir) = sim().await;
    namespace(&client, "app").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "app");
    let a = cms.create(&PostParams::default(), &cm("a", json!({"tier": "web"}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({"tier": "db"}))).await.unwrap();
    let err = cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");

    let web = cms.list(&ListParams::default().labels("tier in (web,cache)")).await.unwrap();
    assert_eq!(web.items.len(), 1);
    let not_web = cms.list(&ListParams::default().labels("tier!=web")).await.unwrap();
    assert_eq!(not_web.items[0].metadata.name.as_deref(), Some("b"));
    let by_name = cms.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    let paged = cms.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    let rest = cms.list(&ListParams::default().limit(5).continue_token(paged.metadata.continue_.as_deref().unwrap())).await.unwrap();
    assert_eq!(rest.items.len(), 1);

    // Merge, JSON and strategic patches, and server-side apply.
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"m": "1"}}))).await.unwrap();
    let jp: json_patch::Patch = serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "2"}])).unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::<()>::Json(jp)).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Strategic(json!({"data": {"s": "3"}}))).await.unwrap();
    let applied = cms
        .patch("a", &PatchParams::apply("test").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "4"}})))
        .await
        .unwrap();
    let data = applied.data.unwrap();
    for k in ["k", "m", "j", "s", "x"] {
        assert!(data.contains_key(k), "{k} missing after patches: {data:?}");
    }

    // A stale resourceVersion is a conflict.
    let mut stale = a.clone();
    stale.data = Some([("z".to_string(), "z".to_string())].into());
    let err = cms.replace("a", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err:?}");

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    cms.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn scale_and_status_subresources() {
    let (_sim, client, _dir) = sim().await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let scale = deps.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    deps.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    assert_eq!(deps.get("web").await.unwrap().spec.unwrap().replicas, Some(0));
    let st = deps.patch_status("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"replicas": 7}}))).await.unwrap();
    assert_eq!(st.status.unwrap().replicas, Some(7));
    // The main resource ignores status.
    let after = deps.patch("web", &PatchParams::default(), &Patch::Merge(json!({"status": {"replicas": 1}}))).await.unwrap();
    assert_eq!(after.status.unwrap().replicas, Some(7));
}

#[tokio::test]
async fn watch_resumes_from_version_and_reports_gone() {
    let (sim, client, _dir) = sim().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = cms.create(&PostParams::default(), &cm("one", json!({}))).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("two", json!({}))).await.unwrap();
    let mut stream = cms.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("two")),
        other => panic!("expected ADDED two, got {other:?}"),
    }
    cms.delete("two", &DeleteParams::default()).await.unwrap();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.metadata.name.as_deref(), Some("two")),
        other => panic!("expected DELETED two, got {other:?}"),
    }
    drop(stream);
    // Once history is compacted, resuming from an old version reports 410 Gone.
    sim.compact_history();
    let mut old = cms.watch(&WatchParams::default().timeout(2), &rv).await.unwrap().boxed();
    match old.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn runtime_controller_reacts_to_watch_events() {
    let (_sim, client, _dir) = sim().await;
    namespace(&client, "ctl").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ctl");
    // A tiny controller: every ConfigMap labelled `mirror=yes` gets a copy named `<name>-copy`.
    let ctl_api = cms.clone();
    let ctl = tokio::spawn(async move {
        let stream = watcher(ctl_api.clone(), watcher::Config::default().labels("mirror=yes")).applied_objects();
        futures::pin_mut!(stream);
        while let Some(Ok(obj)) = stream.next().await {
            let name = format!("{}-copy", obj.metadata.name.clone().unwrap());
            let copy = cm(&name, json!({}));
            let _ = ctl_api.create(&PostParams::default(), &copy).await;
        }
    });
    cms.create(&PostParams::default(), &cm("src", json!({"mirror": "yes"}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("other", json!({}))).await.unwrap();
    eventually("the controller to copy src", || async { cms.get_opt("src-copy").await.unwrap().is_some() }).await;
    // Relabelling brings an object into the watch's selection.
    cms.patch("other", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"mirror": "yes"}}}))).await.unwrap();
    eventually("the controller to copy other", || async { cms.get_opt("other-copy").await.unwrap().is_some() }).await;
    ctl.abort();
}

#[tokio::test]
async fn reflector_store_follows_changes() {
    let (_sim, client, _dir) = sim().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = kube::runtime::reflector::store();
    let rf = kube::runtime::reflector(writer, watcher(cms.clone(), watcher::Config::default()));
    let task = tokio::spawn(async move { rf.for_each(|_| async {}).await });
    cms.create(&PostParams::default(), &cm("r1", json!({}))).await.unwrap();
    eventually("the reflector to see r1", || async { reader.state().iter().any(|c| c.metadata.name.as_deref() == Some("r1")) }).await;
    cms.delete("r1", &DeleteParams::default()).await.unwrap();
    eventually("the reflector to drop r1", || async { reader.state().is_empty() }).await;
    task.abort();
}

#[tokio::test]
async fn crd_creation_serves_the_new_resource() {
    let (_sim, client, _dir) = sim().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).unwrap();
    let created = crds.create(&PostParams::default(), &crd).await.unwrap();
    let conds = created.status.unwrap().conditions.unwrap();
    assert!(conds.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    let ar = kube::discovery::ApiResource::from_gvk_with_plural(&kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let widgets: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
    let w = kube::api::DynamicObject::new("w1", &ar).data(json!({"spec": {"size": 3}}));
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let st = widgets.patch_status("w1", &PatchParams::default(), &Patch::Merge(json!({"status": {"ok": true}}))).await.unwrap();
    assert_eq!(st.data["status"]["ok"], true);
    assert_eq!(widgets.get("w1").await.unwrap().data["spec"]["size"], 3);
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_objects() {
    let (_sim, client, _dir) = sim().await;
    namespace(&client, "gone").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(&PostParams::default(), &cm("c", json!({}))).await.unwrap();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("namespace gone to be removed", || async { nss.get_opt("gone").await.unwrap().is_none() }).await;
    assert!(cms.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn watch_sends_bookmarks_and_ends_at_its_timeout() {
    let (_sim, client, _dir) = sim().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = std::time::Instant::now();
    let events: Vec<_> = cms.watch(&WatchParams::default().timeout(3), "0").await.unwrap().collect().await;
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(8), "watch lasted {elapsed:?}");
    assert!(
        events.iter().any(|e| matches!(e, Ok(WatchEvent::Bookmark(b)) if !b.metadata.resource_version.is_empty())),
        "no bookmark in {events:?}"
    );
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_api_errors() {
    let (_sim, client, _dir) = sim().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let nameless: ConfigMap = serde_json::from_value(json!({"metadata": {}})).unwrap();
    let err = cms.create(&PostParams::default(), &nameless).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid"), "{err:?}");
    // A body that is not JSON at all is a 400, as on a real API server.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let err = client.request::<ConfigMap>(req).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 400), "{err:?}");
    let missing = Api::<ConfigMap>::namespaced(client.clone(), "no-such-ns");
    let err = missing.create(&PostParams::default(), &cm("x", json!({}))).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 404), "{err:?}");
}

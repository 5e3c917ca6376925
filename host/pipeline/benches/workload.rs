//! Synthetic cluster objects for the pipeline benchmarks: ConfigMap-sized objects (~1 KiB of
//! JSON) spread over 20 namespaces, a tenth of them labelled for exclusion.

use serde_json::json;
use stowage_pipeline::{ApiResourceInfo, Item};

pub fn info() -> ApiResourceInfo {
    ApiResourceInfo::new("", "v1", "configmaps", "ConfigMap", true).with_short_names(&["cm"])
}

pub fn item(i: usize) -> Item {
    let mut labels = json!({"app": format!("app-{}", i % 50), "tier": "web"});
    if i.is_multiple_of(10) {
        labels["stowage.io/exclude-from-backup"] = json!("true");
    }
    let obj = json!({
        "metadata": {
            "name": format!("config-{i:07}"),
            "namespace": format!("ns-{:02}", i % 20),
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "resourceVersion": i.to_string(),
            "creationTimestamp": "2026-11-21T10:00:00Z",
            "labels": labels,
            "annotations": {"description": "x".repeat(200)},
        },
        "data": {
            "settings.yaml": format!("replicas: {}\nimage: registry.example.com/app:{}\n{}", i % 7, i % 13, "key: value\n".repeat(50)),
        },
    });
    Item::new(obj, &info()).expect("valid synthetic item")
}

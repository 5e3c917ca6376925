//! A minimal OpenAPI v3 surface: enough for kubectl to see that PATCH accepts the
//! `fieldValidation` and `dryRun` parameters (so it validates server-side instead of
//! downloading full schemas). Without schemas kubectl computes strategic merge patches from its
//! built-in types and JSON merge patches for custom resources, as it does against any server
//! whose OpenAPI lacks them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::resources::ResourceType;

fn gv_path(t: &ResourceType) -> String {
    if t.group.is_empty() {
        format!("api/{}", t.version)
    } else {
        format!("apis/{}/{}", t.group, t.version)
    }
}

/// `/openapi/v3`: one entry per group version.
pub fn root(types: &[ResourceType]) -> Value {
    let mut paths = BTreeMap::new();
    for t in types {
        let p = gv_path(t);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/g/v>`: the PATCH operations of that group version's types.
pub fn group_version(types: &[ResourceType], gv: &str) -> Option<Value> {
    let mut paths = Map::new();
    for t in types.iter().filter(|t| gv_path(t) == gv) {
        let ns = if t.namespaced { "/namespaces/{namespace}" } else { "" };
        let path = format!("/{gv}{ns}/{}/{{name}}", t.plural);
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0-kube-sim"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

//! Server-side printing (`meta.k8s.io/v1 Table`), which `kubectl get` asks for.

use serde_json::{json, Value};

use crate::resources::{json_path, ResourceType};

/// Which part of each object a Table row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// True when the client's Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

pub fn column_definitions(rt: &ResourceType) -> Vec<Value> {
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0})];
    for c in &rt.columns {
        let (ty, format) = if c.type_ == "date" { ("string", "date") } else { (c.type_.as_str(), "") };
        cols.push(json!({"name": c.name, "type": ty, "format": format, "description": "", "priority": c.priority}));
    }
    cols
}

pub fn row(rt: &ResourceType, obj: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    for c in &rt.columns {
        let v = json_path(obj, &c.json_path).cloned().unwrap_or(Value::Null);
        let cell = match (c.type_.as_str(), &v) {
            ("date", Value::String(ts)) => json!(age(ts)),
            (_, Value::Null) => json!("<none>"),
            (_, Value::Object(m)) if c.json_path == ".spec.selector" => json!(format!("{m:?}")),
            _ => v,
        };
        cells.push(cell);
    }
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

pub fn table(rt: &ResourceType, objs: &[Value], include: IncludeObject, with_columns: bool, resource_version: &str) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "rows": objs.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = json!(column_definitions(rt));
    }
    t
}

/// Ages as kubectl prints them: 45s, 12m, 5h, 3d.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(timestamp) else { return "<unknown>".into() };
    let secs = std::time::SystemTime::now().duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::builtins;

    #[test]
    fn table_has_name_and_type_columns() {
        let pods = builtins().into_iter().find(|t| t.plural == "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": crate::store::now_rfc3339()},
                         "status": {"phase": "Running"}, "spec": {"nodeName": "node-1"}});
        let t = table(&pods, &[pod], IncludeObject::Metadata, true, "5");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["rows"][0]["cells"][0], "p");
        assert_eq!(t["rows"][0]["cells"][1], "Running");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
    }
}

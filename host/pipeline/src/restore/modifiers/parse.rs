//! Reading the rules document (`version: v1`, `resourceModifierRules: [...]`), with errors
//! that name the rule and the field, and values read the way Velero reads them.

use globset::GlobBuilder;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Conditions, ModifierError, Patch, Rule};
use crate::selection::LabelSelector;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    conditions: RawConditions,
    #[serde(default)]
    patches: Vec<RawJsonPatch>,
    #[serde(default)]
    merge_patches: Vec<RawPatchData>,
    #[serde(default)]
    strategic_patches: Vec<RawPatchData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConditions {
    group_resource: String,
    #[serde(default)]
    resource_name_regex: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    label_selector: Option<Value>,
    #[serde(default)]
    matches: Vec<RawMatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonPatch {
    operation: String,
    path: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    path: String,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPatchData {
    patch_data: String,
}

/// Parses the whole document. `version` must be `v1`, and there must be rules.
pub(super) fn parse_document(text: &str) -> Result<Vec<Rule>, ModifierError> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| ModifierError::document(format!("not YAML or JSON: {e}")))?;
    let Some(map) = doc.as_object() else {
        return Err(ModifierError::document("expected a map with version and resourceModifierRules".into()));
    };
    if let Some(unknown) = map.keys().find(|k| *k != "version" && *k != "resourceModifierRules") {
        return Err(ModifierError::document(format!(
            "unknown field {unknown:?}; expected version and resourceModifierRules"
        )));
    }
    match map.get("version").and_then(Value::as_str) {
        Some(v) if v.eq_ignore_ascii_case("v1") => {}
        other => return Err(ModifierError::document(format!("version is {other:?}; the supported version is v1"))),
    }
    let rules = map.get("resourceModifierRules").and_then(Value::as_array).filter(|r| !r.is_empty());
    let Some(rules) = rules else {
        return Err(ModifierError::document("resourceModifierRules is missing or empty".into()));
    };
    rules.iter().enumerate().map(|(index, raw)| parse_rule(index, raw)).collect()
}

fn parse_rule(index: usize, raw: &Value) -> Result<Rule, ModifierError> {
    let fail = |message: String| ModifierError::rule(index, message);
    let raw: RawRule = serde_json::from_value(raw.clone()).map_err(|e| fail(e.to_string()))?;
    let conditions = parse_conditions(raw.conditions).map_err(fail)?;
    let kinds = [!raw.patches.is_empty(), !raw.merge_patches.is_empty(), !raw.strategic_patches.is_empty()];
    let patch = match kinds {
        [true, false, false] => Patch::Json(json_patch(raw.patches).map_err(fail)?),
        [false, true, false] => Patch::Merge(patch_data("mergePatches", raw.merge_patches).map_err(fail)?),
        [false, false, true] => Patch::Strategic(patch_data("strategicPatches", raw.strategic_patches).map_err(fail)?),
        [false, false, false] => {
            return Err(fail("has no patches; give patches, mergePatches or strategicPatches".into()))
        }
        _ => return Err(fail("only one of patches, mergePatches and strategicPatches can be given".into())),
    };
    Ok(Rule { index, conditions, patch })
}

fn parse_conditions(raw: RawConditions) -> Result<Conditions, String> {
    if raw.group_resource.is_empty() {
        return Err(
            "conditions.groupResource is empty; name a resource such as pods or deployments.apps, or a glob".into()
        );
    }
    // Velero matches with '.' as the separator: `*` stays within one part, `*.apps` spans two.
    let glob = GlobBuilder::new(&raw.group_resource.replace('.', "/"))
        .literal_separator(true)
        .build()
        .map_err(|e| format!("conditions.groupResource {:?}: {}", raw.group_resource, e.kind()))?;
    let name_regex = match raw.resource_name_regex.filter(|r| !r.is_empty()) {
        Some(r) => Some(Regex::new(&r).map_err(|e| format!("conditions.resourceNameRegex: {e}"))?),
        None => None,
    };
    let namespaces = raw
        .namespaces
        .iter()
        .map(|ns| globset::Glob::new(ns).map(|g| g.compile_matcher()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("conditions.namespaces: {e}"))?;
    let label_selector = match raw.label_selector {
        Some(sel) => Some(LabelSelector::from_json(&sel).map_err(|e| format!("conditions.labelSelector: {e}"))?),
        None => None,
    };
    let matches = (raw.matches.into_iter().enumerate())
        .map(|(i, m)| match_rule(m).map_err(|e| format!("conditions.matches[{i}]: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(Conditions { group_resource: glob.compile_matcher(), name_regex, namespaces, label_selector, matches })
}

fn match_rule(raw: RawMatch) -> Result<(String, Value), String> {
    if !raw.path.starts_with('/') {
        return Err(format!("path {:?} is not a JSON pointer; start it with '/'", raw.path));
    }
    Ok((raw.path, patch_value(raw.value)?))
}

const OPERATIONS: &[&str] = &["add", "remove", "replace", "copy", "move", "test"];

fn json_patch(raw: Vec<RawJsonPatch>) -> Result<json_patch::Patch, String> {
    let mut ops = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let op = p.operation.to_ascii_lowercase();
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(format!(
                "patches[{i}].operation: unsupported operation {:?}; use {}",
                p.operation,
                OPERATIONS.join(", ")
            ));
        }
        let mut entry = json!({"op": op, "path": p.path});
        match op.as_str() {
            "copy" | "move" => entry["from"] = json!(p.from.unwrap_or_default()),
            "remove" => {}
            _ => entry["value"] = patch_value(p.value).map_err(|e| format!("patches[{i}].value: {e}"))?,
        }
        ops.push(serde_json::from_value(entry).map_err(|e| format!("patches[{i}]: {e}"))?);
    }
    Ok(json_patch::Patch(ops))
}

fn patch_data(field: &str, raw: Vec<RawPatchData>) -> Result<Vec<Value>, String> {
    (raw.into_iter().enumerate())
        .map(|(i, p)| {
            serde_yaml::from_str(&p.patch_data).map_err(|e| format!("{field}[{i}].patchData: not YAML or JSON: {e}"))
        })
        .collect()
}

/// A patch or match value. Velero's field is a string, read as JSON when it looks like JSON
/// (`"true"`, `"3"`, `"null"`, `"{...}"`), and as a string when quoted (`"\"3\""`); values
/// written as YAML numbers, booleans, maps or lists are taken as they are.
fn patch_value(value: Option<Value>) -> Result<Value, String> {
    let text = match value {
        None => return Ok(json!("")),
        Some(Value::String(text)) => text,
        Some(other) => return Ok(other),
    };
    if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        return Ok(json!(text[1..text.len() - 1]));
    }
    match text.to_ascii_lowercase().as_str() {
        "null" => return Ok(Value::Null),
        "true" => return Ok(json!(true)),
        "false" => return Ok(json!(false)),
        _ => {}
    }
    if text.starts_with('{') || text.starts_with('[') {
        return serde_json::from_str(&text).map_err(|e| format!("{text:?} looks like JSON but is not: {e}"));
    }
    Ok(serde_json::from_str::<serde_json::Number>(&text).map(Value::Number).unwrap_or(Value::String(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_velero_reads_them() {
        let v = |x: Value| patch_value(Some(x)).unwrap();
        assert_eq!(v(json!("premium")), json!("premium"));
        assert_eq!(v(json!("3")), json!(3));
        assert_eq!(v(json!("\"3\"")), json!("3"));
        assert_eq!(v(json!("True")), json!(true));
        assert_eq!(v(json!("null")), Value::Null);
        assert_eq!(v(json!("{\"a\": [1]}")), json!({"a": [1]}));
        assert_eq!(v(json!(5)), json!(5));
        assert_eq!(patch_value(None).unwrap(), json!(""));
        assert!(patch_value(Some(json!("{broken"))).unwrap_err().contains("looks like JSON"));
    }
}

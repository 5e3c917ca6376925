//! Kubernetes label selectors (`matchLabels` and `matchExpressions`) over JSON objects.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// A parsed `metav1.LabelSelector`. The empty selector matches everything, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    match_expressions: Option<Vec<RawExpression>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Option<Vec<String>>,
}

impl LabelSelector {
    /// Parses a selector as it appears in a manifest. The error says what is wrong with it,
    /// for the caller to prefix with where the selector came from.
    pub fn from_json(value: &Value) -> Result<LabelSelector, String> {
        let raw: RawSelector = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let mut requirements: Vec<Requirement> = (raw.match_labels.unwrap_or_default().into_iter())
            .map(|(key, value)| Requirement { key, operator: Operator::In, values: vec![value] })
            .collect();
        for (index, expr) in raw.match_expressions.unwrap_or_default().into_iter().enumerate() {
            requirements.push(requirement(expr).map_err(|e| format!("matchExpressions[{index}]: {e}"))?);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether labels looked up through `label` satisfy every requirement.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        self.matches(|key| labels?.get(key)?.as_str())
    }
}

fn requirement(expr: RawExpression) -> Result<Requirement, String> {
    if expr.key.is_empty() {
        return Err("key is empty".into());
    }
    let values = expr.values.unwrap_or_default();
    let operator = match expr.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => return Err(format!("unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist")),
    };
    let wants_values = matches!(operator, Operator::In | Operator::NotIn);
    if wants_values && values.is_empty() {
        return Err(format!("operator {} on key {:?} needs at least one value", expr.operator, expr.key));
    }
    if !wants_values && !values.is_empty() {
        return Err(format!("operator {} on key {:?} takes no values", expr.operator, expr.key));
    }
    Ok(Requirement { key: expr.key, operator, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: Value) -> LabelSelector {
        LabelSelector::from_json(&value).unwrap()
    }

    fn object(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn match_labels_and_expressions_all_apply() {
        let sel = selector(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }));
        assert!(sel.matches_object(&object(json!({"app": "web", "tier": "edge"}))));
        assert!(!sel.matches_object(&object(json!({"app": "web", "tier": "back"}))));
        assert!(!sel.matches_object(&object(json!({"app": "web", "tier": "front", "canary": "1"}))));
        assert!(!sel.matches_object(&object(json!({"tier": "front"}))));
    }

    #[test]
    fn not_in_matches_missing_labels_and_exists_needs_the_key() {
        let not_in = selector(json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}));
        assert!(not_in.matches_object(&json!({"metadata": {}})));
        assert!(!not_in.matches_object(&object(json!({"env": "prod"}))));
        let exists = selector(json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}));
        assert!(exists.matches_object(&object(json!({"env": ""}))));
        assert!(!exists.matches_object(&object(json!({}))));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(selector(json!({})).matches_object(&json!({})));
        assert!(selector(json!({"matchLabels": null})).is_empty());
    }

    #[test]
    fn malformed_selectors_say_what_is_wrong() {
        let err = |v: Value| LabelSelector::from_json(&v).unwrap_err();
        assert!(err(json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}))
            .contains("unknown operator \"Equals\""));
        assert!(err(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).contains("needs at least one value"));
        assert!(err(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}))
            .contains("takes no values"));
        assert!(err(json!({"matchLabel": {"a": "b"}})).contains("unknown field `matchLabel`"));
    }
}

//! What happened to the items of a run, kept apart from the plan that drove it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Warnings and errors keyed by namespace; `""` holds those of cluster-scoped objects and of
/// the run as a whole. Item failures land here (the run ends PartiallyFailed), never abort it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warnings: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, Vec<String>>,
}

/// The key of cluster-scoped and run-wide messages.
pub const CLUSTER: &str = "";

impl Outcome {
    pub fn warn(&mut self, namespace: Option<&str>, message: impl Into<String>) {
        push(&mut self.warnings, namespace, message.into());
    }

    pub fn error(&mut self, namespace: Option<&str>, message: impl Into<String>) {
        push(&mut self.errors, namespace, message.into());
    }

    /// Adds another outcome's messages (a stage's or a worker's) to this one.
    pub fn merge(&mut self, other: Outcome) {
        for (ns, messages) in other.warnings {
            self.warnings.entry(ns).or_default().extend(messages);
        }
        for (ns, messages) in other.errors {
            self.errors.entry(ns).or_default().extend(messages);
        }
    }

    pub fn warning_count(&self) -> usize {
        self.warnings.values().map(Vec::len).sum()
    }

    pub fn error_count(&self) -> usize {
        self.errors.values().map(Vec::len).sum()
    }

    pub fn is_clean(&self) -> bool {
        self.warnings.is_empty() && self.errors.is_empty()
    }
}

fn push(map: &mut BTreeMap<String, Vec<String>>, namespace: Option<&str>, message: String) {
    map.entry(namespace.unwrap_or(CLUSTER).to_string()).or_default().push(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_keyed_by_namespace_and_counted() {
        let mut outcome = Outcome::default();
        outcome.warn(Some("shop"), "pod shop/web: volume skipped");
        outcome.error(None, "persistentvolumes pv-1: create failed");
        let mut other = Outcome::default();
        other.warn(Some("shop"), "second");
        outcome.merge(other);
        assert_eq!(outcome.warnings["shop"], vec!["pod shop/web: volume skipped", "second"]);
        assert_eq!(outcome.errors[CLUSTER].len(), 1);
        assert_eq!((outcome.warning_count(), outcome.error_count()), (2, 1));
        assert!(!outcome.is_clean());
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["errors"][""][0], "persistentvolumes pv-1: create failed");
        assert!(Outcome::default().is_clean());
    }
}

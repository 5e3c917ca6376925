//! Resource modifiers: the user's rules for changing objects as they are restored, in
//! Velero's format, so existing ConfigMaps work unchanged:
//!
//! ```yaml
//! version: v1
//! resourceModifierRules:
//! - conditions:
//!     groupResource: persistentvolumeclaims     # a glob; '.' separates parts
//!     resourceNameRegex: "^mysql.*$"
//!     namespaces: [shop]
//!     labelSelector: {matchLabels: {app: db}}
//!     matches: [{path: /spec/storageClassName, value: standard}]
//!   patches:                                    # or mergePatches / strategicPatches: [{patchData: ...}]
//!   - {operation: replace, path: /spec/storageClassName, value: premium}
//! ```
//!
//! Rules are matched against the object as it was before any rule changed it, and applied in
//! order. They run after the built-in transforms, so `namespaces` are restored namespaces.

mod parse;
mod strategic;

use std::collections::BTreeMap;

use globset::GlobMatcher;
use regex::Regex;
use serde_json::Value;
use thiserror::Error;

use crate::item::Item;
use crate::selection::LabelSelector;

/// A rules document that cannot be used, with the rule and field at fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("resource modifiers{}{}: {message}",
    config_map.as_ref().map(|c| format!(" in ConfigMap {c:?}")).unwrap_or_default(),
    rule.map(|r| format!(", rule {r}")).unwrap_or_default())]
pub struct ModifierError {
    pub config_map: Option<String>,
    /// Zero-based index in `resourceModifierRules`.
    pub rule: Option<usize>,
    pub message: String,
}

impl ModifierError {
    fn document(message: String) -> ModifierError {
        ModifierError { config_map: None, rule: None, message }
    }

    fn rule(index: usize, message: String) -> ModifierError {
        ModifierError { config_map: None, rule: Some(index), message }
    }
}

/// Parsed rules, ready to apply.
#[derive(Clone, Debug)]
pub struct ResourceModifiers {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    index: usize,
    conditions: Conditions,
    patch: Patch,
}

#[derive(Clone, Debug)]
struct Conditions {
    /// Matches `resource/group` (dots turned into separators).
    group_resource: GlobMatcher,
    name_regex: Option<Regex>,
    /// Empty: every namespace. Cluster-scoped objects always pass.
    namespaces: Vec<GlobMatcher>,
    label_selector: Option<LabelSelector>,
    /// JSON pointer → value that must be there.
    matches: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
enum Patch {
    Json(json_patch::Patch),
    Merge(Vec<Value>),
    Strategic(Vec<Value>),
}

impl ResourceModifiers {
    /// Parses a rules document (YAML or JSON).
    pub fn parse(text: &str) -> Result<ResourceModifiers, ModifierError> {
        Ok(ResourceModifiers { rules: parse::parse_document(text)? })
    }

    /// Parses the ConfigMap a Restore names: it must hold exactly one document, under any key.
    pub fn from_config_map(name: &str, data: &BTreeMap<String, String>) -> Result<ResourceModifiers, ModifierError> {
        let in_config_map = |mut e: ModifierError| {
            e.config_map = Some(name.to_string());
            e
        };
        let mut documents = data.values();
        match (documents.next(), documents.next()) {
            (Some(text), None) => Self::parse(text).map_err(in_config_map),
            _ => Err(in_config_map(ModifierError::document(format!(
                "the ConfigMap has {} data keys; put the rules document under exactly one",
                data.len()
            )))),
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies every matching rule in order. A rule that fails leaves the object as it was
    /// and is reported; the others still apply. A failing `test` operation only means the
    /// rule does not apply (as in Velero).
    pub fn apply(&self, item: &mut Item) -> Vec<String> {
        let original = (self.rules.len() > 1).then(|| item.clone());
        let mut errors = Vec::new();
        for rule in &self.rules {
            if !rule.conditions.matches(original.as_ref().unwrap_or(item)) {
                continue;
            }
            if let Err(e) = rule.patch.apply(&mut item.object, &item.group) {
                errors.push(format!("{item}: resource modifier rule {} failed: {e}", rule.index));
            }
        }
        item.refresh_identity();
        errors
    }
}

impl Conditions {
    fn matches(&self, item: &Item) -> bool {
        let gr = if item.group.is_empty() {
            item.resource.clone()
        } else {
            format!("{}/{}", item.resource, item.group.replace('.', "/"))
        };
        let ns_ok = match &item.namespace {
            Some(ns) => self.namespaces.is_empty() || self.namespaces.iter().any(|g| g.is_match(ns)),
            None => true,
        };
        self.group_resource.is_match(&gr)
            && ns_ok
            && self.name_regex.as_ref().is_none_or(|r| r.is_match(&item.name))
            && self.label_selector.as_ref().is_none_or(|s| s.matches_object(&item.object))
            && self.matches.iter().all(|(path, value)| item.object.pointer(path) == Some(value))
    }
}

impl Patch {
    fn apply(&self, object: &mut Value, group: &str) -> Result<(), String> {
        match self {
            Patch::Json(patch) => match json_patch::patch(object, patch) {
                Err(e) if matches!(e.kind, json_patch::PatchErrorKind::TestFailed) => Ok(()),
                other => other.map_err(|e| e.to_string()),
            },
            Patch::Merge(patches) => {
                for p in patches {
                    json_patch::merge(object, p);
                }
                Ok(())
            }
            Patch::Strategic(_) if !crate::item::is_built_in_group(group) => Err(format!(
                "strategic merge patches need a built-in type's schema and {group} is a custom resource group; use mergePatches"
            )),
            Patch::Strategic(patches) => {
                let mut patched = object.clone();
                patches.iter().try_for_each(|p| strategic::apply(&mut patched, p))?;
                *object = patched;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;

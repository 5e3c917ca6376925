//! What extensions did during one backup or restore: the `<name>-extensions.json.zst` record.

use crate::host::Denial;
use crate::item::{ObjectRef, Phase};
use crate::policy::Scope;
use crate::source::{Digest, ExtensionId, ExtensionKind, Language};
use serde::{Deserialize, Serialize};

/// One extension that took part in an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRecord {
    pub id: ExtensionId,
    pub kind: ExtensionKind,
    pub language: Language,
    pub scope: Scope,
    pub digest: Digest,
    pub counts: Counts,
    /// The items it changed, added to, filtered, skipped, was denied on or failed on.
    pub items: Vec<ItemRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Calls made (items given to it, hooks run).
    pub calls: u64,
    pub changed: u64,
    pub filtered: u64,
    pub skipped: u64,
    pub added: u64,
    pub denied: u64,
    pub errors: u64,
}

/// What one call did to one item (or hook target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    pub item: ObjectRef,
    pub phase: Phase,
    /// The change as a JSON Patch (RFC 6902) from the item it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<json_patch::Patch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<ObjectRef>,
    /// Why it excluded the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<Denial>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ItemRecord {
    pub(crate) fn new(item: ObjectRef, phase: Phase) -> ItemRecord {
        ItemRecord { item, phase, patch: None, added: Vec::new(), filtered: None, skipped: false, denied: Vec::new(), error: None }
    }

    fn is_noteworthy(&self) -> bool {
        self.patch.is_some()
            || !self.added.is_empty()
            || self.filtered.is_some()
            || self.skipped
            || !self.denied.is_empty()
            || self.error.is_some()
    }
}

impl ExtensionRecord {
    /// Counts a call and keeps its record when it did something.
    pub(crate) fn add(&mut self, record: ItemRecord) {
        let c = &mut self.counts;
        c.calls += 1;
        c.changed += u64::from(record.patch.is_some());
        c.filtered += u64::from(record.filtered.is_some());
        c.skipped += u64::from(record.skipped);
        c.added += record.added.len() as u64;
        c.denied += record.denied.len() as u64;
        c.errors += u64::from(record.error.is_some());
        if record.is_noteworthy() {
            self.items.push(record);
        }
    }
}

/// Every extension that ran in an operation, for the backup's or restore's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtensionReport {
    pub extensions: Vec<ExtensionRecord>,
}

impl ExtensionReport {
    /// The content of `<name>-extensions.json.zst`.
    pub fn to_json_zst(&self) -> std::io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        zstd::encode_all(json.as_slice(), 3)
    }

    pub fn from_json_zst(bytes: &[u8]) -> std::io::Result<ExtensionReport> {
        let json = zstd::decode_all(bytes)?;
        serde_json::from_slice(&json).map_err(std::io::Error::other)
    }
}

//! Who owns whom, kept up to date on every write, so that garbage collection and cascading
//! deletion look only at objects with ownerReferences instead of walking the whole store (which,
//! every 100 ms under the store's lock, made each request wait longer the more objects there were).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::resources::ResourceKey;

/// Where an object is stored: its type, namespace and name.
pub(super) type ObjRef = (ResourceKey, String, String);

#[derive(Default)]
pub(super) struct OwnerIndex {
    /// The uids of the stored objects.
    live: HashSet<String>,
    /// Owner uid as a reference names it ("" for a reference without one) -> the objects that
    /// name it.
    dependents: HashMap<String, BTreeSet<ObjRef>>,
}

fn uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty())
}

/// The owner uids `obj`'s ownerReferences name ("" for a reference without a uid).
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"].as_array().into_iter().flatten().map(|r| r["uid"].as_str().unwrap_or(""))
}

impl OwnerIndex {
    /// `obj` is now stored at `at`, replacing `old` if there was one.
    pub(super) fn stored(&mut self, at: &ObjRef, old: Option<&Value>, obj: &Value) {
        if let Some(old) = old {
            self.unlink(at, old);
        }
        if let Some(u) = uid(obj) {
            self.live.insert(u.to_string());
        }
        for owner in owner_uids(obj) {
            self.dependents.entry(owner.to_string()).or_default().insert(at.clone());
        }
    }

    /// `obj`, stored at `at`, is gone.
    pub(super) fn removed(&mut self, at: &ObjRef, obj: &Value) {
        self.unlink(at, obj);
    }

    fn unlink(&mut self, at: &ObjRef, obj: &Value) {
        if let Some(u) = uid(obj) {
            self.live.remove(u);
        }
        for owner in owner_uids(obj) {
            if let Some(deps) = self.dependents.get_mut(owner) {
                deps.remove(at);
                if deps.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    /// The objects whose ownerReferences name `owner_uid`.
    pub(super) fn dependents_of(&self, owner_uid: &str) -> Vec<ObjRef> {
        self.dependents.get(owner_uid).map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    /// Objects naming at least one owner that is not stored: the only ones that can be orphans.
    pub(super) fn missing_an_owner(&self) -> BTreeSet<ObjRef> {
        self.dependents.iter().filter(|(owner, _)| !self.live.contains(*owner)).flat_map(|(_, deps)| deps.iter().cloned()).collect()
    }

    pub(super) fn is_live(&self, uid: &str) -> bool {
        self.live.contains(uid)
    }
}

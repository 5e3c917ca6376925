//! Which of a pod's volumes a backup copies file by file (DESIGN §6, Velero's restic rules):
//! opt-in with `backup.stowage.io/backup-volumes`, or everything when `defaultVolumesToFsBackup`
//! is on minus `backup.stowage.io/backup-volumes-excludes` (the `velero.io` keys work too). Volumes
//! whose content comes from the cluster itself are never copied, and a claim mounted by several
//! pods is backed up once.

use std::collections::BTreeMap;

use serde_json::Value;
use stowage_api::labels::{split_list, BACKUP_VOLUMES, BACKUP_VOLUMES_EXCLUDES};

use crate::item::Item;

/// A volume to back up, and what identifies its data across pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodVolume {
    pub name: String,
    /// The claim, for volumes backed by a PersistentVolumeClaim: the data's identity, so the
    /// incremental chain survives pod reschedules.
    pub claim: Option<String>,
}

/// The decision for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeSelection {
    pub backup: Vec<PodVolume>,
    /// Volumes asked for (or covered by the default) but not copied, with the reason, for the
    /// backup log.
    pub skipped: Vec<(String, String)>,
}

/// Volume sources whose content Kubernetes recreates: copying them would back up secrets or
/// node files, and restoring them would fight the kubelet.
fn never_copied(volume: &Value) -> Option<&'static str> {
    let sources = [
        ("hostPath", "hostPath volumes belong to the node, not the pod"),
        ("secret", "secret volumes are restored from their Secret"),
        ("configMap", "configMap volumes are restored from their ConfigMap"),
        ("projected", "projected volumes (service account tokens, ...) are recreated by the kubelet"),
        ("downwardAPI", "downwardAPI volumes are recreated by the kubelet"),
    ];
    sources.iter().find(|(key, _)| volume.get(*key).is_some()).map(|(_, why)| *why)
}

/// Selects the volumes of one pod.
pub fn select(pod: &Item, default_volumes_to_fs_backup: bool) -> VolumeSelection {
    let volumes: Vec<&Value> = pod.object.pointer("/spec/volumes").and_then(Value::as_array).map(|v| v.iter().collect()).unwrap_or_default();
    let name_of = |v: &Value| v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let opted_in: Vec<String> =
        BACKUP_VOLUMES.item_annotation(&pod.object).map(|a| split_list(a).into_iter().map(String::from).collect()).unwrap_or_default();
    let excluded: Vec<String> = BACKUP_VOLUMES_EXCLUDES
        .item_annotation(&pod.object)
        .map(|a| split_list(a).into_iter().map(String::from).collect())
        .unwrap_or_default();
    let mut out = VolumeSelection::default();
    let wanted: Vec<String> = if default_volumes_to_fs_backup {
        volumes.iter().map(|v| name_of(v)).filter(|n| !excluded.contains(n)).collect()
    } else {
        opted_in.clone()
    };
    for name in wanted {
        let Some(volume) = volumes.iter().find(|v| name_of(v) == name) else {
            out.skipped.push((name.clone(), "the pod has no volume of that name".to_string()));
            continue;
        };
        if let Some(why) = never_copied(volume) {
            // Only worth a log line when someone asked for it by name.
            if opted_in.contains(&name) {
                out.skipped.push((name, why.to_string()));
            }
            continue;
        }
        let claim = volume.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str).map(String::from);
        out.backup.push(PodVolume { name, claim });
    }
    out
}

/// One entry per piece of data: a claim mounted by several pods is backed up through the first
/// pod that mounts it. Keys are `(namespace, claim)`, or `(namespace, "<pod>/<volume>")` for
/// volumes without a claim.
pub fn dedupe<'a>(selections: impl IntoIterator<Item = (&'a Item, &'a VolumeSelection)>) -> BTreeMap<(String, String), (&'a Item, PodVolume)> {
    let mut out = BTreeMap::new();
    for (pod, sel) in selections {
        let ns = pod.namespace.clone().unwrap_or_default();
        for v in &sel.backup {
            let key = match &v.claim {
                Some(c) => (ns.clone(), c.clone()),
                None => (ns.clone(), format!("{}/{}", pod.name, v.name)),
            };
            out.entry(key).or_insert_with(|| (pod, v.clone()));
        }
    }
    out
}

/// Pods whose volumes are backed up together, between their hooks: pods that mount a common
/// claim (an RWX volume shared by replicas) form one group, every other pod a group of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGroup {
    /// Indices into the pods given to [`groups`], in their order.
    pub pods: Vec<usize>,
    pub volumes: Vec<GroupVolume>,
}

/// One volume of a group, copied once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupVolume {
    /// The pods that selected it for backup, with the volume as each names it; it is copied
    /// through the first of them that runs.
    pub from: Vec<(usize, PodVolume)>,
    /// Every pod of the group that mounts it.
    pub mounted_by: Vec<usize>,
}

fn claims_of(pod: &Item) -> Vec<String> {
    let volumes = pod.object.pointer("/spec/volumes").and_then(Value::as_array);
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Groups pods by the claims they share (see [`PodGroup`]); groups come in the order of their
/// first pod.
pub fn groups(pods: &[(Item, VolumeSelection)]) -> Vec<PodGroup> {
    // Union-find over pods, joined through (namespace, claim).
    let mut parent: Vec<usize> = (0..pods.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with_claim: BTreeMap<(String, String), usize> = BTreeMap::new();
    let claims: Vec<Vec<String>> = pods.iter().map(|(p, _)| claims_of(p)).collect();
    for (i, (pod, _)) in pods.iter().enumerate() {
        let ns = pod.namespace.clone().unwrap_or_default();
        for claim in &claims[i] {
            match first_with_claim.get(&(ns.clone(), claim.clone())) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_with_claim.insert((ns.clone(), claim.clone()), i);
                }
            }
        }
    }
    let mut by_root: BTreeMap<usize, PodGroup> = BTreeMap::new();
    for i in 0..pods.len() {
        let r = root(&mut parent, i);
        by_root.entry(r).or_insert_with(|| PodGroup { pods: Vec::new(), volumes: Vec::new() }).pods.push(i);
    }
    let mut out: Vec<PodGroup> = by_root.into_values().collect();
    for group in &mut out {
        let mut volumes: BTreeMap<String, GroupVolume> = BTreeMap::new();
        let mut order = Vec::new();
        for &i in &group.pods {
            for v in &pods[i].1.backup {
                let key = match &v.claim {
                    Some(c) => format!("claim {c}"),
                    None => format!("pod {}/{}", pods[i].0.name, v.name),
                };
                let entry = volumes.entry(key.clone()).or_insert_with(|| {
                    order.push(key.clone());
                    let mounted_by = match &v.claim {
                        Some(c) => group.pods.iter().copied().filter(|&j| claims[j].contains(c)).collect(),
                        None => vec![i],
                    };
                    GroupVolume { from: Vec::new(), mounted_by }
                });
                entry.from.push((i, v.clone()));
            }
        }
        group.volumes = order.iter().filter_map(|k| volumes.remove(k)).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ItemBuilder;
    use serde_json::json;

    fn pod(annotations: &[(&str, &str)]) -> Item {
        let mut b = ItemBuilder::pod("app", "web-0")
            .pvc_volume("data", "data-web-0")
            .set("/spec/volumes/-", json!({"name": "cache", "emptyDir": {}}))
            .set("/spec/volumes/-", json!({"name": "token", "projected": {"sources": []}}))
            .set("/spec/volumes/-", json!({"name": "host", "hostPath": {"path": "/var/log"}}))
            .set("/spec/volumes/-", json!({"name": "conf", "configMap": {"name": "c"}}));
        for (k, v) in annotations {
            b = b.annotate(k, v);
        }
        b.build()
    }

    fn names(sel: &VolumeSelection) -> Vec<&str> {
        sel.backup.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn opt_in_takes_only_the_named_volumes() {
        let sel = select(&pod(&[("backup.stowage.io/backup-volumes", "data,host,missing")]), false);
        assert_eq!(names(&sel), vec!["data"]);
        assert_eq!(sel.backup[0].claim.as_deref(), Some("data-web-0"));
        let skipped: Vec<&str> = sel.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, vec!["host", "missing"]);
        assert!(sel.skipped[0].1.contains("hostPath"));
        assert!(select(&pod(&[]), false).backup.is_empty(), "nothing without the annotation");
    }

    #[test]
    fn velero_annotation_keys_work_too() {
        let sel = select(&pod(&[("backup.velero.io/backup-volumes", "cache")]), false);
        assert_eq!(names(&sel), vec!["cache"]);
    }

    #[test]
    fn opt_out_takes_everything_copyable_but_the_excluded() {
        let sel = select(&pod(&[("backup.stowage.io/backup-volumes-excludes", "cache")]), true);
        assert_eq!(names(&sel), vec!["data"]);
        assert!(sel.skipped.is_empty(), "unrequested system volumes are skipped silently: {:?}", sel.skipped);
        assert_eq!(names(&select(&pod(&[]), true)), vec!["data", "cache"]);
    }

    #[test]
    fn a_claim_shared_by_two_pods_is_backed_up_once() {
        let a = ItemBuilder::pod("app", "a").pvc_volume("data", "shared").annotate("backup.stowage.io/backup-volumes", "data").build();
        let b = ItemBuilder::pod("app", "b").pvc_volume("data", "shared").annotate("backup.stowage.io/backup-volumes", "data").build();
        let (sa, sb) = (select(&a, false), select(&b, false));
        let all = dedupe([(&a, &sa), (&b, &sb)]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[&("app".to_string(), "shared".to_string())].0.name, "a");
    }

    #[test]
    fn pods_sharing_a_claim_are_one_group_and_their_claim_is_copied_once() {
        let with = |name: &str, claim: &str, opted: bool| {
            let mut b = ItemBuilder::pod("app", name).pvc_volume("data", claim);
            if opted {
                b = b.annotate("backup.stowage.io/backup-volumes", "data");
            }
            b.build()
        };
        let pods: Vec<(Item, VolumeSelection)> = [with("a", "shared", false), with("b", "own", true), with("c", "shared", true), with("d", "shared", true)]
            .into_iter()
            .map(|p| {
                let sel = select(&p, false);
                (p, sel)
            })
            .collect();
        let g = groups(&pods);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].pods, vec![0, 2, 3], "a, c and d share the claim");
        assert_eq!(g[0].volumes.len(), 1, "the shared claim once");
        assert_eq!(g[0].volumes[0].mounted_by, vec![0, 2, 3]);
        assert_eq!(g[0].volumes[0].from.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2, 3], "a did not opt in");
        assert_eq!(g[1].pods, vec![1]);
        assert_eq!(g[1].volumes[0].from[0].1.claim.as_deref(), Some("own"));
        let other_ns = ItemBuilder::pod("other", "e").pvc_volume("data", "shared").build();
        let sel = select(&other_ns, false);
        assert_eq!(groups(&[pods[0].clone(), (other_ns, sel)]).len(), 2, "a claim name is per namespace");
    }
}

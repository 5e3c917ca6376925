//! The objects an included object pulls in: Velero's built-in backup item actions. A pod
//! needs its claims and its service account, a bound claim needs its volume, a custom resource
//! needs its definition. This stage only names them; the controller fetches them (or, on
//! restore, looks them up in the archive) and passes each through
//! [`ResourceSelection::includes_related`](crate::selection::ResourceSelection::includes_related).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::item::{is_built_in_group, GroupResource, Item, ItemRef};

/// Why an object is pulled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Relation {
    /// One of the pod's volumes is this claim.
    PodVolumeClaim,
    /// The pod runs as this service account.
    PodServiceAccount,
    /// The claim is bound to this volume.
    BoundVolume,
    /// The custom resource's definition.
    Definition,
}

/// An object to fetch along with the one that names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Related {
    pub target: ItemRef,
    pub relation: Relation,
}

impl Related {
    /// Whether a missing target is expected. Types of a non-built-in group are usually
    /// CRDs, but an aggregated API (metrics, custom API servers) has no definition to fetch.
    pub fn may_be_absent(&self) -> bool {
        self.relation == Relation::Definition
    }
}

/// The objects `item` pulls in, each once, in a stable order.
pub fn related(item: &Item) -> Vec<Related> {
    let mut found = BTreeSet::new();
    if item.is("", "pods") {
        found.extend(pod_claims(item).map(|r| Related { target: r, relation: Relation::PodVolumeClaim }));
        found.extend(pod_service_account(item).map(|r| Related { target: r, relation: Relation::PodServiceAccount }));
    }
    if item.is("", "persistentvolumeclaims") {
        found.extend(bound_volume(item).map(|r| Related { target: r, relation: Relation::BoundVolume }));
    }
    if !is_built_in_group(&item.group) {
        let crd = ItemRef::cluster(crds(), &item.group_resource().to_string());
        found.insert(Related { target: crd, relation: Relation::Definition });
    }
    found.into_iter().collect()
}

fn crds() -> GroupResource {
    GroupResource::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn pod_claims(pod: &Item) -> impl Iterator<Item = ItemRef> + '_ {
    let volumes = pod.object.pointer("/spec/volumes").and_then(Value::as_array);
    volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
        .filter(|claim| !claim.is_empty())
        .filter_map(|claim| {
            Some(ItemRef::namespaced(GroupResource::core("persistentvolumeclaims"), pod.namespace.as_deref()?, claim))
        })
}

fn pod_service_account(pod: &Item) -> Option<ItemRef> {
    let spec = pod.object.get("spec")?;
    // `serviceAccount` is the deprecated spelling older manifests still carry.
    let name = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|field| spec.get(*field)?.as_str().filter(|s| !s.is_empty()))?;
    Some(ItemRef::namespaced(GroupResource::core("serviceaccounts"), pod.namespace.as_deref()?, name))
}

fn bound_volume(claim: &Item) -> Option<ItemRef> {
    let volume = claim.object.pointer("/spec/volumeName")?.as_str().filter(|s| !s.is_empty())?;
    Some(ItemRef::cluster(GroupResource::core("persistentvolumes"), volume))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::ItemBuilder;

    fn targets(item: &Item) -> Vec<String> {
        related(item).iter().map(|r| r.target.to_string()).collect()
    }

    #[test]
    fn a_pod_pulls_in_its_claims_once_and_its_service_account() {
        let pod = ItemBuilder::pod("shop", "web-0")
            .pvc_volume("data", "data-web-0")
            .pvc_volume("data-again", "data-web-0")
            .set("/spec/volumes/-", serde_json::json!({"name": "tmp", "emptyDir": {}}))
            .service_account("web")
            .build();
        assert_eq!(targets(&pod), vec!["persistentvolumeclaims shop/data-web-0", "serviceaccounts shop/web"]);
        assert_eq!(related(&pod)[0].relation, Relation::PodVolumeClaim);
    }

    #[test]
    fn the_deprecated_service_account_field_is_read() {
        let pod = ItemBuilder::pod("shop", "old").set("/spec/serviceAccount", "legacy".into()).build();
        assert_eq!(targets(&pod), vec!["serviceaccounts shop/legacy"]);
    }

    #[test]
    fn a_bound_claim_pulls_in_its_volume() {
        let bound = ItemBuilder::pvc("shop", "data").volume_name("pvc-123").build();
        assert_eq!(targets(&bound), vec!["persistentvolumes pvc-123"]);
        assert!(related(&ItemBuilder::pvc("shop", "pending").build()).is_empty());
    }

    #[test]
    fn a_custom_resource_pulls_in_its_definition() {
        let widget = ItemBuilder::widget("shop", "w").build();
        let found = related(&widget);
        assert_eq!(targets(&widget), vec!["customresourcedefinitions.apiextensions.k8s.io widgets.example.com"]);
        assert!(found[0].may_be_absent());
        assert!(related(&ItemBuilder::deployment("shop", "web").build()).is_empty(), "built-in types have no CRD");
    }
}

//! What the cluster serves: every listable resource in its group's preferred version, with the
//! short names the filters accept.

use kube::discovery::ApiResource;
use stowage_pipeline::ApiResourceInfo;

/// A discovered resource type: the pipeline's view and the client's.
#[derive(Clone, Debug)]
pub struct Discovered {
    pub info: ApiResourceInfo,
    pub api: ApiResource,
}

fn from_list(group: &str, version: &str, list: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList) -> Vec<Discovered> {
    list.resources
        .iter()
        .filter(|r| !r.name.contains('/') && r.verbs.iter().any(|v| v == "list"))
        .map(|r| {
            let mut info = ApiResourceInfo::new(group, version, &r.name, &r.kind, r.namespaced);
            info.short_names = r.short_names.clone().unwrap_or_default();
            let api_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
            let api = ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version,
                kind: r.kind.clone(),
                plural: r.name.clone(),
            };
            Discovered { info, api }
        })
        .collect()
}

pub async fn discover(client: &kube::Client) -> anyhow::Result<Vec<Discovered>> {
    let mut out = Vec::new();
    let core = client.list_core_api_versions().await?;
    for v in &core.versions {
        out.extend(from_list("", v, &client.list_core_api_resources(v).await?));
    }
    for group in client.list_api_groups().await?.groups {
        let Some(preferred) = group.preferred_version.clone().or_else(|| group.versions.first().cloned()) else {
            continue;
        };
        match client.list_api_group_resources(&preferred.group_version).await {
            Ok(list) => out.extend(from_list(&group.name, &preferred.version, &list)),
            // An aggregated API that is down must not stop a backup of everything else.
            Err(e) => tracing::warn!("discovery of {}: {e}", preferred.group_version),
        }
    }
    Ok(out)
}

/// The discovered type for a group and plural resource name.
pub fn find<'a>(all: &'a [Discovered], group: &str, plural: &str) -> Option<&'a Discovered> {
    all.iter().find(|d| d.info.group == group && d.info.plural == plural)
}

//! Jobs: run pods until `completions` have succeeded (at most `parallelism` at a time), or fail
//! the Job once more than `backoffLimit` pods failed. Pods and selector carry the
//! `batch.kubernetes.io/controller-uid` label, as a real cluster sets them.
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::pods::{controller_ref, controller_uid, create_if_absent, from_template, is_active, is_ready, phase, random_suffix};
use super::status::{conditions, patch_if_changed, Cond};
use super::{resync, Ctx, Error};

const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

pub fn spawn(ctx: Arc<Ctx>) -> tokio::task::JoinHandle<()> {
    let jobs: Api<Job> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(jobs, watcher::Config::default()).owns(pods, watcher::Config::default());
    super::run(controller, ctx, reconcile)
}

/// The labels a real API server puts on a Job's pod template (and, the first one, selector).
pub fn job_labels(job: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (UID_LABEL.to_string(), uid.to_string()),
        ("batch.kubernetes.io/job-name".to_string(), job.to_string()),
        ("controller-uid".to_string(), uid.to_string()),
        ("job-name".to_string(), job.to_string()),
    ])
}

fn finished(job: &Job) -> Option<&str> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True").map(|c| c.type_.as_str())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let labels = job_labels(&name, &uid);
    if spec.selector.is_none() && spec.manual_selector != Some(true) {
        let patch = json!({"spec": {"selector": {"matchLabels": {UID_LABEL: uid}},
                                    "template": {"metadata": {"labels": labels}}}});
        if let Err(e) = jobs.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            tracing::debug!(job = %name, "setting the job's selector: {e}");
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<Pod> = pods
        .list(&ListParams::default().labels(&format!("{UID_LABEL}={uid}")))
        .await?
        .items
        .into_iter()
        .filter(|p| controller_uid(&p.metadata) == Some(uid.as_str()))
        .collect();
    let count = |ph: &str| owned.iter().filter(|p| phase(p) == ph).count() as i32;
    let (succeeded, failed) = (count("Succeeded"), count("Failed"));
    let mut active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let completions = spec.completions.unwrap_or(1);
    let parallelism = spec.parallelism.unwrap_or(1);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);

    let outcome = match finished(&job) {
        Some(done) => Some(done == "Complete"),
        None if succeeded >= completions => Some(true),
        None if failed > backoff_limit => Some(false),
        None => None,
    };
    if outcome.is_some() || spec.suspend == Some(true) {
        for p in active.drain(..) {
            let _ = pods.delete(&p.name_any(), &DeleteParams::background()).await;
        }
    } else {
        let want = parallelism.min(completions - succeeded).max(0) as usize;
        let owner = controller_ref(job.as_ref())?;
        for _ in active.len()..want {
            let pod_name = format!("{name}-{}", random_suffix());
            create_if_absent(&pods, &from_template(&spec.template, &ns, &pod_name, owner.clone(), labels.clone())).await?;
            tracing::debug!(job = %name, pod = %pod_name, "created pod");
        }
    }

    let existing = serde_json::to_value(job.status.as_ref().and_then(|s| s.conditions.clone())).unwrap_or_default();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let started = job.status.as_ref().and_then(|s| s.start_time.clone()).map(|t| json!(t)).unwrap_or(json!(now));
    let mut status = json!({
        "startTime": started,
        "active": active.len(),
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "terminating": 0,
    });
    match outcome {
        Some(true) => {
            let msg = "Reached expected number of succeeded pods";
            status["conditions"] = conditions(
                &existing,
                &[
                    Cond { kind: "SuccessCriteriaMet", status: true, reason: "CompletionsReached", message: msg },
                    Cond { kind: "Complete", status: true, reason: "CompletionsReached", message: msg },
                ],
                false,
            );
            let done = job.status.as_ref().and_then(|s| s.completion_time.clone()).map(|t| json!(t)).unwrap_or(json!(now));
            status["completionTime"] = done;
        }
        Some(false) => {
            let msg = "Job has reached the specified backoff limit";
            status["conditions"] = conditions(
                &existing,
                &[
                    Cond { kind: "FailureTarget", status: true, reason: "BackoffLimitExceeded", message: msg },
                    Cond { kind: "Failed", status: true, reason: "BackoffLimitExceeded", message: msg },
                ],
                false,
            );
        }
        None => {}
    }
    patch_if_changed(&jobs, &job, status).await?;
    Ok(resync())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_a_real_cluster() {
        let l = job_labels("backup", "u1");
        assert_eq!(l["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(l["controller-uid"], "u1");
        assert_eq!(l["batch.kubernetes.io/job-name"], "backup");
        assert_eq!(l["job-name"], "backup");
    }
}

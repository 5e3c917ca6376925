//! One exec hook: checked against the pod, run through `pods/exec`, recorded and logged.

use std::sync::LazyLock;
use std::time::Instant;

use kube::Client;
use regex::Regex;
use serde_json::Value;
use stowage_api::hooks::{HookErrorMode, HookRun};
use stowage_pipeline::hooks::{ExecHookPlan, HookPhase};

use super::{container_state, millis, ContainerState, Ledger, PodRef};
use crate::podexec::{self, ExecError};

/// How a hook ended, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    Succeeded,
    /// Not run: the container does not run. A warning, never an error (velero#5137).
    Skipped(String),
    /// Ran and failed (or could not be started); `fatal` when its `onError` is Fail.
    Failed { message: String, fatal: bool },
}

/// Command-line words that hold a secret: `PASSWORD=...`, `--password=...`, `-p...` after a
/// MySQL client.
static SECRET_ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b([A-Z0-9_.-]*(?:PASS|PWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY)[A-Z0-9_.-]*)=(\S+)").unwrap()
});
static MYSQL_PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"((?:^|\s)(?:mysql|mysqldump|mariadb|mariadb-dump|mysqladmin)\b.*?\s-p)(\S+)").unwrap());

/// The command as logged: values of what looks like a secret are masked. Passwords belong in
/// the container's environment, not in the hook's command; this is a safety net.
pub fn redact(command: &[String]) -> String {
    let mut mysql = false;
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            let masked = SECRET_ASSIGNMENT.replace_all(w, "$1=***");
            let masked = MYSQL_PASSWORD.replace_all(&masked, "$1***").into_owned();
            let client = w.rsplit('/').next().unwrap_or_default();
            let out = match mysql && w.starts_with("-p") && w.len() > 2 {
                true => "-p***".to_string(),
                false => masked,
            };
            mysql |= MYSQL_CLIENTS.contains(&client);
            out
        })
        .collect();
    serde_json::to_string(&words).unwrap_or_default()
}

const MYSQL_CLIENTS: [&str; 5] = ["mysql", "mysqldump", "mariadb", "mariadb-dump", "mysqladmin"];

/// Runs one exec hook in `pod` (as the API server sees it now) and records it in `ledger`.
pub async fn run_exec(client: &Client, pod: &Value, plan: &ExecHookPlan, phase: HookPhase, ledger: &Ledger) -> HookOutcome {
    let who = PodRef::of(pod);
    let what = format!("{} hook ({}) in pod {who} container {:?}", phase.as_str(), plan.source, plan.container);
    match container_state(pod, &plan.container) {
        ContainerState::Running | ContainerState::Ready => {}
        state => {
            let why = match state {
                ContainerState::PodNotRunning => "the pod is not Running".to_string(),
                ContainerState::Missing => "the pod has no such container".to_string(),
                _ => "the container is not running".to_string(),
            };
            let message = format!("{what} not run: {why}");
            ledger.log().warn(&message);
            return HookOutcome::Skipped(message);
        }
    }
    ledger.log().info(format!("{what}: running {} (timeout {}s)", redact(&plan.command), plan.timeout.as_secs()));
    let started = Instant::now();
    let result = podexec::exec(client, &who.namespace, &who.name, &plan.container, &plan.command, plan.timeout).await;
    let took = started.elapsed();
    let mut run = HookRun {
        pod: who.to_string(),
        container: plan.container.clone(),
        phase: phase.as_str().to_string(),
        hook: plan.source.clone(),
        duration_millis: millis(took),
        ..Default::default()
    };
    let failure = match &result {
        Ok(out) => {
            run.exit_code = Some(out.exit_code);
            for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                if !text.trim().is_empty() {
                    ledger.log().info(format!("{what} {name}: {}", podexec::tail(text, 20)));
                }
            }
            (out.exit_code != 0).then(|| {
                let stderr = podexec::tail(&out.stderr, 5);
                match stderr.is_empty() {
                    true => format!("exit code {}", out.exit_code),
                    false => format!("exit code {}: {stderr}", out.exit_code),
                }
            })
        }
        // Closing the connection is all an exec client can do; the container's runtime may let
        // the command run on.
        Err(ExecError::TimedOut(_)) => Some(format!("{}; no longer waited for", result.as_ref().unwrap_err())),
        Err(e @ ExecError::ConnectionLost(_)) => Some(e.to_string()),
        Err(e) => Some(format!("could not be run: {e}")),
    };
    run.error = failure.clone();
    ledger.record(run);
    match failure {
        None => {
            ledger.log().info(format!("{what}: done in {:.1}s", took.as_secs_f64()));
            HookOutcome::Succeeded
        }
        Some(why) => {
            let fatal = plan.on_error == HookErrorMode::Fail;
            let message = match fatal {
                true => format!("{what} failed: {why}"),
                false => format!("{what} failed (onError: Continue): {why}"),
            };
            match fatal {
                true => ledger.log().error(&message),
                false => ledger.log().warn(&message),
            }
            HookOutcome::Failed { message, fatal }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secrets_in_commands_are_masked_in_logs() {
        assert_eq!(
            redact(&words(&["/bin/sh", "-c", "MYSQL_PWD=hunter2 mysqldump --all-databases > /data/dump.sql"])),
            r#"["/bin/sh","-c","MYSQL_PWD=*** mysqldump --all-databases > /data/dump.sql"]"#
        );
        assert_eq!(redact(&words(&["pg_dump", "--password=s3cret", "db"])), r#"["pg_dump","--password=***","db"]"#);
        assert_eq!(redact(&words(&["sh", "-c", "mysqldump -u root -ps3cret shop"])), r#"["sh","-c","mysqldump -u root -p*** shop"]"#);
        assert_eq!(redact(&words(&["mysqldump", "-u", "root", "-ps3cret"])), r#"["mysqldump","-u","root","-p***"]"#);
        assert_eq!(redact(&words(&["fsfreeze", "--freeze", "/data"])), r#"["fsfreeze","--freeze","/data"]"#);
        assert_eq!(redact(&words(&["env", "API_TOKEN=abc", "PATH=/bin"])), r#"["env","API_TOKEN=***","PATH=/bin"]"#);
    }

    #[test]
    fn hooks_run_only_in_running_containers() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "db"}, {"name": "idle"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "db", "ready": true, "state": {"running": {}}},
                {"name": "idle", "ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(container_state(&pod, "db"), ContainerState::Ready);
        assert_eq!(container_state(&pod, "idle"), ContainerState::NotRunning);
        assert_eq!(container_state(&pod, "nope"), ContainerState::Missing);
        let mut pending = pod.clone();
        pending["status"]["phase"] = "Pending".into();
        assert_eq!(container_state(&pending, "db"), ContainerState::PodNotRunning);
    }
}

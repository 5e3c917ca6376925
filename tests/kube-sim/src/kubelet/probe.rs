//! Readiness probes: a container that has one is not ready until its probe has succeeded
//! `successThreshold` times in a row, and is unready again after `failureThreshold` failures
//! in a row. An `exec` probe runs its command as a local process in the container's stand-in
//! directory, as `pods/exec` does with [`ExecFallback::RunLocal`](crate::ExecFallback).
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::exec::{run_local, ExecRequest};

/// What a probe checks.
#[derive(Clone, Debug, PartialEq)]
enum Check {
    /// A command run locally; exit code 0 is a success.
    Exec(Vec<String>),
    /// There is no network behind the simulated pods: `httpGet`, `tcpSocket` and `grpc` probes
    /// always succeed (once `initialDelaySeconds` has passed).
    Passes,
}

/// A container's readiness probe, with the Kubernetes defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Readiness {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    check: Check,
}

impl Readiness {
    pub fn from_probe(p: &Probe) -> Readiness {
        let secs = |v: Option<i32>, default: u64, min: u64| Duration::from_secs(v.map_or(default, |s| (s.max(0) as u64).max(min)));
        let count = |v: Option<i32>, default: u32| v.map_or(default, |n| n.max(1) as u32);
        let check = match &p.exec {
            Some(e) => Check::Exec(e.command.clone().unwrap_or_default()),
            None => Check::Passes,
        };
        Readiness {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
            check,
        }
    }

    /// One probe: true on success. `target` says where an exec probe runs.
    async fn probe(&self, target: &ExecRequest) -> bool {
        match &self.check {
            Check::Passes => true,
            Check::Exec(command) if command.is_empty() => false,
            Check::Exec(command) => {
                let req = ExecRequest { command: command.clone(), stdin: Vec::new(), ..target.clone() };
                matches!(run_local(&req, self.timeout).await, Ok(out) if out.exit_code == 0)
            }
        }
    }
}

/// Probes forever, sending each change of readiness (starting from unready) as
/// `(container, generation, ready)`. Cancel it by dropping (aborting) the task: a probe
/// command still running is then killed with its process group.
pub async fn run(
    probe: Readiness,
    target: ExecRequest,
    container: usize,
    generation: u32,
    report: mpsc::UnboundedSender<(usize, u32, bool)>,
) {
    tokio::time::sleep(probe.initial_delay).await;
    let mut ticks = tokio::time::interval(probe.period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut ready, mut successes, mut failures) = (false, 0u32, 0u32);
    loop {
        ticks.tick().await;
        if probe.probe(&target).await {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let now = if ready { failures < probe.failure_threshold } else { successes >= probe.success_threshold };
        if now != ready {
            ready = now;
            if report.send((container, generation, ready)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ExecAction;

    #[test]
    fn defaults_follow_kubernetes() {
        let p = Probe { exec: Some(ExecAction { command: Some(vec!["true".into()]) }), ..Default::default() };
        let r = Readiness::from_probe(&p);
        assert_eq!((r.initial_delay, r.period, r.timeout), (Duration::ZERO, Duration::from_secs(10), Duration::from_secs(1)));
        assert_eq!((r.success_threshold, r.failure_threshold), (1, 3));
        assert_eq!(Readiness::from_probe(&Probe::default()).check, Check::Passes);
    }

    #[tokio::test]
    async fn turns_ready_after_successes_and_unready_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        let target = ExecRequest {
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            command: vec![],
            stdin: vec![],
            rootfs: dir.path().to_path_buf(),
            env: vec![],
        };
        let p = Probe {
            exec: Some(ExecAction { command: Some(vec!["test".into(), "-f".into(), "ready".into()]) }),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let mut r = Readiness::from_probe(&p);
        r.period = Duration::from_millis(50);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(r, target, 3, 7, tx));
        async fn next(rx: &mut mpsc::UnboundedReceiver<(usize, u32, bool)>) -> (usize, u32, bool) {
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "not ready without the file");
        std::fs::write(dir.path().join("ready"), "").unwrap();
        assert_eq!(next(&mut rx).await, (3, 7, true));
        std::fs::remove_file(dir.path().join("ready")).unwrap();
        assert_eq!(next(&mut rx).await, (3, 7, false));
        task.abort();
    }
}

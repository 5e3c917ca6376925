//! The kubelet's view of one pod, rendered as the `status` a real kubelet reports.
use std::time::SystemTime;

use serde_json::{json, Map, Value};

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated(Terminated),
}

#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    /// Whether the container has a readiness probe; without one it is ready while running.
    pub probed: bool,
    /// What its readiness probe last concluded (false until it first succeeds).
    pub probe_ready: bool,
}

impl Container {
    pub fn waiting(name: &str, image: &str, reason: &str) -> Container {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting { reason: reason.into(), message: None },
            last_terminated: None,
            restart_count: 0,
            probed: false,
            probe_ready: false,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Running, and its readiness probe (if any) says ready.
    pub fn is_ready(&self) -> bool {
        self.is_running() && (!self.probed || self.probe_ready)
    }

    pub fn exit_code(&self) -> Option<i32> {
        match &self.state {
            State::Terminated(t) => Some(t.exit_code),
            _ => None,
        }
    }

    /// Records an exit; a container that will be restarted keeps it as `lastState`.
    pub fn exited(&mut self, t: Terminated, restarting: bool) {
        self.probe_ready = false;
        if restarting {
            self.last_terminated = Some(t);
            self.restart_count += 1;
            self.state = State::Waiting { reason: "CrashLoopBackOff".into(), message: None };
        } else {
            self.state = State::Terminated(t);
        }
    }

    fn to_json(&self, pod_uid: &str, init: bool) -> Value {
        let state = |s: &State| match s {
            State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({"terminated": terminated_json(t)}),
        };
        let running = self.is_running();
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("kube-sim://{}", self.image),
            "containerID": format!("kube-sim://{pod_uid}/{}", self.name),
            "state": state(&self.state),
            "lastState": self.last_terminated.as_ref().map(|t| json!({"terminated": terminated_json(t)})).unwrap_or(json!({})),
            "ready": if init { matches!(self.exit_code(), Some(0)) } else { self.is_ready() },
            "restartCount": self.restart_count,
        });
        if !init || running {
            v["started"] = json!(running);
        }
        v
    }
}

fn terminated_json(t: &Terminated) -> Value {
    json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "message": t.message,
        "startedAt": t.started_at,
        "finishedAt": t.finished_at,
        "containerID": Value::Null,
    })
}

#[derive(Clone, Debug)]
struct Condition {
    kind: &'static str,
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    since: String,
}

/// Everything the kubelet reports for a pod; `render` gives the whole `status`.
#[derive(Clone, Debug)]
pub struct PodView {
    pub uid: String,
    pub phase: &'static str,
    pub init: Vec<Container>,
    pub main: Vec<Container>,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: String,
    /// Why the pod cannot start yet (a volume that is not ready), shown as a condition.
    pub blocked: Option<(String, String)>,
    conditions: Vec<Condition>,
}

const CONDITIONS: [&str; 5] = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

impl PodView {
    pub fn new(uid: &str, init: Vec<Container>, main: Vec<Container>, pod_ip: String, host_ip: String) -> PodView {
        let since = now();
        let conditions = CONDITIONS
            .iter()
            .map(|k| Condition { kind: k, status: *k == "PodScheduled", reason: None, message: None, since: since.clone() })
            .collect();
        PodView {
            uid: uid.into(),
            phase: "Pending",
            init,
            main,
            pod_ip,
            host_ip,
            start_time: since,
            blocked: None,
            conditions,
        }
    }

    /// All init containers completed successfully.
    pub fn initialized(&self) -> bool {
        self.init.iter().all(|c| c.exit_code() == Some(0))
    }

    fn set(&mut self, kind: &str, status: bool, reason: Option<&str>, message: Option<String>) {
        if let Some(c) = self.conditions.iter_mut().find(|c| c.kind == kind) {
            if c.status != status {
                c.since = now();
            }
            c.status = status;
            c.reason = reason.map(String::from);
            c.message = message;
        }
    }

    /// Derives the conditions from the container states, as the kubelet's status manager does.
    fn refresh_conditions(&mut self) {
        let blocked = self.blocked.clone();
        match &blocked {
            Some((reason, message)) => self.set("PodReadyToStartContainers", false, Some(reason), Some(message.clone())),
            None => self.set("PodReadyToStartContainers", true, None, None),
        }
        let initialized = self.initialized();
        let pending: Vec<&str> = self.init.iter().filter(|c| c.exit_code() != Some(0)).map(|c| c.name.as_str()).collect();
        let msg = format!("containers with incomplete status: [{}]", pending.join(" "));
        if initialized {
            self.set("Initialized", true, None, None);
        } else {
            self.set("Initialized", false, Some("ContainersNotInitialized"), Some(msg));
        }
        let done = matches!(self.phase, "Succeeded" | "Failed");
        let unready: Vec<&str> = self.main.iter().filter(|c| !c.is_ready()).map(|c| c.name.as_str()).collect();
        let (ready, reason, message) = if done {
            (false, Some("PodCompleted"), None)
        } else if unready.is_empty() && initialized {
            (true, None, None)
        } else {
            (false, Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
        };
        self.set("ContainersReady", ready, reason, message.clone());
        self.set("Ready", ready, reason, message);
    }

    pub fn render(&mut self) -> Value {
        self.refresh_conditions();
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|c| {
                let mut v = Map::new();
                v.insert("type".into(), json!(c.kind));
                v.insert("status".into(), json!(if c.status { "True" } else { "False" }));
                v.insert("lastProbeTime".into(), Value::Null);
                v.insert("lastTransitionTime".into(), json!(c.since));
                v.insert("reason".into(), json!(c.reason));
                v.insert("message".into(), json!(c.message));
                Value::Object(v)
            })
            .collect();
        json!({
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "initContainerStatuses": self.init.iter().map(|c| c.to_json(&self.uid, true)).collect::<Vec<_>>(),
            "containerStatuses": self.main.iter().map(|c| c.to_json(&self.uid, false)).collect::<Vec<_>>(),
        })
    }
}

/// A stable fake pod IP in 10.244.0.0/16, derived from the pod's uid.
pub fn pod_ip(uid: &str) -> String {
    let h = uid.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("10.244.{}.{}", (h >> 8) & 0xff, (h & 0xfd).max(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn term(code: i32) -> Terminated {
        Terminated { exit_code: code, reason: "Completed".into(), message: String::new(), started_at: now(), finished_at: now() }
    }

    fn condition(status: &PodStatus, kind: &str) -> String {
        status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == kind).unwrap().status.clone()
    }

    #[test]
    fn renders_a_status_kube_rs_can_read() {
        let mut view = PodView::new(
            "u",
            vec![Container::waiting("init", "busybox", "PodInitializing")],
            vec![Container::waiting("app", "nginx", "PodInitializing")],
            pod_ip("u"),
            "172.18.0.2".into(),
        );
        let s: PodStatus = serde_json::from_value(view.render()).unwrap();
        assert_eq!(condition(&s, "Initialized"), "False");
        assert_eq!(condition(&s, "Ready"), "False");

        view.init[0].exited(term(0), false);
        view.main[0].state = State::Running { started_at: now() };
        view.phase = "Running";
        let s: PodStatus = serde_json::from_value(view.render()).unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&s, "Initialized"), "True");
        assert_eq!(condition(&s, "Ready"), "True");
        let cs = &s.container_statuses.unwrap()[0];
        assert!(cs.ready && cs.started == Some(true) && cs.state.as_ref().unwrap().running.is_some());
        assert_eq!(s.init_container_statuses.unwrap()[0].state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
    }

    #[test]
    fn a_probed_container_is_ready_only_when_its_probe_says_so() {
        let mut view = PodView::new("u", vec![], vec![Container::waiting("app", "nginx", "ContainerCreating")], pod_ip("u"), "h".into());
        view.main[0].probed = true;
        view.main[0].state = State::Running { started_at: now() };
        view.phase = "Running";
        let s: PodStatus = serde_json::from_value(view.render()).unwrap();
        assert_eq!((condition(&s, "ContainersReady"), condition(&s, "Ready")), ("False".to_string(), "False".to_string()));
        assert!(!s.container_statuses.unwrap()[0].ready);
        view.main[0].probe_ready = true;
        let s: PodStatus = serde_json::from_value(view.render()).unwrap();
        assert_eq!((condition(&s, "ContainersReady"), condition(&s, "Ready")), ("True".to_string(), "True".to_string()));
        assert!(s.container_statuses.unwrap()[0].ready);
        view.main[0].exited(term(1), true);
        assert!(!view.main[0].probe_ready);
    }

    #[test]
    fn restarting_container_counts_and_keeps_last_state() {
        let mut c = Container::waiting("app", "img", "ContainerCreating");
        c.exited(term(1), true);
        assert_eq!(c.restart_count, 1);
        assert_eq!(c.last_terminated.as_ref().unwrap().exit_code, 1);
        assert!(c.exit_code().is_none());
    }

    #[test]
    fn pod_ips_are_stable_and_private() {
        assert_eq!(pod_ip("abc"), pod_ip("abc"));
        assert!(pod_ip("abc").starts_with("10.244."));
    }
}

//! `pods/exec` over WebSocket, as kube-rs (`Api::<Pod>::exec`) and `kubectl exec` speak it.
//!
//! There are no real containers, so a command is answered by a handler registered for the
//! (namespace, pod, container), or else by the [`ExecFallback`]: refuse, or run the command as a
//! local process in the container's stand-in directory.
mod local;
pub mod protocol;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::Value;

pub use local::run_local;
use protocol::{ExecParams, Incoming};

#[derive(Clone, Debug, Default)]
pub enum ExecFallback {
    /// Answer with an error: no handler for this container.
    #[default]
    Deny,
    /// Run the command as a local process in the container's stand-in filesystem directory,
    /// with the literal `env` values of the container's spec.
    RunLocal,
}

#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: Vec<u8>,
    /// The directory that stands for the container's filesystem.
    pub rootfs: PathBuf,
    /// The container's environment, as a runtime gives it to the commands exec'd into the
    /// container: here the literal `env` values of its spec (see [`literal_env`]).
    pub env: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl ExecOutput {
    pub fn stdout(data: impl Into<Vec<u8>>) -> ExecOutput {
        ExecOutput { stdout: data.into(), ..Default::default() }
    }

    pub fn failure(exit_code: i32, stderr: impl Into<Vec<u8>>) -> ExecOutput {
        ExecOutput { stderr: stderr.into(), exit_code, ..Default::default() }
    }
}

type BoxedHandler = Arc<dyn Fn(ExecRequest) -> Pin<Box<dyn Future<Output = ExecOutput> + Send>> + Send + Sync>;

/// Which execs a handler answers; `"*"` matches any namespace, pod or container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl ExecTarget {
    pub fn new(namespace: &str, pod: &str, container: &str) -> ExecTarget {
        ExecTarget { namespace: namespace.into(), pod: pod.into(), container: container.into() }
    }

    /// None when it does not match; otherwise higher is more specific (pod, then container,
    /// then namespace).
    fn specificity(&self, req: &ExecRequest) -> Option<u8> {
        let part = |pattern: &str, value: &str, weight: u8| match pattern {
            "*" => Some(0),
            p if p == value => Some(weight),
            _ => None,
        };
        Some(part(&self.pod, &req.pod, 4)? + part(&self.container, &req.container, 2)? + part(&self.namespace, &req.namespace, 1)?)
    }
}

struct Registered {
    target: ExecTarget,
    handler: BoxedHandler,
}

struct Inner {
    fallback: ExecFallback,
    local_timeout: Duration,
    handlers: Vec<Registered>,
    history: Vec<ExecRequest>,
}

/// Exec handlers shared by the server and the tests (cheap to clone).
#[derive(Clone)]
pub struct ExecRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl Default for ExecRegistry {
    fn default() -> Self {
        ExecRegistry::new(ExecFallback::Deny)
    }
}

impl ExecRegistry {
    pub fn new(fallback: ExecFallback) -> Self {
        let inner =
            Inner { fallback, local_timeout: crate::DEFAULT_EXEC_LOCAL_TIMEOUT, handlers: Vec::new(), history: Vec::new() };
        ExecRegistry { inner: Arc::new(Mutex::new(inner)) }
    }

    pub fn fallback(&self) -> ExecFallback {
        self.inner.lock().unwrap().fallback.clone()
    }

    pub fn set_fallback(&self, fallback: ExecFallback) {
        self.inner.lock().unwrap().fallback = fallback;
    }

    /// How long a locally run command may take before it is killed (exit code 137); set from
    /// [`crate::SimConfig::exec_local_timeout`] when the simulator starts.
    pub fn set_local_timeout(&self, timeout: Duration) {
        self.inner.lock().unwrap().local_timeout = timeout;
    }

    pub fn local_timeout(&self) -> Duration {
        self.inner.lock().unwrap().local_timeout
    }

    /// Answers execs into `namespace`/`pod`/`container` (each may be `"*"`) with `handler`.
    /// The most specific registration wins; registering the same target again replaces it.
    pub fn register<F, Fut>(&self, namespace: &str, pod: &str, container: &str, handler: F)
    where
        F: Fn(ExecRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ExecOutput> + Send + 'static,
    {
        let target = ExecTarget::new(namespace, pod, container);
        let handler: BoxedHandler = Arc::new(move |req| Box::pin(handler(req)));
        let mut inner = self.inner.lock().unwrap();
        inner.handlers.retain(|r| r.target != target);
        inner.handlers.push(Registered { target, handler });
    }

    /// Runs execs into that container as local processes in its rootfs, whatever the fallback.
    pub fn register_local(&self, namespace: &str, pod: &str, container: &str) {
        let registry = self.clone();
        self.register(namespace, pod, container, move |req| {
            let timeout = registry.inner.lock().unwrap().local_timeout;
            async move { run_local(&req, timeout).await.unwrap_or_else(|e| ExecOutput::failure(126, e + "\n")) }
        });
    }

    /// Removes the registration for exactly this target; true if there was one.
    pub fn unregister(&self, namespace: &str, pod: &str, container: &str) -> bool {
        let target = ExecTarget::new(namespace, pod, container);
        let mut inner = self.inner.lock().unwrap();
        let before = inner.handlers.len();
        inner.handlers.retain(|r| r.target != target);
        inner.handlers.len() != before
    }

    /// Every exec received so far, oldest first (whether or not it was answered).
    pub fn history(&self) -> Vec<ExecRequest> {
        self.inner.lock().unwrap().history.clone()
    }

    /// Answers one exec: the handler's output, or Err with the message of a command that
    /// could not be run (no handler under `Deny`, or a local binary that failed to start).
    pub async fn execute(&self, req: ExecRequest) -> Result<ExecOutput, String> {
        let (handler, fallback, timeout) = {
            let mut inner = self.inner.lock().unwrap();
            inner.history.push(req.clone());
            let best = inner
                .handlers
                .iter()
                .rev()
                .filter_map(|r| r.target.specificity(&req).map(|s| (s, r)))
                .max_by_key(|(s, _)| *s)
                .map(|(_, r)| r.handler.clone());
            (best, inner.fallback.clone(), inner.local_timeout)
        };
        match (handler, fallback) {
            (Some(h), _) => Ok(h(req).await),
            (None, ExecFallback::RunLocal) => run_local(&req, timeout).await,
            (None, ExecFallback::Deny) => Err(format!(
                "kube-sim: no exec handler is registered for container {:?} of pod {}/{} (command {:?})",
                req.container, req.namespace, req.pod, req.command
            )),
        }
    }
}

/// Serves `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec` for the stored `pod`.
pub async fn respond(
    registry: ExecRegistry,
    kubelet_root: PathBuf,
    pod: Value,
    query: Vec<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    let params = ExecParams::from_query(&query);
    let req = match build_request(&kubelet_root, &pod, &params) {
        Ok(r) => r,
        Err(message) => {
            let body = protocol::http_status(400, "BadRequest", &message);
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    ws.protocols(protocol::PROTOCOLS)
        .on_upgrade(move |socket| session(socket, registry, req, params))
        .into_response()
}

fn build_request(kubelet_root: &Path, pod: &Value, params: &ExecParams) -> Result<ExecRequest, String> {
    let meta = &pod["metadata"];
    let name = meta["name"].as_str().unwrap_or_default().to_string();
    let container = resolve_container(pod, params.container.as_deref())?;
    if params.command.is_empty() {
        return Err("you must specify at least 1 command".to_string());
    }
    let uid = meta["uid"].as_str().unwrap_or_default().to_string();
    Ok(ExecRequest {
        namespace: meta["namespace"].as_str().unwrap_or_default().to_string(),
        rootfs: crate::kubelet::layout::container_rootfs(kubelet_root, &uid, &container),
        pod: name,
        pod_uid: uid,
        env: literal_env(pod, &container),
        container,
        command: params.command.clone(),
        stdin: Vec::new(),
    })
}

/// The `env` entries of the named container (regular, init or ephemeral) that have a literal
/// `value`, as written. Entries resolved from elsewhere (`valueFrom`: Secrets, ConfigMaps, the
/// downward API) and `envFrom` are left out: the kubelet resolves those for the container's
/// own process only.
pub fn literal_env(pod: &Value, container: &str) -> Vec<(String, String)> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| pod["spec"][field].as_array())
        .flatten()
        .find(|c| c["name"] == container)
        .and_then(|c| c["env"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|var| Some((var["name"].as_str()?.to_string(), var["value"].as_str()?.to_string())))
        .collect()
}

/// The named container (regular, init or ephemeral), or the first regular one.
pub fn resolve_container(pod: &Value, requested: Option<&str>) -> Result<String, String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let regular = names("containers");
    match requested {
        None => regular.first().cloned().ok_or_else(|| format!("pod {name} has no containers")),
        Some(c) => {
            let known = regular.iter().chain(&names("initContainers")).chain(&names("ephemeralContainers")).any(|n| n == c);
            if known {
                Ok(c.to_string())
            } else {
                Err(format!("container {c} is not valid for pod {name}"))
            }
        }
    }
}

async fn session(socket: WebSocket, registry: ExecRegistry, mut req: ExecRequest, params: ExecParams) {
    let (mut sink, mut stream) = socket.split();
    // The reader keeps draining the socket (answering pings, seeing the close) while the
    // command runs; it hands over stdin once the client has closed it.
    let (stdin_tx, stdin_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    let want_stdin = params.stdin;
    let reader = tokio::spawn(async move {
        let mut stdin = Vec::new();
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Binary(frame) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match protocol::decode(&frame) {
                Incoming::Stdin(data) => stdin.extend_from_slice(data),
                Incoming::Closed(protocol::STDIN) => {
                    if let Some(tx) = stdin_tx.take() {
                        let _ = tx.send(std::mem::take(&mut stdin));
                    }
                }
                _ => {}
            }
        }
        // A v4 client can only end stdin by closing the socket.
        if let Some(tx) = stdin_tx.take() {
            let _ = tx.send(stdin);
        }
    });
    // Only a command that asked for stdin waits for it (until the client closes it), and no
    // longer than the command itself may run.
    if want_stdin {
        req.stdin =
            tokio::time::timeout(registry.local_timeout(), stdin_rx).await.ok().and_then(Result::ok).unwrap_or_default();
    }
    tracing::debug!(pod = %req.pod, container = %req.container, command = ?req.command, "exec");
    // The command runs to its end (or the local cap) even when the client goes away, as a
    // container runtime's exec does; a client's close can also be a half-close that is only
    // told apart from leaving by waiting for the answer.
    let result = registry.execute(req).await;
    let status = match result {
        Ok(out) => {
            let mut frames = Vec::new();
            if params.stdout {
                frames.extend(protocol::frames(protocol::STDOUT, &out.stdout));
            }
            if params.stderr {
                frames.extend(protocol::frames(protocol::STDERR, &out.stderr));
            }
            for f in frames {
                if sink.send(Message::Binary(f.into())).await.is_err() {
                    reader.abort();
                    return;
                }
            }
            protocol::exit_status(out.exit_code)
        }
        Err(message) => protocol::error_status(&message),
    };
    let _ = sink.send(Message::Binary(protocol::status_frame(&status).into())).await;
    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    // Let the client answer the close so that it sees a clean end of stream.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(pod: &str, container: &str) -> ExecRequest {
        ExecRequest {
            namespace: "ns".into(),
            pod: pod.into(),
            pod_uid: "u".into(),
            container: container.into(),
            command: vec!["x".into()],
            stdin: vec![],
            rootfs: "/nonexistent".into(),
            env: vec![],
        }
    }

    #[tokio::test]
    async fn most_specific_handler_wins() {
        let r = ExecRegistry::new(ExecFallback::Deny);
        r.register("*", "*", "*", |_| async { ExecOutput::stdout("any") });
        r.register("ns", "*", "db", |_| async { ExecOutput::stdout("db") });
        r.register("ns", "p1", "*", |_| async { ExecOutput::stdout("p1") });
        r.register("ns", "p1", "db", |_| async { ExecOutput::stdout("p1/db") });
        let out = |p: &'static str, c: &'static str| {
            let r = r.clone();
            async move { String::from_utf8(r.execute(req(p, c)).await.unwrap().stdout).unwrap() }
        };
        assert_eq!(out("p1", "db").await, "p1/db");
        assert_eq!(out("p1", "web").await, "p1");
        assert_eq!(out("p2", "db").await, "db");
        assert_eq!(out("p2", "web").await, "any");
        assert!(r.unregister("*", "*", "*"));
        assert!(r.execute(req("p2", "web")).await.unwrap_err().contains("no exec handler"));
        assert_eq!(r.history().len(), 5);
    }

    #[test]
    fn exec_gets_the_containers_literal_env_values() {
        let pod = json!({"metadata": {"name": "p", "uid": "u", "namespace": "ns"}, "spec": {
            "containers": [
                {"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "EMPTY", "value": ""},
                    {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
                {"name": "side", "env": [{"name": "B", "value": "2"}]}],
            "initContainers": [{"name": "init", "env": [{"name": "C", "value": "3"}]}]}});
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(literal_env(&pod, "app"), [pair("A", "1"), pair("EMPTY", "")]);
        assert_eq!(literal_env(&pod, "init"), [pair("C", "3")]);
        assert!(literal_env(&pod, "nope").is_empty());
        let params = ExecParams { container: Some("side".into()), command: vec!["env".into()], ..Default::default() };
        let req = build_request(Path::new("/k"), &pod, &params).unwrap();
        assert_eq!(req.env, [pair("B", "2")]);
    }

    #[test]
    fn container_defaults_to_the_first_and_unknown_is_an_error() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "app"}, {"name": "side"}],
            "initContainers": [{"name": "init"}]}});
        assert_eq!(resolve_container(&pod, None).unwrap(), "app");
        assert_eq!(resolve_container(&pod, Some("init")).unwrap(), "init");
        assert_eq!(resolve_container(&pod, Some("nope")).unwrap_err(), "container nope is not valid for pod p");
    }
}

//! `pods/exec` as kube-rs and kubectl use it: registered handlers, the local-process fallback,
//! refusals, stdin, stdout/stderr and exit codes.
mod fixtures;

use std::process::Stdio;
use std::time::Duration;

use fixtures::{ContainerBuilder, PodSpecBuilder, Sim};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams};
use kube_sim::{ExecFallback, ExecOutput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Outcome {
    stdout: String,
    stderr: String,
    status: Status,
}

async fn exec(pods: &Api<Pod>, pod: &str, container: Option<&str>, command: &[&str], stdin: Option<&[u8]>) -> kube::Result<Outcome> {
    let mut ap = AttachParams::default().stdin(stdin.is_some()).stdout(true).stderr(true);
    if let Some(c) = container {
        ap = ap.container(c);
    }
    let mut attached = pods.exec(pod, command.to_vec(), &ap).await?;
    if let Some(data) = stdin {
        let mut w = attached.stdin().unwrap();
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
    }
    let mut out = attached.stdout().unwrap();
    let mut err = attached.stderr().unwrap();
    let status = attached.take_status().unwrap();
    let read_out = tokio::spawn(async move {
        let mut s = String::new();
        out.read_to_string(&mut s).await.unwrap();
        s
    });
    let read_err = tokio::spawn(async move {
        let mut s = String::new();
        err.read_to_string(&mut s).await.unwrap();
        s
    });
    let status = tokio::time::timeout(fixtures::WAIT, status).await.expect("exec finishes").expect("a status");
    Ok(Outcome { stdout: read_out.await.unwrap(), stderr: read_err.await.unwrap(), status })
}

fn exit_code(status: &Status) -> Option<String> {
    status.details.as_ref()?.causes.as_ref()?.iter().find(|c| c.reason.as_deref() == Some("ExitCode"))?.message.clone()
}

async fn two_container_pod(sim: &Sim, name: &str) -> Api<Pod> {
    let spec = PodSpecBuilder::default()
        .container(ContainerBuilder::new("app", "app:1"))
        .container(ContainerBuilder::new("db", "postgres:16"));
    let _: Pod = sim.create(spec.pod("default", name)).await;
    sim.api("default")
}

#[tokio::test]
async fn kube_rs_exec_reaches_the_most_specific_handler() {
    let sim = Sim::start().await;
    let pods = two_container_pod(&sim, "web").await;
    let registry = sim.sim.exec();
    registry.register("default", "*", "*", |_| async { ExecOutput::stdout("any") });
    registry.register("default", "web", "db", |req| async move {
        ExecOutput {
            stdout: format!("db ran {:?}\n", req.command).into_bytes(),
            stderr: b"a warning\n".to_vec(),
            exit_code: 0,
        }
    });
    let out = exec(&pods, "web", Some("db"), &["pg_dump", "shop"], None).await.unwrap();
    assert_eq!(out.stdout, "db ran [\"pg_dump\", \"shop\"]\n");
    assert_eq!(out.stderr, "a warning\n");
    assert_eq!(out.status.status.as_deref(), Some("Success"));
    // No container named: the first one, which only the wildcard handler serves.
    let out = exec(&pods, "web", None, &["true"], None).await.unwrap();
    assert_eq!(out.stdout, "any");
    let seen = registry.history();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].container.as_str(), seen[1].container.as_str()), ("db", "app"));
}

#[tokio::test]
async fn kube_rs_exec_reports_non_zero_exit_codes_and_passes_stdin() {
    let sim = Sim::start().await;
    let pods = two_container_pod(&sim, "web").await;
    sim.sim.exec().register("default", "web", "app", |req| async move {
        let mut stderr = b"failed on: ".to_vec();
        stderr.extend(&req.stdin);
        ExecOutput { stdout: req.stdin.clone(), stderr, exit_code: 3 }
    });
    let out = exec(&pods, "web", Some("app"), &["consume"], Some(b"some input")).await.unwrap();
    assert_eq!(out.stdout, "some input");
    assert_eq!(out.stderr, "failed on: some input");
    assert_eq!(out.status.status.as_deref(), Some("Failure"));
    assert_eq!(out.status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(exit_code(&out.status).as_deref(), Some("3"));
}

#[tokio::test]
async fn run_local_fallback_runs_the_command_in_the_container_rootfs() {
    let sim = Sim::start_with(|c| c.exec_fallback = ExecFallback::RunLocal).await;
    let pods = two_container_pod(&sim, "web").await;
    let pod = pods.get("web").await.unwrap();
    let rootfs = sim.rootfs(&pod, "app");
    let script = "echo saved > note.txt; cat; pwd; echo oops >&2; exit 5";
    let out = exec(&pods, "web", Some("app"), &["sh", "-c", script], Some(b"from stdin\n")).await.unwrap();
    assert_eq!(out.stdout, format!("from stdin\n{}\n", rootfs.display()));
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(exit_code(&out.status).as_deref(), Some("5"));
    assert_eq!(std::fs::read_to_string(rootfs.join("note.txt")).unwrap(), "saved\n");
    // Arguments are argv, not a shell line.
    let out = exec(&pods, "web", Some("app"), &["echo", "$HOME", ";", "ls"], None).await.unwrap();
    assert_eq!(out.stdout, "$HOME ; ls\n");
    assert_eq!(out.status.status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn deny_fallback_refuses_unless_a_local_handler_is_registered() {
    let sim = Sim::start().await;
    let pods = two_container_pod(&sim, "web").await;
    let out = exec(&pods, "web", Some("db"), &["ls"], None).await.unwrap();
    assert_eq!(out.status.status.as_deref(), Some("Failure"));
    assert!(out.status.message.as_deref().unwrap_or("").contains("no exec handler"), "{:?}", out.status);
    assert!(exit_code(&out.status).is_none());

    sim.sim.exec().register_local("default", "web", "db");
    let out = exec(&pods, "web", Some("db"), &["sh", "-c", "echo $KUBE_SIM_ROOTFS"], None).await.unwrap();
    let pod = pods.get("web").await.unwrap();
    assert_eq!(out.stdout.trim(), sim.rootfs(&pod, "db").display().to_string());
}

#[tokio::test]
async fn unknown_container_is_rejected_before_the_upgrade() {
    let sim = Sim::start().await;
    let pods = two_container_pod(&sim, "web").await;
    let err = exec(&pods, "web", Some("nope"), &["ls"], None).await.err().expect("an error");
    assert!(err.to_string().contains("400"), "{err}");
}

fn kubectl(sim: &Sim, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let kubeconfig = sim.dir.path().join("kubeconfig");
    sim.sim.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--request-timeout", "20s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_prints_stdout_and_propagates_the_exit_code() {
    let sim = Sim::start_with(|c| c.exec_fallback = ExecFallback::RunLocal).await;
    let _pods = two_container_pod(&sim, "web").await;
    let run = |args: Vec<&'static str>, stdin: &'static [u8]| {
        let sim = &sim;
        tokio::task::block_in_place(move || kubectl(sim, &args, stdin))
    };
    let out = run(vec!["exec", "web", "-c", "app", "--", "sh", "-c", "echo hello; echo to-stderr >&2; exit 4"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"), "{out:?}");
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let out = run(vec!["exec", "-i", "web", "--", "cat"], b"piped through\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped through\n", "{out:?}");
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn the_local_exec_timeout_is_configured_by_the_sim_config() {
    assert_eq!(kube_sim::SimConfig::new("/x").exec_local_timeout, Duration::from_secs(600));
    let sim = Sim::start_with(|c| {
        c.exec_fallback = ExecFallback::RunLocal;
        c.exec_local_timeout = Duration::from_secs(2);
    })
    .await;
    assert_eq!(sim.sim.exec().local_timeout(), Duration::from_secs(2));
    let pods = two_container_pod(&sim, "web").await;
    let started = std::time::Instant::now();
    let out = exec(&pods, "web", Some("app"), &["sh", "-c", "sleep 5; echo finished"], None).await.unwrap();
    assert_eq!(exit_code(&out.status).as_deref(), Some("137"));
    assert!(out.stderr.contains("timed out after 2s"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A longer cap lets a command that outlives the old one finish.
    sim.sim.exec().set_local_timeout(Duration::from_secs(10));
    let out = exec(&pods, "web", Some("app"), &["sh", "-c", "sleep 3; echo finished"], None).await.unwrap();
    assert_eq!(out.stdout, "finished\n");
    assert_eq!(out.status.status.as_deref(), Some("Success"));
}

//! Two `stowage server` processes against one cluster (kube-sim, or a real one): exactly one
//! leads through the `stowage-server` Lease and runs the controllers; the other is ready and
//! takes over when the leader is killed; a leader that loses its Lease stops at once.

mod e2e;

use std::process::Child;
use std::time::{Duration, Instant};

use e2e::{cli, free_port, http_get, wait_for, Env, NS};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Short leases, so the tests take seconds.
const LEASE: [&str; 6] = ["--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "500ms"];

async fn holder(env: &Env) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    api.get_opt("stowage-server").await.ok()??.spec?.holder_identity
}

fn leader_gauge(metrics: &str) -> Option<u32> {
    metrics.lines().find_map(|l| l.strip_prefix("stowage_server_leader ")?.trim().parse().ok())
}

struct Server {
    identity: &'static str,
    metrics: std::net::SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(env: &Env, identity: &'static str) -> Server {
    let metrics = free_port();
    Server { identity, metrics, child: env.spawn_server(identity, metrics, &LEASE) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_of_two_servers_leads_and_the_other_takes_over_when_it_dies() {
    let env = Env::start().await;
    let mut servers = vec![server(&env, "stowage-a"), server(&env, "stowage-b")];
    let first = wait_for("a leader", 30, || async { holder(&env).await }).await;
    // Both serve and are ready; only the holder says it leads.
    for s in &servers {
        assert_eq!(http_get(s.metrics, "/readyz").await, "ok");
    }
    let gauges = wait_for("both gauges", 30, || async {
        let mut g = Vec::new();
        for s in &servers {
            g.push((s.identity, leader_gauge(&http_get(s.metrics, "/metrics").await)?));
        }
        (g.iter().map(|(_, v)| v).sum::<u32>() == 1).then_some(g)
    })
    .await;
    let leading: Vec<&str> = gauges.iter().filter(|(_, v)| *v == 1).map(|(i, _)| *i).collect();
    assert_eq!(leading, vec![first.as_str()], "exactly the Lease holder leads: {gauges:?}");
    assert!(cli(&env, &["version"]).contains(&format!("Server: led by {first}")));
    let status = env.backup("under-first", json!({"includedNamespaces": ["default"]})).await;
    assert_eq!(status["phase"], "Completed", "{status}");

    // The leader dies without a word: the standby takes over once the Lease runs out.
    let at = servers.iter().position(|s| s.identity == first).unwrap();
    let mut dead = servers.remove(at);
    let killed = Instant::now();
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let standby = &servers[0];
    let second = wait_for("the standby to lead", 30, || async { holder(&env).await.filter(|h| *h == standby.identity) }).await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(8), "taken over in {took:?}, within the lease duration (4s) and a few retries");
    wait_for("the standby's gauge", 10, || async { (leader_gauge(&http_get(standby.metrics, "/metrics").await)? == 1).then_some(()) }).await;
    let status = env.backup("under-second", json!({"includedNamespaces": ["default"]})).await;
    assert_eq!(status["phase"], "Completed", "the new leader runs the controllers: {status}\n{}", env.spawned_server_log(standby.identity));
    assert!(cli(&env, &["version"]).contains(&format!("Server: led by {second}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_its_lease_stops_at_once() {
    let env = Env::start().await;
    let mut s = server(&env, "stowage-a");
    wait_for("it to lead", 30, || async { (holder(&env).await? == "stowage-a").then_some(()) }).await;
    // Someone else holds the Lease now (as after a partition the leader did not notice).
    let api: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    let mut lease = api.get("stowage-server").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now()));
    api.replace("stowage-server", &PostParams::default(), &lease).await.unwrap();
    let seen = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(seen.elapsed() < Duration::from_secs(10), "the old leader still runs: {}", env.spawned_server_log("stowage-a"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "it exits so that Kubernetes restarts it");
    assert!(seen.elapsed() < Duration::from_secs(3), "within a retry period or two, before the intruder's lease could be doubted");
    let log = env.spawned_server_log("stowage-a");
    assert!(log.contains("no longer leading: the Lease is now held by intruder"), "{log}");
}

//! Load benchmarks, ignored by default and run by name in release builds (`bash bench/load.sh`
//! builds what they need and runs both): many pod volumes on several nodes in one backup, and
//! many objects in one backup. They assert that the work was done right (phases, counts, a
//! restored sample equal to its source) and print `BENCH` lines with wall times and the peak
//! RSS (`VmHWM`) of the server and node agent processes; they do not fail on time.

mod e2e;

use std::collections::BTreeMap;
use std::time::Instant;

use e2e::{peak_rss_kib, wait_for, Env, NS};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use stowage_api::PodVolumeBackup;
use stowage_test_support::noise;

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// The pods of `ns` once `count` of them are Running, waiting up to `secs`.
async fn running_pods(env: &Env, ns: &str, count: usize, secs: u64) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_for(&format!("{count} running pods in {ns}"), secs, || async {
        let pods = api.list(&ListParams::default()).await.ok()?.items;
        let running: Vec<Pod> =
            pods.into_iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).collect();
        (running.len() == count).then_some(running)
    })
    .await
}

fn data_dir(env: &Env, pod: &Pod) -> std::path::PathBuf {
    let uid = pod.metadata.uid.as_deref().unwrap();
    env.sim.as_ref().unwrap().kubelet_root().join("pods").join(uid).join("volumes/kubernetes.io~empty-dir/data")
}

/// What the volume of pod number `i` holds.
fn volume_files(i: usize) -> [(&'static str, Vec<u8>); 2] {
    [("state.bin", noise(16 << 10, i as u64)), ("owner.txt", format!("pod {i:03}\n").into_bytes())]
}

fn pod_number(pod: &Pod) -> usize {
    pod.metadata.name.as_deref().and_then(|n| n.strip_prefix("app-")).and_then(|n| n.parse().ok()).unwrap()
}

/// `LOAD_PODS` pods (default 200) in four namespaces, each with one small emptyDir volume
/// opted in, scheduled round-robin on three nodes, each node with its own node agent doing two
/// volumes at once; one backup takes them all. Then one namespace is deleted and restored from
/// it, and every restored volume is compared with what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run it by name (bash bench/load.sh)"]
async fn load_pod_volumes_on_three_nodes() {
    if e2e::skipped_on_real_cluster("the volumes are written through kube-sim's node filesystem") {
        return;
    }
    let pods = env_number("LOAD_PODS", 200);
    let concurrency = 2;
    let namespaces: Vec<String> = (0..4).map(|n| format!("load-vol-{n}")).collect();
    let mut env = Env::start_with_nodes(&NODES).await;
    env.start_server();
    let agents = env.start_node_agents(concurrency);
    for ns in &namespaces {
        env.create_namespace(ns).await;
    }
    let started = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let pod = json!({"metadata": {"name": format!("app-{i:03}"), "annotations": {"backup.stowage.io/backup-volumes": "data"}},
                "spec": {"volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [{"name": "app", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}});
            let (env, ns) = (&env, &namespaces[i % namespaces.len()]);
            async move { env.create_in::<Pod>(ns, pod).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut on_node = BTreeMap::<String, usize>::new();
    for (n, ns) in namespaces.iter().enumerate() {
        let expected = (0..pods).filter(|i| i % namespaces.len() == n).count();
        for pod in running_pods(&env, ns, expected, 600).await {
            *on_node.entry(pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()).or_default() += 1;
            let dir = data_dir(&env, &pod);
            for (file, content) in volume_files(pod_number(&pod)) {
                std::fs::write(dir.join(file), content).unwrap();
            }
        }
    }
    println!("{pods} pods running with their volumes written in {:.1} s, by node: {on_node:?}", started.elapsed().as_secs_f64());
    assert_eq!(on_node.len(), NODES.len(), "the pods are spread over every node: {on_node:?}");

    let started = Instant::now();
    env.create::<stowage_api::Backup>(json!({"metadata": {"name": "load-volumes", "namespace": NS},
        "spec": {"includedNamespaces": namespaces}}))
        .await;
    let status = env.wait_finished_within::<stowage_api::Backup>("load-volumes", 1800).await;
    let backup_secs = started.elapsed().as_secs_f64();
    let server_rss = env.server_pid().and_then(peak_rss_kib);
    let agent_rss: Vec<String> = agents.pids().into_iter().map(|p| mib(peak_rss_kib(p))).collect();
    assert_eq!(status["phase"], "Completed", "{status}\n{}\n{}", env.server_log(), agents.log());
    assert_eq!(status["podVolumeBackupsAttempted"], pods, "{status}");
    assert_eq!(status["podVolumeBackupsCompleted"], pods, "{status}");
    let pvbs: Api<PodVolumeBackup> = Api::namespaced(env.client.clone(), NS);
    let pvbs = pvbs.list(&ListParams::default().labels("stowage.io/backup-name=load-volumes")).await.unwrap().items;
    assert_eq!(pvbs.len(), pods);
    let mut pvbs_on_node = BTreeMap::<String, usize>::new();
    for pvb in &pvbs {
        let status = pvb.status.as_ref().unwrap();
        assert_eq!(status.progress.as_ref().map(|p| p.total_bytes), Some((16 << 10) + 8), "{:?}", pvb.spec.pod.name);
        *pvbs_on_node.entry(pvb.spec.node.clone()).or_default() += 1;
    }
    assert_eq!(pvbs_on_node, on_node, "each volume was backed up by its pod's node");
    println!(
        "BENCH pod-volumes pods={pods} nodes={} concurrency={concurrency} backup_secs={backup_secs:.1} \
         server_peak_rss_mib={} agent_peak_rss_mib=[{}] by_node={pvbs_on_node:?}",
        NODES.len(),
        mib(server_rss),
        agent_rss.join(", ")
    );

    // A sample restored: the first namespace, deleted and brought back with its volumes.
    let sample = &namespaces[0];
    let sample_pods = (0..pods).filter(|i| i % namespaces.len() == 0).count();
    env.delete_namespace_and_wait(sample).await;
    let started = Instant::now();
    env.create::<stowage_api::Restore>(json!({"metadata": {"name": "load-volumes-sample", "namespace": NS},
        "spec": {"backupName": "load-volumes", "includedNamespaces": [sample]}}))
        .await;
    let status = env.wait_finished_within::<stowage_api::Restore>("load-volumes-sample", 1800).await;
    assert_eq!(status["phase"], "Completed", "{status}\n{}\n{}", env.server_log(), agents.log());
    assert_eq!(status["podVolumeRestoresCompleted"], sample_pods, "{status}");
    let restored = running_pods(&env, sample, sample_pods, 600).await;
    let restore_secs = started.elapsed().as_secs_f64();
    for pod in &restored {
        let dir = data_dir(&env, pod);
        for (file, content) in volume_files(pod_number(pod)) {
            assert_eq!(std::fs::read(dir.join(file)).unwrap(), content, "{file} of {:?}", pod.metadata.name);
        }
    }
    println!(
        "BENCH pod-volumes-restore pods={sample_pods} restore_secs={restore_secs:.1} (Restore created -> pods Running) \
         server_peak_rss_mib={} agent_peak_rss_mib=[{}] (peaks over the backup and the restore)",
        mib(env.server_pid().and_then(peak_rss_kib)),
        agents.pids().into_iter().map(|p| mib(peak_rss_kib(p))).collect::<Vec<_>>().join(", ")
    );
}

/// A ConfigMap of about 1.2 KiB, as `bench/backup-10k.sh` makes them.
fn config_map(i: usize) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": format!("config-{i:07}"), "labels": {"app": format!("app-{}", i % 50)},
        "annotations": {"description": "x".repeat(200)}},
        "data": {"settings.yaml": format!("replicas: {}\n{}", i % 7, "key: value\n".repeat(50))}}))
    .unwrap()
}

/// One backup of `LOAD_OBJECTS` ConfigMaps in one namespace (default `10000,100000`: the
/// namespace grows from one size to the next, and each size is backed up by a freshly started
/// server so that its peak RSS is that backup's). Beside each, the baseline of listing the same
/// objects in pages of 500 as the backup does. Then a sample (one label value in fifty) is
/// restored into another namespace and compared with its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run it by name (bash bench/load.sh)"]
async fn load_objects_in_one_backup() {
    let sizes: Vec<usize> = std::env::var("LOAD_OBJECTS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("LOAD_OBJECTS is a list of numbers"))
        .collect();
    let ns = "load-objects";
    let mut env = Env::start().await;
    env.create_namespace(ns).await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), ns);
    let mut created = 0;
    let mut peaks = Vec::new();
    for &n in &sizes {
        let started = Instant::now();
        futures::stream::iter(created..n)
            .map(|i| {
                let cms = cms.clone();
                async move { cms.create(&PostParams::default(), &config_map(i)).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let create_secs = started.elapsed().as_secs_f64();
        created = n;

        let started = Instant::now();
        let mut listed = 0;
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = cms.list(&lp).await.unwrap();
            listed += page.items.len();
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
        let list_secs = started.elapsed().as_secs_f64();
        assert_eq!(listed, n);

        env.kill_server();
        env.start_server();
        // Serving metrics, then a second to start its controllers, as bench/backup-10k.sh waits.
        e2e::http_get(env.metrics_address, "/metrics").await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let name = format!("objects-{n}");
        let started = Instant::now();
        env.create::<stowage_api::Backup>(json!({"metadata": {"name": name, "namespace": NS}, "spec": {"includedNamespaces": [ns]}}))
            .await;
        let status = env.wait_finished_within::<stowage_api::Backup>(&name, 3600).await;
        let backup_secs = started.elapsed().as_secs_f64();
        let server_rss = env.server_pid().and_then(peak_rss_kib);
        assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
        let list = env.resource_list(&name).await;
        let config_maps = list["v1/ConfigMap"].as_array().map_or(0, |a| a.iter().filter(|e| e.as_str().is_some_and(|e| e.starts_with(&format!("{ns}/config-")))).count());
        assert_eq!(config_maps, n, "every ConfigMap is in the backup");
        let items = status["progress"]["itemsBackedUp"].as_u64().unwrap() as usize;
        assert!(items >= n, "{status}");
        println!(
            "BENCH objects n={n} create_secs={create_secs:.1} backup_secs={backup_secs:.2} items={items} items_per_s={:.0} \
             list_pages_secs={list_secs:.2} backup_over_list={:.2} server_peak_rss_mib={}",
            items as f64 / backup_secs,
            backup_secs / list_secs,
            mib(server_rss)
        );
        peaks.push((n, server_rss));
    }
    if let (Some((n0, Some(first))), Some((n1, Some(last)))) = (peaks.first(), peaks.last()) {
        println!("BENCH objects server_peak_rss {n1} / {n0} objects: {:.2}", *last as f64 / *first as f64);
    }

    // A sample of the largest backup restored into another namespace, equal to its source.
    let n = created;
    let target = "load-objects-sample";
    let started = Instant::now();
    env.create::<stowage_api::Restore>(json!({"metadata": {"name": "objects-sample", "namespace": NS},
        "spec": {"backupName": format!("objects-{n}"), "includedNamespaces": [ns], "namespaceMapping": {ns: target},
            "labelSelector": {"matchLabels": {"app": "app-7"}}}}))
        .await;
    let status = env.wait_finished_within::<stowage_api::Restore>("objects-sample", 3600).await;
    let restore_secs = started.elapsed().as_secs_f64();
    assert_eq!(status["phase"], "Completed", "{status}\n{}", env.server_log());
    let restored: Api<ConfigMap> = Api::namespaced(env.client.clone(), target);
    let restored = restored.list(&ListParams::default()).await.unwrap().items;
    let expected: Vec<usize> = (0..n).filter(|i| i % 50 == 7).collect();
    let restored: BTreeMap<String, Value> = restored
        .into_iter()
        .filter(|c| c.metadata.name.as_deref() != Some("kube-root-ca.crt"))
        .map(|c| (c.metadata.name.clone().unwrap(), serde_json::to_value((c.data, c.metadata.labels, c.metadata.annotations)).unwrap()))
        .collect();
    assert_eq!(restored.len(), expected.len());
    for i in expected {
        let source = config_map(i);
        let want = serde_json::to_value((source.data, source.metadata.labels, source.metadata.annotations)).unwrap();
        let got = &restored[source.metadata.name.as_deref().unwrap()];
        // The restore may add its own labels and annotations; the source's are all there.
        assert_eq!(got[0], want[0], "data of config-{i:07}");
        for (k, v) in want[1].as_object().unwrap().iter().chain(want[2].as_object().unwrap()) {
            assert!(got[1].get(k) == Some(v) || got[2].get(k) == Some(v), "config-{i:07} lost {k}={v}");
        }
    }
    println!("BENCH objects-restore sample={} of {n} restore_secs={restore_secs:.1}", restored.len());
}

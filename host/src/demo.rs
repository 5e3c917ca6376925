//! `stowage demo`: the seed walkthrough on embedded defaults. A simulated cluster (kube-sim) and
//! a filesystem storage location in a temporary directory, the real controllers in process; the
//! nginx example is deployed, backed up, its namespace deleted, restored, and checked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use stowage_api::{Backup, BackupStorageLocation, Restore};

use crate::cluster::ClusterArgs;
use crate::commands::wait::{self, Progress, Tracked};
use crate::discovery::{self, Discovered};
use crate::server::ServerArgs;

/// The example application, as users can also apply it by hand.
pub const NGINX_APP: &str = include_str!("../../deploy/examples/nginx-app.yaml");
const APP_NS: &str = "nginx-example";
const NS: &str = "stowage";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the simulated cluster running afterwards and print a kubeconfig for kubectl.
    #[arg(long)]
    pub keep: bool,
    /// Directory for the simulated nodes, the kubeconfig and the backups (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn say(cmd: &str) {
    println!("\n$ {cmd}");
}

async fn wait_until<T, F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies a multi-document manifest with server-side apply, printing kubectl-style lines.
pub async fn apply_manifest(client: &Client, yaml: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let types = discovery::discover(client).await?;
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value.clone())?;
        let tm = obj.types.clone().context("a manifest document has no apiVersion/kind")?;
        let d = types
            .iter()
            .find(|d| d.api.api_version == tm.api_version && d.api.kind == tm.kind)
            .with_context(|| format!("{} {} is not served by the cluster", tm.api_version, tm.kind))?;
        let name = obj.metadata.name.clone().context("a manifest document has no metadata.name")?;
        let api: Api<DynamicObject> = match (&obj.metadata.namespace, d.info.namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &d.api),
            _ => Api::all_with(client.clone(), &d.api),
        };
        let out = api.patch(&name, &PatchParams::apply("stowage-demo").force(), &Patch::Apply(&value)).await?;
        let group = if d.info.group.is_empty() { String::new() } else { format!(".{}", d.info.group) };
        println!("{}{group}/{name} created", d.info.kind.to_lowercase());
        applied.push(out);
    }
    Ok(applied)
}

/// What a user compares after a restore: each object without what the cluster assigns.
fn comparable(obj: &DynamicObject) -> Value {
    let mut v = obj.data.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    for path in ["/spec/clusterIP", "/spec/clusterIPs", "/spec/volumeName"] {
        if let Some((parent, key)) = path.rsplit_once('/') {
            if let Some(p) = v.pointer_mut(parent).and_then(Value::as_object_mut) {
                p.remove(key);
            }
        }
    }
    if let Some(ports) = v.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
    v
}

async fn fetch(client: &Client, types: &[Discovered], obj: &DynamicObject) -> anyhow::Result<Option<DynamicObject>> {
    let tm = obj.types.clone().unwrap_or_default();
    let Some(d) = types.iter().find(|d| d.api.api_version == tm.api_version && d.api.kind == tm.kind) else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = match &obj.metadata.namespace {
        Some(ns) if d.info.namespaced => Api::namespaced_with(client.clone(), ns, &d.api),
        _ => Api::all_with(client.clone(), &d.api),
    };
    Ok(api.get_opt(obj.metadata.name.as_deref().unwrap_or_default()).await?)
}

async fn install(client: &Client, backups_dir: &std::path::Path) -> anyhow::Result<()> {
    let pp = PatchParams::apply("stowage-demo").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in stowage_api::all_crds() {
        crds.patch(crd.metadata.name.as_deref().unwrap_or_default(), &pp, &Patch::Apply(&crd)).await?;
    }
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.patch(NS, &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))).await?;
    let bsl = json!({"apiVersion": "stowage.io/v1alpha1", "kind": "BackupStorageLocation",
        "metadata": {"name": "default", "namespace": NS},
        "spec": {"provider": "filesystem", "objectStorage": {"bucket": backups_dir}, "default": true}});
    Api::<BackupStorageLocation>::namespaced(client.clone(), NS).patch("default", &pp, &Patch::Apply(&bsl)).await?;
    // Repository passwords derive from this key (what `stowage install` creates).
    let key: [u8; 32] = rand::random();
    use base64::Engine;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": stowage_api::names::MASTER_KEY_SECRET, "namespace": NS},
        "data": {stowage_api::names::MASTER_KEY_SECRET_KEY: base64::engine::general_purpose::STANDARD.encode(key)}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .patch(stowage_api::names::MASTER_KEY_SECRET, &pp, &Patch::Apply(&secret))
        .await?;
    Ok(())
}

/// The directory holding a claim's data on the simulated node.
async fn claim_dir(client: &Client, root: &std::path::Path, claim: &str) -> anyhow::Result<PathBuf> {
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), APP_NS);
    let pv = wait_until(&format!("claim {claim} to be bound"), 30, || async {
        pvcs.get(claim).await.ok()?.spec?.volume_name
    })
    .await?;
    Ok(root.join("kubelet").join("volumes").join(pv))
}

/// Follows a backup or restore as `--wait` does, bounded so the demo never hangs.
async fn wait_done<K: Tracked>(client: &Client, name: &str) -> anyhow::Result<Progress> {
    let done = tokio::time::timeout(Duration::from_secs(120), wait::until_done::<K>(client.clone(), NS, name))
        .await
        .map_err(|_| anyhow::anyhow!("timed out after 120s waiting for {} {name:?} to finish", K::KIND))??;
    Ok(done.progress())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("stowage-demo-").tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let backups_dir = root.join("backups");
    std::fs::create_dir_all(&backups_dir)?;
    println!("Stowage demo: back up the nginx example, delete its namespace, restore it.");
    println!("Working directory: {}", root.display());

    say("kube-sim  # a simulated cluster: API server, scheduler, kubelet, controllers");
    let mut sim_config = kube_sim::SimConfig::new(root.join("kubelet"));
    // The simulated kubelet runs the restore helper init container as this very binary.
    let helper = root.join("bin").join("stowage-restore-helper");
    std::fs::create_dir_all(root.join("bin"))?;
    let _ = std::fs::remove_file(&helper);
    std::os::unix::fs::symlink(std::env::current_exe()?, &helper)?;
    sim_config.images.insert("stowage/restore-helper".into(), helper);
    let sim = kube_sim::KubeSim::start(sim_config).await?;
    let kubeconfig = root.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;
    let cluster = ClusterArgs { kubeconfig: Some(kubeconfig.clone()), context: None };
    let client = cluster.client().await?;
    println!("cluster API at {}", sim.url());

    say(&format!("stowage install --provider filesystem --bucket {}", backups_dir.display()));
    install(&client, &backups_dir).await?;
    println!("CustomResourceDefinitions, namespace {NS}, master key and storage location \"default\" created");
    let server_args = ServerArgs {
        namespace: NS.to_string(),
        metrics_address: "127.0.0.1:0".parse()?,
        dashboard_address: None,
        default_volumes_to_fs_backup: false,
        location_check_period: Some(Duration::from_secs(1)),
        garbage_collection_frequency: crate::gc::DEFAULT_FREQUENCY,
        pod_volume_timeout: Duration::from_secs(120),
        max_frozen_time: Duration::from_secs(300),
        archive_max_entries: 1_000_000,
        archive_max_bytes: 16 << 30,
        archive_max_entry_bytes: 64 << 20,
        lease_duration: Duration::from_secs(15),
        lease_renew_deadline: Duration::from_secs(10),
        lease_retry_period: Duration::from_secs(2),
        concurrent_backups: 2,
        concurrent_restores: 2,
        max_attempts: 3,
        default_repo_maintain_frequency: Duration::from_secs(7 * 24 * 3600),
        repo_maintain_max_unused: 5.0,
        repo_maintain_check_period: Duration::from_secs(60),
        restore_helper_image: stowage_api::names::DEFAULT_RESTORE_HELPER_IMAGE.to_string(),
        namespaced_extension_capabilities: stowage_runtime::Capabilities {
            log: true,
            clock: true,
            ..Default::default()
        },
    };
    let server_cluster = cluster.clone();
    let server = tokio::spawn(async move { crate::server::run(server_args, &server_cluster).await });
    let agent_args = stowage_node_agent::Args {
        node_name: "node-1".into(),
        namespace: NS.into(),
        kubelet_pods_dir: root.join("kubelet").join("pods"),
        concurrency: 2,
        metrics_address: "127.0.0.1:0".parse()?,
        kubeconfig: Some(kubeconfig.clone()),
    };
    std::fs::create_dir_all(&agent_args.kubelet_pods_dir)?;
    let node_agent = tokio::spawn(stowage_node_agent::run(agent_args));
    let bsls: Api<BackupStorageLocation> = Api::namespaced(client.clone(), NS);
    wait_until("the storage location to be Available", 30, || async {
        let l = bsls.get("default").await.ok()?;
        (l.status?.phase? == stowage_api::location::LocationPhase::Available).then_some(())
    })
    .await?;
    println!("stowage server running; storage location \"default\" is Available");

    say("kubectl apply -f deploy/examples/nginx-app.yaml");
    let app = apply_manifest(&client, NGINX_APP).await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), APP_NS);
    let ready = || async {
        let d = deploys.get("nginx-deployment").await.ok()?;
        (d.status?.ready_replicas? >= 1).then_some(())
    };
    wait_until("nginx to be running", 60, ready).await?;
    let types = discovery::discover(&client).await?;
    let mut original = Vec::new();
    for obj in &app {
        original.push(fetch(&client, &types, obj).await?.map(|o| comparable(&o)));
    }
    println!("deployment.apps/nginx-deployment is ready");
    let log_file = claim_dir(&client, &root, "nginx-logs").await?.join("access.log");
    let access_log: String = (1..=200)
        .map(|i| format!("10.244.0.1 - - [21/Nov/2026:03:00:{:02} +0000] \"GET /{i} HTTP/1.1\" 200 612 \"-\" \"curl/8.5\"\n", i % 60))
        .collect();
    std::fs::write(&log_file, &access_log)?;
    say(&format!("kubectl exec -n {APP_NS} deploy/nginx-deployment -- wc -l /var/log/nginx/access.log"));
    println!("200 /var/log/nginx/access.log  ({} bytes, the volume backed up file by file)", access_log.len());

    say(&format!("stowage backup create nginx-backup --include-namespaces {APP_NS} --wait"));
    let backup: Backup = serde_json::from_value(json!({"metadata": {"name": "nginx-backup", "namespace": NS},
        "spec": {"includedNamespaces": [APP_NS]}}))?;
    Api::<Backup>::namespaced(client.clone(), NS).create(&PostParams::default(), &backup).await?;
    println!("Backup request \"nginx-backup\" submitted successfully.");
    let done = wait_done::<Backup>(&client, "nginx-backup").await?;
    println!("Backup completed with status: {}. {} items backed up.", done.phase, done.done);
    anyhow::ensure!(done.succeeded, "the backup did not complete: it ended {}", done.phase);

    say(&format!("kubectl delete namespace {APP_NS}"));
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete(APP_NS, &DeleteParams::default()).await?;
    wait_until("the namespace to be gone", 60, || async { nss.get_opt(APP_NS).await.ok()?.is_none().then_some(()) }).await?;
    println!("namespace \"{APP_NS}\" deleted");
    say(&format!("kubectl get all -n {APP_NS}"));
    println!("No resources found in {APP_NS} namespace.");

    let restore_name = format!("nginx-backup-{}", k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%d%H%M%S"));
    say("stowage restore create --from-backup nginx-backup --wait");
    let restore: Restore = serde_json::from_value(json!({"metadata": {"name": restore_name, "namespace": NS},
        "spec": {"backupName": "nginx-backup"}}))?;
    Api::<Restore>::namespaced(client.clone(), NS).create(&PostParams::default(), &restore).await?;
    println!("Restore request \"{restore_name}\" submitted successfully.");
    let done = wait_done::<Restore>(&client, &restore_name).await?;
    println!("Restore completed with status: {}. {} items restored.", done.phase, done.done);
    anyhow::ensure!(done.succeeded, "the restore did not complete: it ended {}", done.phase);
    wait_until("restored nginx to be running", 60, ready).await?;
    say(&format!("kubectl exec -n {APP_NS} deploy/nginx-deployment -- cat /var/log/nginx/access.log | cmp - access.log"));
    let restored_log = std::fs::read_to_string(claim_dir(&client, &root, "nginx-logs").await?.join("access.log"))
        .context("the restored volume has no access.log")?;
    anyhow::ensure!(restored_log == access_log, "the restored access.log differs from the one backed up");
    println!("access.log is back, byte for byte ({} lines)", restored_log.lines().count());

    say(&format!("kubectl get all,pvc,configmap,secret -n {APP_NS}  # compared with what was deployed"));
    let mut differences = 0;
    for (obj, before) in app.iter().zip(&original) {
        let kind = obj.types.as_ref().map(|t| t.kind.to_lowercase()).unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let after = fetch(&client, &types, obj).await?.map(|o| comparable(&o));
        if after == *before {
            println!("  {kind}/{name}: back, identical to the original");
        } else {
            differences += 1;
            println!("  {kind}/{name}: DIFFERS from the original");
        }
    }
    println!("\nBackup files in {}:", backups_dir.display());
    for entry in walk(&backups_dir)? {
        println!("  {}", entry.strip_prefix(&backups_dir).unwrap_or(&entry).display());
    }
    anyhow::ensure!(differences == 0, "{differences} restored object(s) differ from the originals");
    println!("\nEverything is back.");

    if args.keep {
        println!("\nThe simulated cluster keeps running. Look around with:\n  export KUBECONFIG={}\n  kubectl get all -n {APP_NS}\n  kubectl get backups,restores -n {NS}\nPress Ctrl-C to stop.", kubeconfig.display());
        let _keep_dir = tmp.keep();
        tokio::signal::ctrl_c().await?;
    }
    server.abort();
    node_agent.abort();
    drop(sim);
    Ok(())
}

fn walk(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

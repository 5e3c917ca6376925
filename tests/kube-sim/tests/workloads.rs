//! The simulated control plane and kubelet, seen through the API and the kubelet directory:
//! workloads get pods, pods get volume directories, data follows claims, mapped images run.
mod fixtures;

use std::collections::HashSet;

use fixtures::{eventually, is_ready, phase, pvc, ContainerBuilder, PodSpecBuilder, Sim};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use kube_sim::kubelet::layout;
use serde_json::json;

async fn running_pods(api: &Api<Pod>, selector: &str, n: usize) -> Vec<Pod> {
    let selector = selector.to_string();
    eventually(&format!("{n} ready pods with {selector}"), || {
        let (api, selector) = (api.clone(), selector.clone());
        async move {
            let pods = api.list(&ListParams::default().labels(&selector)).await.ok()?.items;
            let live: Vec<Pod> = pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            (live.len() == n && live.iter().all(|p| phase(p) == "Running" && is_ready(p))).then_some(live)
        }
    })
    .await
}

async fn bound_volume(sim: &Sim, ns: &str, claim: &str) -> String {
    let api: Api<PersistentVolumeClaim> = sim.api(ns);
    eventually(&format!("claim {claim} bound"), || {
        let api = api.clone();
        async move {
            let c = api.get(claim).await.ok()?;
            let bound = c.status.as_ref()?.phase.as_deref() == Some("Bound");
            c.spec?.volume_name.filter(|_| bound)
        }
    })
    .await
}

#[tokio::test]
async fn deployment_pods_share_data_through_their_claim_and_keep_it_after_scaling_to_zero() {
    let sim = Sim::start().await;
    sim.namespace("shop").await;
    let _: PersistentVolumeClaim = sim.create(pvc("shop", "data", "1Gi")).await;
    let spec = PodSpecBuilder::default()
        .container(ContainerBuilder::new("web", "nginx:1.27").mount("data", "/usr/share/data"))
        .volume_pvc("data", "data");
    let _: Deployment = sim.create(spec.clone().deployment("shop", "web", 2)).await;
    let pods: Api<Pod> = sim.api("shop");
    let running = running_pods(&pods, "app=web", 2).await;

    // The claim was provisioned by the CSI driver and bound both ways.
    let pv_name = bound_volume(&sim, "shop", "data").await;
    let pv: PersistentVolume = Api::all(sim.client.clone()).get(&pv_name).await.unwrap();
    let pv_spec = pv.spec.unwrap();
    assert_eq!(pv_spec.csi.unwrap().driver, "kube-sim.io/hostpath-csi");
    assert_eq!(pv_spec.claim_ref.unwrap().name.as_deref(), Some("data"));
    assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
    let claim = sim.api::<PersistentVolumeClaim>("shop").get("data").await.unwrap();
    assert_eq!(claim.annotations()["pv.kubernetes.io/bind-completed"], "yes");

    // Pods are owned by a ReplicaSet `<deployment>-<pod-template-hash>`.
    let sets = sim.api::<ReplicaSet>("shop").list(&ListParams::default()).await.unwrap().items;
    assert_eq!(sets.len(), 1);
    let hash = sets[0].labels()["pod-template-hash"].clone();
    assert_eq!(sets[0].name_any(), format!("web-{hash}"));
    for p in &running {
        assert!(p.name_any().starts_with(&format!("web-{hash}-")), "{}", p.name_any());
        assert_eq!(p.owner_references()[0].name, sets[0].name_any());
    }

    // Each pod has the kubelet's CSI volume directory; data written in one shows in the other.
    let mounts: Vec<_> = running.iter().map(|p| layout::csi_mount(sim.root(), &p.uid().unwrap(), &pv_name)).collect();
    assert!(mounts.iter().all(|m| m.is_dir()), "{mounts:?}");
    std::fs::write(sim.rootfs(&running[0], "web").join("usr/share/data/index.html"), "hello").unwrap();
    assert_eq!(std::fs::read_to_string(sim.rootfs(&running[1], "web").join("usr/share/data/index.html")).unwrap(), "hello");
    assert_eq!(std::fs::read_to_string(mounts[1].join("index.html")).unwrap(), "hello");

    let deployments: Api<Deployment> = sim.api("shop");
    let d = eventually("deployment status", || {
        let d = deployments.clone();
        async move { d.get("web").await.ok().filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)) }
    })
    .await;
    let status = d.status.unwrap();
    assert_eq!((status.replicas, status.updated_replicas, status.available_replicas), (Some(2), Some(2), Some(2)));
    assert_eq!(status.observed_generation, d.metadata.generation);

    // Scale to zero: pods and their directories go, the volume's data stays.
    deployments.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    let pod_dirs: Vec<_> = running.iter().map(|p| layout::pod_dir(sim.root(), &p.uid().unwrap())).collect();
    eventually("pods and pod directories gone", || {
        let (pods, dirs) = (pods.clone(), pod_dirs.clone());
        async move {
            let left = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
            (left.is_empty() && dirs.iter().all(|d| !d.exists())).then_some(())
        }
    })
    .await;
    let storage = layout::pv_storage(sim.root(), &pv_name);
    assert_eq!(std::fs::read_to_string(storage.join("index.html")).unwrap(), "hello");

    // A new pod on the same claim sees what the old ones wrote.
    let reader = PodSpecBuilder::default()
        .container(ContainerBuilder::new("reader", "busybox").mount("data", "/data"))
        .volume_pvc("data", "data");
    let _: Pod = sim.create(reader.pod("shop", "reader")).await;
    let p = running_pods(&pods, "", 1).await.remove(0);
    assert_eq!(std::fs::read_to_string(sim.rootfs(&p, "reader").join("data/index.html")).unwrap(), "hello");
}

#[tokio::test]
async fn a_template_change_rolls_to_a_new_replica_set() {
    let sim = Sim::start().await;
    let spec = |image: &str| PodSpecBuilder::default().container(ContainerBuilder::new("app", image));
    let _: Deployment = sim.create(spec("app:v1").deployment("default", "app", 1)).await;
    let pods: Api<Pod> = sim.api("default");
    let v1 = running_pods(&pods, "app=app", 1).await;
    let deployments: Api<Deployment> = sim.api("default");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}});
    deployments.patch("app", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    let v2 = eventually("pod of the new template", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=app")).await.ok()?.items;
            let live: Vec<Pod> = list.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let image = live.first()?.spec.as_ref()?.containers[0].image.clone()?;
            (live.len() == 1 && image == "app:v2" && phase(&live[0]) == "Running").then_some(live)
        }
    })
    .await;
    assert_ne!(v1[0].labels()["pod-template-hash"], v2[0].labels()["pod-template-hash"]);
    let sets = sim.api::<ReplicaSet>("default").list(&ListParams::default()).await.unwrap().items;
    let replicas: HashSet<(String, i32)> =
        sets.iter().map(|rs| (rs.labels()["pod-template-hash"].clone(), rs.spec.as_ref().unwrap().replicas.unwrap())).collect();
    let expected: HashSet<(String, i32)> =
        [(v1[0].labels()["pod-template-hash"].clone(), 0), (v2[0].labels()["pod-template-hash"].clone(), 1)].into();
    assert_eq!(replicas, expected);
}

#[tokio::test]
async fn statefulset_gets_ordered_pods_with_their_own_claims_kept_on_scale_down() {
    let sim = Sim::start().await;
    let spec = PodSpecBuilder::default().container(ContainerBuilder::new("db", "postgres:16").mount("data", "/var/lib/postgresql"));
    let _: StatefulSet = sim.create(spec.statefulset("default", "db", 2, "data")).await;
    let pods: Api<Pod> = sim.api("default");
    let running = running_pods(&pods, "app=db", 2).await;
    let names: HashSet<String> = running.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, HashSet::from(["db-0".to_string(), "db-1".to_string()]));
    for ordinal in ["0", "1"] {
        let pv = bound_volume(&sim, "default", &format!("data-db-{ordinal}")).await;
        // Read the pod again: the check is about the pod running now, whatever replaced what.
        eventually(&format!("db-{ordinal}'s volume and mount laid out"), || {
            let (pods, pv, root) = (pods.clone(), pv.clone(), sim.root().to_path_buf());
            let sim = &sim;
            async move {
                let p = pods.get(&format!("db-{ordinal}")).await.ok()?;
                (phase(&p) == "Running"
                    && layout::csi_mount(&root, &p.uid()?, &pv).is_dir()
                    && sim.rootfs(&p, "db").join("var/lib/postgresql").is_dir())
                .then_some(())
            }
        })
        .await;
    }

    let sets: Api<StatefulSet> = sim.api("default");
    sets.patch_scale("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    let left = running_pods(&pods, "app=db", 1).await;
    assert_eq!(left[0].name_any(), "db-0");
    let claims: Api<PersistentVolumeClaim> = sim.api("default");
    assert!(claims.get_opt("data-db-1").await.unwrap().is_some(), "claims outlive a scale-down");
    let status = eventually("statefulset status", || {
        let sets = sets.clone();
        async move { sets.get("db").await.ok()?.status.filter(|s| s.replicas == 1 && s.ready_replicas == Some(1)) }
    })
    .await;
    assert_eq!(status.current_revision, status.update_revision);
}

#[tokio::test]
async fn job_runs_mapped_init_and_main_containers_as_local_processes() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    let spec = PodSpecBuilder::default()
        .init_container(
            ContainerBuilder::new("prepare", "busybox:1.36")
                .command(&["-c", "echo prepared > \"$KUBE_SIM_ROOTFS/work/init.txt\""])
                .mount("work", "/work"),
        )
        .container(
            ContainerBuilder::new("main", "busybox:1.36")
                .command(&["-c", "cat work/init.txt > work/out.txt && echo \"$POD_NAMESPACE/$MY_POD $KUBECONFIG\" >> work/out.txt"])
                .env_field("POD_NAMESPACE", "metadata.namespace")
                .env_field("MY_POD", "metadata.name")
                .mount("work", "/work"),
        )
        .volume_empty_dir("work")
        .restart_policy("Never");
    let job: Job = sim.create(spec.job("default", "once")).await;
    let jobs: Api<Job> = sim.api("default");
    let done = eventually("job complete", || {
        let jobs = jobs.clone();
        async move {
            let j = jobs.get("once").await.ok()?;
            let complete = j.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Complete" && c.status == "True");
            complete.then_some(j)
        }
    })
    .await;
    assert_eq!(done.status.as_ref().unwrap().succeeded, Some(1));

    let uid = job.uid().unwrap();
    let pods: Api<Pod> = sim.api("default");
    let list = pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}"))).await.unwrap().items;
    assert_eq!(list.len(), 1);
    let pod = &list[0];
    assert_eq!(phase(pod), "Succeeded");
    assert_eq!(pod.labels()["job-name"], "once");
    let status = pod.status.as_ref().unwrap();
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    assert_eq!(init.state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
    let main = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(main.state.as_ref().unwrap().terminated.as_ref().unwrap().reason.as_deref(), Some("Completed"));

    let volume = layout::volume_dir(sim.root(), &pod.uid().unwrap(), layout::EMPTY_DIR, "work");
    let out = std::fs::read_to_string(volume.join("out.txt")).unwrap();
    let kubeconfig = layout::kubeconfig(sim.root());
    assert_eq!(out, format!("prepared\ndefault/{} {}\n", pod.name_any(), kubeconfig.display()));

    // The Job got the selector a real API server gives it.
    let selector = done.spec.unwrap().selector.unwrap().match_labels.unwrap();
    assert_eq!(selector["batch.kubernetes.io/controller-uid"], uid);
}

#[tokio::test]
async fn a_pod_waits_for_its_claim_to_be_bound() {
    let sim = Sim::start().await;
    let mut claim = pvc("default", "later", "1Gi");
    claim["spec"]["storageClassName"] = json!("not-yet");
    let _: PersistentVolumeClaim = sim.create(claim).await;
    let spec = PodSpecBuilder::default().container(ContainerBuilder::new("c", "app").mount("v", "/v")).volume_pvc("v", "later");
    let _: Pod = sim.create(spec.pod("default", "patient")).await;
    let pods: Api<Pod> = sim.api("default");
    let waiting = eventually("pod waiting for its claim", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("patient").await.ok()?;
            let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodReadyToStartContainers")?.clone();
            (c.status == "False").then_some((p, c))
        }
    })
    .await;
    assert_eq!(phase(&waiting.0), "Pending");
    assert_eq!(waiting.1.reason.as_deref(), Some("PersistentVolumeClaimNotBound"));

    // The class appears; the claim gets provisioned and the pod starts.
    let classes: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(sim.client.clone());
    let class = serde_json::from_value(json!({"metadata": {"name": "not-yet"}, "provisioner": "kube-sim.io/hostpath-csi",
                                               "reclaimPolicy": "Retain"}))
    .unwrap();
    classes.create(&Default::default(), &class).await.unwrap();
    let p = running_pods(&pods, "", 1).await.remove(0);
    let pv_name = bound_volume(&sim, "default", "later").await;
    let pv: PersistentVolume = Api::all(sim.client.clone()).get(&pv_name).await.unwrap();
    assert_eq!(pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
    assert!(sim.rootfs(&p, "c").join("v").is_dir());
}

#[tokio::test]
async fn failing_init_container_with_restart_never_fails_the_pod() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    let spec = PodSpecBuilder::default()
        .init_container(ContainerBuilder::new("check", "busybox").command(&["-c", "echo precondition failed >&2; exit 3"]))
        .container(ContainerBuilder::new("app", "nginx"))
        .restart_policy("Never");
    let _: Pod = sim.create(spec.pod("default", "doomed")).await;
    let pods: Api<Pod> = sim.api("default");
    let pod = eventually("pod failed", || {
        let pods = pods.clone();
        async move { pods.get("doomed").await.ok().filter(|p| phase(p) == "Failed") }
    })
    .await;
    let status = pod.status.unwrap();
    let t = status.init_container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(t.exit_code, 3);
    assert!(t.message.unwrap_or_default().contains("precondition failed"));
    let app = &status.container_statuses.unwrap()[0];
    assert!(app.state.as_ref().unwrap().waiting.is_some(), "the app container never started: {app:?}");
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_node() {
    let sim = Sim::start_with(|c| c.nodes = vec!["node-a".into(), "node-b".into()]).await;
    let spec = PodSpecBuilder::default().container(ContainerBuilder::new("agent", "stowage/node-agent"));
    let _: DaemonSet = sim.create(spec.daemonset("default", "agent")).await;
    let pods: Api<Pod> = sim.api("default");
    let running = running_pods(&pods, "app=agent", 2).await;
    let nodes: HashSet<String> = running.iter().filter_map(|p| p.spec.as_ref()?.node_name.clone()).collect();
    assert_eq!(nodes, HashSet::from(["node-a".to_string(), "node-b".to_string()]));
}

#[tokio::test]
async fn deleting_a_claim_deletes_its_dynamic_volume_and_data() {
    let sim = Sim::start().await;
    let _: PersistentVolumeClaim = sim.create(pvc("default", "scratch", "1Gi")).await;
    let pv = bound_volume(&sim, "default", "scratch").await;
    let storage = layout::pv_storage(sim.root(), &pv);
    assert!(storage.is_dir());
    let claims: Api<PersistentVolumeClaim> = sim.api("default");
    claims.delete("scratch", &DeleteParams::default()).await.unwrap();
    let pvs: Api<PersistentVolume> = Api::all(sim.client.clone());
    eventually("volume deleted", || {
        let (pvs, pv, storage) = (pvs.clone(), pv.clone(), storage.clone());
        async move { (pvs.get_opt(&pv).await.ok()?.is_none() && !storage.exists()).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_claim_naming_an_existing_volume_binds_to_it_and_sees_its_data() {
    let sim = Sim::start().await;
    // As a restore does: the volume first, pre-bound by name, then the claim naming it.
    let pvs: Api<PersistentVolume> = Api::all(sim.client.clone());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "restored-pv"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                 "persistentVolumeReclaimPolicy": "Retain",
                 "claimRef": {"namespace": "default", "name": "restored"},
                 "csi": {"driver": "kube-sim.io/hostpath-csi", "volumeHandle": "restored-pv"}}}))
    .unwrap();
    pvs.create(&Default::default(), &pv).await.unwrap();
    std::fs::create_dir_all(layout::pv_storage(sim.root(), "restored-pv")).unwrap();
    std::fs::write(layout::pv_storage(sim.root(), "restored-pv").join("f"), "kept").unwrap();
    let mut claim = pvc("default", "restored", "1Gi");
    claim["spec"]["volumeName"] = json!("restored-pv");
    claim["spec"]["storageClassName"] = json!("standard");
    let _: PersistentVolumeClaim = sim.create(claim).await;
    assert_eq!(bound_volume(&sim, "default", "restored").await, "restored-pv");

    let spec = PodSpecBuilder::default().container(ContainerBuilder::new("c", "app").mount("v", "/v")).volume_pvc("v", "restored");
    let _: Pod = sim.create(spec.pod("default", "user")).await;
    let pods: Api<Pod> = sim.api("default");
    let p = running_pods(&pods, "", 1).await.remove(0);
    assert_eq!(std::fs::read_to_string(sim.rootfs(&p, "c").join("v/f")).unwrap(), "kept");

    // Retain: deleting the claim releases the volume and keeps the data.
    pods.delete("user", &DeleteParams::default()).await.unwrap();
    sim.api::<PersistentVolumeClaim>("default").delete("restored", &DeleteParams::default()).await.unwrap();
    eventually("volume released", || {
        let pvs = pvs.clone();
        async move { pvs.get("restored-pv").await.ok()?.status?.phase.filter(|p| p == "Released") }
    })
    .await;
    assert!(layout::pv_storage(sim.root(), "restored-pv").join("f").exists());
}

async fn resource_version(sim: &Sim) -> String {
    let pods: Api<Pod> = Api::all(sim.client.clone());
    pods.list(&ListParams::default().limit(1)).await.unwrap().metadata.resource_version.unwrap()
}

#[tokio::test]
async fn controllers_settle_instead_of_writing_in_a_loop() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    let app = PodSpecBuilder::default().container(ContainerBuilder::new("app", "app").mount("d", "/d")).volume_pvc("d", "d");
    let _: PersistentVolumeClaim = sim.create(pvc("default", "d", "1Gi")).await;
    let _: Deployment = sim.create(app.deployment("default", "web", 2)).await;
    let plain = PodSpecBuilder::default().container(ContainerBuilder::new("c", "img"));
    let _: StatefulSet = sim.create(plain.clone().statefulset("default", "db", 1, "data")).await;
    let _: DaemonSet = sim.create(plain.daemonset("default", "agent")).await;
    let once = PodSpecBuilder::default().container(ContainerBuilder::new("c", "busybox").command(&["-c", "true"])).restart_policy("Never");
    let _: Job = sim.create(once.job("default", "once")).await;
    let pods: Api<Pod> = sim.api("default");
    eventually("everything settled", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.ok()?.items;
            let running = list.iter().filter(|p| phase(p) == "Running" && is_ready(p)).count();
            let done = list.iter().filter(|p| phase(p) == "Succeeded").count();
            (running == 4 && done == 1).then_some(())
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let before = resource_version(&sim).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(resource_version(&sim).await, before, "something kept writing while nothing changed");
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[tokio::test]
async fn deleting_a_pod_or_dropping_the_simulator_kills_its_processes() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    let sleeper = |name: &str| {
        PodSpecBuilder::default()
            .container(ContainerBuilder::new("c", "busybox").command(&["-c", "echo $$ > pid; sleep 300 & wait"]))
            .pod("default", name)
    };
    let _: Pod = sim.create(sleeper("one")).await;
    let _: Pod = sim.create(sleeper("two")).await;
    let pods: Api<Pod> = sim.api("default");
    let running = running_pods(&pods, "", 2).await;
    let pid = |p: &Pod| {
        let file = sim.rootfs(p, "c").join("pid");
        async move {
            eventually("pid file", || {
                let file = file.clone();
                async move { std::fs::read_to_string(&file).ok()?.trim().parse::<i32>().ok() }
            })
            .await
        }
    };
    let (one, two) = (pid(&running[0]).await, pid(&running[1]).await);
    assert!(alive(one) && alive(two));

    pods.delete(&running[0].name_any(), &DeleteParams::default()).await.unwrap();
    let dir = layout::pod_dir(sim.root(), &running[0].uid().unwrap());
    eventually("deleted pod's process and directory gone", || {
        let dir = dir.clone();
        async move { (!alive(one) && !dir.exists()).then_some(()) }
    })
    .await;
    assert!(alive(two));

    drop(sim);
    eventually("processes of a dropped simulator gone", || async move { (!alive(two)).then_some(()) }).await;
}

#[tokio::test]
async fn a_node_agent_reads_pod_volumes_through_its_kubelet_host_path() {
    let sim = Sim::start_with(|c| {
        c.images.insert("stowage/node-agent".into(), "/bin/sh".into());
    })
    .await;
    let _: PersistentVolumeClaim = sim.create(pvc("default", "data", "1Gi")).await;
    let app = PodSpecBuilder::default().container(ContainerBuilder::new("app", "app").mount("data", "/data")).volume_pvc("data", "data");
    let _: Pod = sim.create(app.pod("default", "app")).await;
    let pods: Api<Pod> = sim.api("default");
    let app = running_pods(&pods, "", 1).await.remove(0);
    std::fs::write(sim.rootfs(&app, "app").join("data/payload"), "backup me").unwrap();

    let script = "cat \"$KUBE_SIM_ROOTFS\"/host_pods/*/volumes/kubernetes.io~csi/*/mount/payload > seen; exec sleep 300";
    let agent = PodSpecBuilder::default()
        .container(ContainerBuilder::new("agent", "stowage/node-agent:dev").command(&["-c", script]).mount("host-pods", "/host_pods"))
        .volume(json!({"name": "host-pods", "hostPath": {"path": "/var/lib/kubelet/pods"}}));
    let _: DaemonSet = sim.create(agent.daemonset("default", "node-agent")).await;
    let agent = running_pods(&pods, "app=node-agent", 1).await.remove(0);
    let seen = sim.rootfs(&agent, "agent").join("seen");
    let text = eventually("agent read the volume", || {
        let seen = seen.clone();
        async move { std::fs::read_to_string(&seen).ok().filter(|s| !s.is_empty()) }
    })
    .await;
    assert_eq!(text, "backup me");
}

#[tokio::test]
async fn failing_init_container_is_retried_when_the_pod_restarts() {
    let sim = Sim::start_with(|c| {
        c.images.insert("busybox".into(), "/bin/sh".into());
    })
    .await;
    // Fails on the first run, succeeds on the second (its rootfs survives the restart).
    let flaky = "if [ -f tried ]; then exit 0; fi; touch tried; echo not yet; exit 1";
    let spec = PodSpecBuilder::default()
        .init_container(ContainerBuilder::new("wait", "busybox").command(&["-c", flaky]))
        .container(ContainerBuilder::new("app", "nginx"));
    let _: Pod = sim.create(spec.pod("default", "flaky")).await;
    let pods: Api<Pod> = sim.api("default");
    let pod = running_pods(&pods, "", 1).await.remove(0);
    let init = &pod.status.unwrap().init_container_statuses.unwrap()[0];
    assert_eq!(init.restart_count, 1);
    assert_eq!(init.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 1);
    assert_eq!(init.state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 0);
}

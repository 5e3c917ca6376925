//! One file back, without restoring the application: `stowage backup browse` lists what a pod
//! volume backup holds (the server reads the repository and answers a DownloadRequest), and
//! `stowage restore files` puts chosen paths back into a running pod's volume through a
//! PodVolumeRestore the node agent carries out — under `.stowage-restored/<restore>/` unless
//! `--overwrite`. No bucket credentials on the user's machine, no privileged pod.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, PostParams};
use stowage_api::podvolume::{PodVolumePhase, PodVolumeRestoreSpec};
use stowage_api::requests::{DownloadTarget, DownloadTargetKind, VolumePath};
use stowage_api::{labels, Backup, PodVolumeBackup, PodVolumeRestore};

use super::{download, output, Context};

/// `NAMESPACE/POD`.
fn parse_pod(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => Ok((ns.to_string(), pod.to_string())),
        _ => Err(format!("{s:?} is not NAMESPACE/POD, e.g. shop/web-0")),
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  stowage backup browse nightly --pod shop/web-0 --volume data /var/log")]
pub struct BrowseArgs {
    /// The backup.
    pub backup: String,
    /// The pod whose volume was backed up, as NAMESPACE/POD.
    #[arg(long, value_parser = parse_pod)]
    pub pod: (String, String),
    /// The pod's volume (its name in the pod spec).
    #[arg(long)]
    pub volume: String,
    /// The directory (or file) to list, relative to the volume [default: its root].
    #[arg(default_value = "/")]
    pub path: String,
}

#[derive(serde::Deserialize)]
struct Entry {
    path: String,
    kind: String,
    size: u64,
    mode: u32,
    #[serde(default)]
    mtime: Option<String>,
}

fn mode_string(kind: &str, mode: u32) -> String {
    let first = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "file" => '-',
        _ => '?',
    };
    let bits: String = (0..9).map(|i| if mode & (0o400 >> i) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
    format!("{first}{bits}")
}

pub async fn browse(ctx: &Context, args: BrowseArgs) -> anyhow::Result<()> {
    ctx.get::<Backup>("backup", &args.backup, "stowage backup get").await?;
    let (namespace, pod) = args.pod;
    let target = DownloadTarget {
        kind: DownloadTargetKind::BackupVolumeListing,
        name: args.backup.clone(),
        volume: Some(VolumePath { namespace, pod, volume: args.volume, path: args.path.clone() }),
    };
    let mut json = Vec::new();
    download::fetch_target_into(ctx, target, &mut download::Sink::Memory(&mut json)).await?;
    let entries: Vec<Entry> = serde_json::from_slice(&json).context("reading the listing the server sent")?;
    if entries.is_empty() {
        return output::print(&format!("{} is empty\n", args.path));
    }
    let mut text = String::new();
    for e in entries {
        let time = e.mtime.as_deref().map(|t| t.get(..19).unwrap_or(t).replace('T', " ")).unwrap_or_default();
        let name = if e.kind == "dir" { format!("/{}/", e.path) } else { format!("/{}", e.path) };
        text.push_str(&format!("{} {:>12} {:<19} {name}\n", mode_string(&e.kind, e.mode), e.size, time));
    }
    output::print(&text)
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example: one file a human deleted, back beside the live ones
  stowage restore files --from-backup nightly --pod shop/web-0 --volume data --path /var/log/x.log
  # -> /<mount path>/.stowage-restored/<restore>/var/log/x.log in pod shop/web-0
List a backup's files first with `stowage backup browse`.")]
pub struct FilesArgs {
    /// The backup to take the files from.
    #[arg(long)]
    pub from_backup: String,
    /// The pod whose volume was backed up, as NAMESPACE/POD.
    #[arg(long, value_parser = parse_pod)]
    pub pod: (String, String),
    /// The pod's volume (its name in the pod spec).
    #[arg(long)]
    pub volume: String,
    /// A file or directory to restore, relative to the volume (repeatable).
    #[arg(long = "path", required = true)]
    pub paths: Vec<String>,
    /// Restore into this running pod (same namespace, a volume of the same name) instead.
    #[arg(long)]
    pub to_pod: Option<String>,
    /// The directory of the volume the files go under, in a subdirectory named after the restore.
    #[arg(long, default_value = ".stowage-restored", conflicts_with = "overwrite")]
    pub target_dir: String,
    /// Put the files back where they were, replacing what is there now.
    #[arg(long)]
    pub overwrite: bool,
    /// How long to wait for the node agent.
    #[arg(long, default_value = "30m", value_parser = |s: &str| stowage_api::duration::parse(s).map_err(|e| e.to_string()))]
    pub timeout: Duration,
}

/// The volume backup of `pod`'s `volume` in the backup, from the backup's stored list.
async fn volume_backup(ctx: &Context, backup: &str, namespace: &str, pod: &str, volume: &str) -> anyhow::Result<PodVolumeBackup> {
    let bytes = download::fetch(ctx, DownloadTargetKind::BackupVolumeInfos, backup).await?;
    let all: Vec<PodVolumeBackup> = serde_json::from_slice(&download::decompress(bytes)?)
        .with_context(|| format!("reading the pod volume backups of backup {backup:?}"))?;
    let held = || {
        let list: Vec<String> = all
            .iter()
            .map(|p| format!("{}/{} {}", p.spec.pod.namespace.as_deref().unwrap_or(""), p.spec.pod.name.as_deref().unwrap_or(""), p.spec.volume))
            .collect();
        if list.is_empty() { "none".to_string() } else { list.join(", ") }
    };
    let found = all.iter().find(|p| {
        p.spec.pod.namespace.as_deref() == Some(namespace) && p.spec.pod.name.as_deref() == Some(pod) && p.spec.volume == volume
    });
    let pvb = found.cloned().ok_or_else(|| {
        anyhow::anyhow!("backup {backup:?} holds no volume {volume:?} of pod {namespace}/{pod}; its pod volumes: {}", held())
    })?;
    let done = pvb.status.as_ref().is_some_and(|s| s.phase == Some(PodVolumePhase::Completed) && s.snapshot_id.is_some());
    anyhow::ensure!(done, "volume {volume:?} of pod {namespace}/{pod} did not complete in backup {backup:?}: nothing to restore from it");
    Ok(pvb)
}

pub async fn restore_files(ctx: &Context, args: FilesArgs) -> anyhow::Result<()> {
    let (namespace, source_pod) = args.pod.clone();
    ctx.get::<Backup>("backup", &args.from_backup, "stowage backup get").await?;
    let pvb = volume_backup(ctx, &args.from_backup, &namespace, &source_pod, &args.volume).await?;
    let target_pod = args.to_pod.clone().unwrap_or(source_pod.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = pods.get_opt(&target_pod).await?.ok_or_else(|| {
        anyhow::anyhow!("pod {namespace}/{target_pod} not found: files are restored into a running pod (--to-pod names another)")
    })?;
    let mount = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| m.name == args.volume)
        .map(|m| m.mount_path.clone())
        .ok_or_else(|| anyhow::anyhow!("pod {namespace}/{target_pod} mounts no volume {:?} in its containers", args.volume))?;

    let name = format!("{}{}", crate::podvolumes::generate_name(&format!("files-{}", args.from_backup)), short_suffix());
    let target_dir = (!args.overwrite).then(|| format!("{}/{name}", args.target_dir.trim_matches('/')));
    let snapshot = pvb.status.as_ref().and_then(|s| s.snapshot_id.clone()).unwrap_or_default();
    let mut pvr = PodVolumeRestore::new(
        &name,
        PodVolumeRestoreSpec {
            pod: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(namespace.clone()),
                name: Some(target_pod.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            volume: args.volume.clone(),
            backup_storage_location: pvb.spec.backup_storage_location.clone(),
            repo_identifier: pvb.spec.repo_identifier.clone(),
            snapshot_id: snapshot,
            source_namespace: Some(namespace.clone()),
            include_paths: args.paths.clone(),
            target_dir: target_dir.clone(),
        },
    );
    if args.from_backup.len() <= 63 {
        pvr.metadata.labels = Some([(labels::BACKUP_NAME.name.to_string(), args.from_backup.clone())].into());
    }
    let api = ctx.api::<PodVolumeRestore>();
    api.create(&PostParams::default(), &pvr).await.with_context(|| format!("creating PodVolumeRestore {name:?}"))?;
    eprintln!("Restoring {} from backup {} into pod {namespace}/{target_pod} (PodVolumeRestore {name})...", args.paths.join(", "), args.from_backup);
    let deadline = tokio::time::Instant::now() + args.timeout;
    let done = loop {
        let current = api.get(&name).await?;
        if current.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p.is_terminal()) {
            break current;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "PodVolumeRestore {name} did not finish within {}; is the node agent running on the pod's node? (`kubectl -n {} get pvr {name} -o yaml`)",
                stowage_api::duration::format(args.timeout),
                ctx.namespace
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = done.status.unwrap_or_default();
    if status.phase != Some(PodVolumePhase::Completed) {
        anyhow::bail!("PodVolumeRestore {name} {:?}: {}", status.phase.unwrap_or(PodVolumePhase::Failed), status.message.unwrap_or_default());
    }
    let where_ = match &target_dir {
        Some(dir) => format!("{}/{dir}", mount.trim_end_matches('/')),
        None => mount.clone(),
    };
    let bytes = status.progress.map(|p| p.bytes_done).unwrap_or(0);
    println!("Restored {} ({bytes} bytes) into pod {namespace}/{target_pod} under {where_}", args.paths.join(", "));
    Ok(())
}

fn short_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_namespace_slash_name() {
        assert_eq!(parse_pod("shop/web-0").unwrap(), ("shop".into(), "web-0".into()));
        for bad in ["web-0", "/web-0", "shop/", "a/b/c"] {
            assert!(parse_pod(bad).unwrap_err().contains("NAMESPACE/POD"), "{bad}");
        }
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string("file", 0o644), "-rw-r--r--");
        assert_eq!(mode_string("dir", 0o750), "drwxr-x---");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
    }
}

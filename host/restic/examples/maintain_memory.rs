//! Peak memory of repository maintenance, for `BENCHMARKS.md`; not a user tool.
//!
//! ```text
//! cargo run --release -p stowage-restic --example maintain_memory [-- FILES]
//! ```
//! Writes FILES (default 100,000) small distinct files into four directories of a temp dir
//! (each file one data blob), then measures two repositories on a filesystem store:
//!
//! - "separate": one snapshot per directory, two of them forgotten: maintenance deletes
//!   whole packs;
//! - "mixed": one snapshot of all four, then every other file deleted and a second snapshot,
//!   the first forgotten: every data pack is half unused and is repacked.
//!
//! Each maintenance runs in a fresh process (this example again, with `--maintain STORE NS`),
//! so that its peak RSS (VmHWM) is maintenance's own, not what the backups before it left
//! resident; it prints that peak, the peak after opening, and how long maintenance took.

use std::sync::Arc;
use std::time::Instant;
use stowage_restic::{BackupRequest, MaintenanceOptions, Repo, RepoConfig};
use stowage_storage::FsStore;
use tokio_util::sync::CancellationToken;

const DIRS: u64 = 4;

fn main() -> anyhow::Result<()> {
    // As the node agent does, before the runtime's threads start.
    stowage_restic::limit_malloc_arenas();
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--maintain") {
        return maintain_here(&args[2], &args[3]).await;
    }
    let files: u64 = match args.get(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let tmp = tempfile::tempdir()?;
    let all = tmp.path().join("all");
    let started = Instant::now();
    let mut written = Vec::new();
    for d in 0..DIRS {
        for i in 0..files / DIRS {
            let n = d * (files / DIRS) + i;
            let sub = all.join(format!("vol{d}/{:03}", i % 500));
            if i < 500 {
                std::fs::create_dir_all(&sub)?;
            }
            // 512 to 1,535 bytes, distinct: each file is one blob.
            let len = 512 + (n * 7919 % 1024) as usize;
            let data: Vec<u8> = (0..len)
                .map(|j| {
                    (n.wrapping_mul(2_654_435_761)
                        .wrapping_add(j as u64 * 40_503)
                        >> 7) as u8
                })
                .chain(n.to_le_bytes())
                .collect();
            let path = sub.join(format!("f{n}"));
            std::fs::write(&path, data)?;
            written.push(path);
        }
    }
    eprintln!("wrote {files} files in {:.1?}", started.elapsed());
    let store = FsStore::new("bench", tmp.path().join("store"));
    store.create_root().await?;
    let store = Arc::new(store);
    let open = |namespace: &str| {
        Repo::open_or_init(RepoConfig {
            store: store.clone(),
            namespace: namespace.into(),
            password: "bench".into(),
        })
    };

    // Separate snapshots, two forgotten.
    let (repo, _) = open("separate").await?;
    let mut snapshots = Vec::new();
    for d in 0..DIRS {
        snapshots.push(backup(&repo, &all.join(format!("vol{d}")), &format!("vol{d}")).await?);
    }
    repo.forget(&snapshots[..2]).await?;
    let store_dir = tmp.path().join("store");
    let case = format!("{files} files in 4 snapshots, 2 forgotten");
    maintain(&repo, &case, &store_dir, "separate").await?;

    // One snapshot of everything, then half the files deleted: packs half unused.
    let (repo, _) = open("mixed").await?;
    let first = backup(&repo, &all, "all").await?;
    for path in written.iter().step_by(2) {
        std::fs::remove_file(path)?;
    }
    backup(&repo, &all, "all").await?;
    repo.forget(&[first]).await?;
    let case = format!("{files} files in one snapshot, then half of them deleted");
    maintain(&repo, &case, &store_dir, "mixed").await?;
    Ok(())
}

async fn backup(repo: &Repo, path: &std::path::Path, tag: &str) -> anyhow::Result<String> {
    let tag = format!("pvc-uid={tag}");
    let req = BackupRequest {
        path: path.to_path_buf(),
        tags: vec![tag.clone()],
        parent_tags: vec![tag],
        hostname: "bench".into(),
    };
    let s = repo
        .backup(req, Arc::new(|_| {}), CancellationToken::new())
        .await?;
    Ok(s.snapshot_id)
}

/// Runs maintenance of `repo` in a fresh process.
async fn maintain(
    repo: &Repo,
    case: &str,
    store: &std::path::Path,
    ns: &str,
) -> anyhow::Result<()> {
    println!("{case}: repository {} bytes", repo.size().await?);
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--maintain")
        .arg(store)
        .arg(ns)
        .status()?;
    anyhow::ensure!(status.success(), "maintenance failed: {status}");
    Ok(())
}

async fn maintain_here(store: &str, namespace: &str) -> anyhow::Result<()> {
    let cfg = RepoConfig {
        store: Arc::new(FsStore::new("bench", store)),
        namespace: namespace.into(),
        password: "bench".into(),
    };
    let repo = Repo::open(cfg).await?;
    let opened = peak_rss_kib().unwrap_or(0);
    let started = Instant::now();
    let summary = repo.maintain(MaintenanceOptions::default()).await?;
    let took = started.elapsed();
    println!("  {summary:?}");
    println!(
        "  maintenance: {took:.1?}, process peak RSS {} KiB ({opened} KiB after opening)",
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

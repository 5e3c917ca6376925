//! Peak memory of repository maintenance, for `BENCHMARKS.md`; not a user tool.
//!
//! ```text
//! cargo run --release -p stowage-restic --example maintain_memory [-- FILES]
//! ```
//! Writes FILES (default 100,000) small distinct files into four directories of a temp dir,
//! backs each up into a repository on a filesystem store (one snapshot each: FILES data
//! blobs), forgets two of the snapshots and runs maintenance. Prints the peak RSS (VmHWM)
//! of setting up and, reset after that, of maintenance alone, and how long each step took.

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
    let files: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    for d in 0..DIRS {
        for i in 0..files / DIRS {
            let n = d * (files / DIRS) + i;
            let sub = tmp.path().join(format!("vol{d}/{:03}", i % 500));
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
            std::fs::write(sub.join(format!("f{n}")), data)?;
        }
    }
    eprintln!("wrote {files} files in {:.1?}", started.elapsed());

    let store = FsStore::new("bench", tmp.path().join("store"));
    store.create_root().await?;
    let cfg = RepoConfig {
        store: Arc::new(store),
        namespace: "ns".into(),
        password: "bench".into(),
    };
    let (repo, _) = Repo::open_or_init(cfg).await?;
    let mut snapshots = Vec::new();
    let started = Instant::now();
    for d in 0..DIRS {
        let tag = format!("pvc-uid=vol{d}");
        let req = BackupRequest {
            path: tmp.path().join(format!("vol{d}")),
            tags: vec![tag.clone()],
            parent_tags: vec![tag],
            hostname: "bench".into(),
        };
        let s = repo
            .backup(req, Arc::new(|_| {}), CancellationToken::new())
            .await?;
        snapshots.push(s.snapshot_id);
    }
    eprintln!("backed up {DIRS} snapshots in {:.1?}", started.elapsed());
    repo.forget(&snapshots[..2]).await?;
    eprintln!(
        "peak RSS of setting up: {} KiB; repository {} bytes",
        peak_rss_kib().unwrap_or(0),
        repo.size().await?
    );

    // Writing 5 to clear_refs resets the peak resident set size (VmHWM) on Linux.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let rss_at_start = rss_kib().unwrap_or(0);
    let started = Instant::now();
    let summary = repo.maintain(MaintenanceOptions::default()).await?;
    let took = started.elapsed();
    println!("{summary:?}");
    println!(
        "maintenance of {files} blobs, half forgotten: {took:.1?}, peak RSS {} KiB \
         (RSS {rss_at_start} KiB when it started)",
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

fn rss_kib() -> Option<u64> {
    status_kib("VmRSS:")
}

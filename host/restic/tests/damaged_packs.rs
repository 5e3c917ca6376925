//! A restore from a damaged repository: a pack with corrupted bytes, a missing pack and a pack
//! cut short. The restore names exactly the files whose contents it could not read (which
//! files those are comes from the `restic` CLI's own reading of the index and trees), leaves
//! them out, and restores every other file byte for byte.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use stowage_restic::RestoreSummary;

/// One blob of a data pack, as the index has it.
struct Blob {
    id: String,
    offset: u64,
    length: u64,
}

/// What the `restic` CLI says about a repository's data packs.
struct Packs {
    /// Data packs by id, their blobs by offset.
    blobs: BTreeMap<String, Vec<Blob>>,
    /// Per data pack: (blob id, file path in the volume) for every file that needs one of its
    /// blobs.
    files: BTreeMap<String, Vec<(String, String)>>,
}

impl Packs {
    fn read(case: &ResticCase, snapshot_path: &str) -> Packs {
        let restic = || restic_cmd(&case.restic, &case.repo_path, PASSWORD);
        let mut blobs: BTreeMap<String, Vec<Blob>> = BTreeMap::new();
        for index in run_ok(restic().args(["list", "index"])).lines() {
            let index: Value = serde_json::from_str(&run_ok(restic().args(["cat", "index", index]))).unwrap();
            for pack in index["packs"].as_array().unwrap() {
                if pack["blobs"][0]["type"] != "data" {
                    continue;
                }
                let mut list: Vec<Blob> = pack["blobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| Blob {
                        id: b["id"].as_str().unwrap().to_string(),
                        offset: b["offset"].as_u64().unwrap(),
                        length: b["length"].as_u64().unwrap(),
                    })
                    .collect();
                list.sort_by_key(|b| b.offset);
                blobs.insert(pack["id"].as_str().unwrap().to_string(), list);
            }
        }
        let mut files = BTreeMap::new();
        for pack in blobs.keys() {
            let found: Value = serde_json::from_str(&run_ok(restic().args(["find", "--json", "--pack", pack]))).unwrap();
            let pairs = found
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap();
                    let rel = path.strip_prefix(snapshot_path).unwrap().trim_start_matches('/');
                    (f["id"].as_str().unwrap().to_string(), rel.to_string())
                })
                .collect();
            files.insert(pack.clone(), pairs);
        }
        Packs { blobs, files }
    }

    fn path(&self, case: &ResticCase, pack: &str) -> PathBuf {
        case.repo_dir.restic_path().join("data").join(&pack[..2]).join(pack)
    }

    /// The files that need any of `blobs` of `pack`.
    fn files_of(&self, pack: &str, blobs: &[&Blob]) -> BTreeSet<String> {
        self.files[pack]
            .iter()
            .filter(|(id, _)| blobs.iter().any(|b| b.id == *id))
            .map(|(_, path)| path.clone())
            .collect()
    }

    fn files_of_pack(&self, pack: &str) -> BTreeSet<String> {
        self.files[pack].iter().map(|(_, path)| path.clone()).collect()
    }
}

/// A volume of small files (one blob each) in a few directories, two with the same contents,
/// a file of several blobs, and a hard link: 44 MiB, several data packs.
fn make_volume(root: &Path) {
    for dir in ["a", "b/c", "d"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for i in 0..110u64 {
        let dir = ["a", "b/c", "d"][i as usize % 3];
        std::fs::write(root.join(format!("{dir}/f{i:03}.bin")), noise(400 << 10, i)).unwrap();
    }
    std::fs::write(root.join("a/same-1"), noise(100 << 10, 500)).unwrap();
    std::fs::write(root.join("d/same-2"), noise(100 << 10, 500)).unwrap();
    std::fs::write(root.join("d/large.bin"), noise(3 << 20, 501)).unwrap();
    std::fs::hard_link(root.join("b/c/f001.bin"), root.join("linked")).unwrap();
    std::fs::write(root.join("notes.txt"), b"not much\n").unwrap();
}

/// Asserts that `restored` names exactly `expected` and that `target` holds every other entry
/// of `volume` as it was, and none of `expected`.
fn assert_restored_but(volume: &Path, target: &Path, restored: &RestoreSummary, expected: &BTreeSet<String>) {
    let named: BTreeSet<String> = restored.damaged.files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(&named, expected, "the damaged files, exactly");
    assert_eq!(restored.damaged.count, expected.len() as u64);
    let mut want = tree(volume);
    want.retain(|path, _| !expected.contains(path));
    let got = tree(target);
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "every other entry, and no damaged one");
    for (path, entry) in &want {
        assert!(got[path] == *entry, "{path} differs");
    }
    let entries = want.values().filter(|e| !matches!(e, Entry::Dir { .. })).count() as u64;
    assert_eq!(restored.files, entries, "the damaged files are not counted as restored");
}

fn flip_byte(path: &Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0x55;
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_a_missing_and_a_shortened_pack_lose_only_the_files_that_need_them() {
    let Some(case) = ResticCase::new().await else { return };
    make_volume(&case.volume);
    let summary = back_up(&case.repo, &case.volume, "damaged").await;
    let packs = Packs::read(&case, "/pvc-uid=damaged");
    assert!(packs.blobs.len() >= 4, "a corrupted, a missing, a shortened and an intact pack: {}", packs.blobs.len());
    // The pack holding the hard-linked file goes missing; of the others, the one with the most
    // blobs is corrupted, the next shortened.
    let missing = packs.files.iter().find(|(_, files)| files.iter().any(|(_, f)| f == "linked")).unwrap().0.clone();
    let mut others: Vec<&String> = packs.blobs.keys().filter(|p| **p != missing).collect();
    others.sort_by_key(|p| std::cmp::Reverse(packs.blobs[*p].len()));
    let (corrupted, shortened) = (others[0].clone(), others[1].clone());
    let work = tempfile::tempdir().unwrap();
    let restore = |name: &str| {
        let target = work.path().join(name);
        std::fs::create_dir_all(&target).unwrap();
        let repo = case.repo.clone();
        let snapshot = summary.snapshot_id.clone();
        async move { (restore_into(&repo, &snapshot, &target).await, target) }
    };

    // A byte flipped inside the first and the last blob of a pack: only those two fail.
    let blobs = &packs.blobs[&corrupted];
    let (first, last) = (&blobs[0], &blobs[blobs.len() - 1]);
    flip_byte(&packs.path(&case, &corrupted), first.offset + first.length / 2);
    flip_byte(&packs.path(&case, &corrupted), last.offset + 20);
    let mut expected = packs.files_of(&corrupted, &[first, last]);
    assert!(!expected.is_empty() && expected.len() < packs.files_of_pack(&corrupted).len());
    let (restored, target) = restore("corrupted").await;
    assert_restored_but(&case.volume, &target, &restored, &expected);
    assert_eq!(restored.damaged.pack_count, 1);
    let pack = &restored.damaged.packs[0];
    assert_eq!(pack.id, corrupted);
    assert!(pack.reason.contains("authentication failed"), "{pack:?}");
    let message = restored.damaged.to_string();
    assert!(message.contains(&format!("{} file", expected.len())) && message.contains(&corrupted), "{message}");

    // A pack deleted, another cut in half: the blobs before the cut still restore.
    std::fs::remove_file(packs.path(&case, &missing)).unwrap();
    let short_path = packs.path(&case, &shortened);
    let cut = std::fs::metadata(&short_path).unwrap().len() / 2;
    let file = std::fs::OpenOptions::new().write(true).open(&short_path).unwrap();
    file.set_len(cut).unwrap();
    let beyond: Vec<&Blob> = packs.blobs[&shortened].iter().filter(|b| b.offset + b.length > cut).collect();
    expected.extend(packs.files_of_pack(&missing));
    expected.extend(packs.files_of(&shortened, &beyond));
    assert!(expected.contains("linked") && expected.contains("b/c/f001.bin"), "both names of the hard-linked file");
    assert!(packs.files_of_pack(&shortened).len() > packs.files_of(&shortened, &beyond).len(), "the cut leaves blobs whole");
    let (restored, target) = restore("three").await;
    assert_restored_but(&case.volume, &target, &restored, &expected);
    let reasons: BTreeMap<&str, &str> = restored.damaged.packs.iter().map(|p| (p.id.as_str(), p.reason.as_str())).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[missing.as_str()], "missing");
    assert!(reasons[shortened.as_str()].starts_with("shorter than the index says"), "{reasons:?}");
    for file in &restored.damaged.files {
        let reason = &file.reason;
        match &file.pack {
            p if *p == missing => assert_eq!(reason, "missing"),
            p if *p == shortened => assert!(reason.starts_with("shorter than the index says"), "{file:?}"),
            p => assert!(*p == corrupted && reason.contains("authentication failed"), "{file:?}"),
        }
    }

    // Restored again into the same directory, as after a retry: the damaged files were not
    // left behind to be taken for finished ones.
    let (again, _) = restore("three").await;
    assert_restored_but(&case.volume, &target, &again, &expected);
}
